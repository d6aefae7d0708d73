"""KFP component: resolve and check the model a fine-tune or an evaluation starts from."""

from kfp import dsl

from t2v.images import project_image


@dsl.component(base_image=project_image(), install_kfp_package=False)
def base_model(
    config_json: str,
    run_root: str,
    tracking_uri: str,
    parent_run_id: str,
    pipeline_version: str,
    git_sha: str,
    run_name: str,
    dit: dsl.Output[dsl.Model],
    vae: dsl.Output[dsl.Model],
    raw: dsl.Output[dsl.Dataset],
    latents: dsl.Output[dsl.Dataset],
):
    """The base model's DiT, VAE and text encoders (released folder, checkpoint or registered version)."""
    arguments = dict(locals())
    from components.runtime import invoke

    invoke("base-model", arguments, outputs=("dit", "vae", "raw", "latents"))
