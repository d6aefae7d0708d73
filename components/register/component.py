"""KFP component: register the VAE and DiT versions with lineage; alias challenger when the gate passed."""

from kfp import dsl

from t2v.images import project_image


@dsl.component(base_image=project_image(), install_kfp_package=False)
def register(
    config_json: str,
    run_root: str,
    tracking_uri: str,
    parent_run_id: str,
    pipeline_version: str,
    git_sha: str,
    run_name: str,
    dit: dsl.Input[dsl.Model],
    vae: dsl.Input[dsl.Model],
    evaluation: dsl.Input[dsl.Dataset],
    clips: dsl.Input[dsl.Dataset],
    registered: dsl.Output[dsl.Artifact],
):
    """register the VAE and DiT versions with lineage; alias challenger when the gate passed."""
    arguments = dict(locals())
    from components.runtime import invoke

    invoke("register", arguments, outputs=("registered",))
