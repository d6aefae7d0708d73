"""KFP component: train the causal Video-VAE on curated clips."""

from kfp import dsl

from t2v.images import project_image


@dsl.component(base_image=project_image(), install_kfp_package=False)
def train_vae(
    config_json: str,
    run_root: str,
    tracking_uri: str,
    parent_run_id: str,
    pipeline_version: str,
    git_sha: str,
    run_name: str,
    clips: dsl.Input[dsl.Dataset],
    vae: dsl.Output[dsl.Model],
):
    """train the causal Video-VAE on curated clips."""
    arguments = dict(locals())
    from components.runtime import invoke

    invoke("train-vae", arguments, outputs=("vae",))
