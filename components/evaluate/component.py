"""KFP component: generate for evaluation prompts, score, and decide the gate."""

from kfp import dsl

from t2v.images import project_image


@dsl.component(base_image=project_image(), install_kfp_package=False)
def evaluate(
    config_json: str,
    run_root: str,
    tracking_uri: str,
    parent_run_id: str,
    pipeline_version: str,
    git_sha: str,
    run_name: str,
    dit: dsl.Input[dsl.Model],
    vae: dsl.Input[dsl.Model],
    latents: dsl.Input[dsl.Dataset],
    raw: dsl.Input[dsl.Dataset],
    evaluation: dsl.Output[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
):
    """generate for evaluation prompts, score, and decide the gate."""
    arguments = dict(locals())
    from components.runtime import invoke

    invoke("evaluate", arguments, outputs=("evaluation", "metrics"))
