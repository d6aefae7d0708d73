"""KFP component: Video-DPO after t2v -- sample, score, pair, and train on the pairs."""

from kfp import dsl

from t2v.images import project_image


@dsl.component(base_image=project_image(), install_kfp_package=False)
def dpo(
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
    dpo_dit: dsl.Output[dsl.Model],
):
    """Video-DPO: preference pairs from the policy's own samples, Diffusion-DPO on flow matching."""
    arguments = dict(locals())
    from components.runtime import invoke

    invoke("dpo", arguments, outputs=("dpo_dit",))
