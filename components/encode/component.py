"""KFP component: precompute VAE latents and text embeddings into latent shards."""

from kfp import dsl

from t2v.images import project_image


@dsl.component(base_image=project_image(), install_kfp_package=False)
def encode(
    config_json: str,
    run_root: str,
    tracking_uri: str,
    parent_run_id: str,
    pipeline_version: str,
    git_sha: str,
    run_name: str,
    clips: dsl.Input[dsl.Dataset],
    vae: dsl.Input[dsl.Model],
    raw: dsl.Input[dsl.Dataset],
    latents: dsl.Output[dsl.Dataset],
):
    """precompute VAE latents and text embeddings into latent shards."""
    arguments = dict(locals())
    from components.runtime import invoke

    invoke("encode", arguments, outputs=("latents",))
