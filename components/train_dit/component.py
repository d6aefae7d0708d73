"""KFP component: one DiT training stage (t2i, t2vi or t2v) — launches the distributed worker."""


from kfp import dsl

from t2v.images import project_image


@dsl.component(base_image=project_image(), install_kfp_package=False)
def train_dit(
    stage: str,
    config_json: str,
    run_root: str,
    tracking_uri: str,
    parent_run_id: str,
    pipeline_version: str,
    git_sha: str,
    run_name: str,
    latents: dsl.Input[dsl.Dataset],
    dit: dsl.Output[dsl.Model],
    init: dsl.Input[dsl.Model] | None = None,
):
    """Train the DiT for one stage of the T2I -> T2VI -> T2V cascade, starting from ``init``."""
    arguments = dict(locals())
    from components.runtime import invoke

    invoke(arguments.pop("stage"), arguments, outputs=("dit",))
