"""KFP component: generate (or locate) the raw videos and the text encoders."""

from kfp import dsl

from t2v.images import project_image


@dsl.component(base_image=project_image(), install_kfp_package=False)
def prepare_data(
    config_json: str,
    run_root: str,
    tracking_uri: str,
    parent_run_id: str,
    pipeline_version: str,
    git_sha: str,
    run_name: str,
    raw: dsl.Output[dsl.Dataset],
):
    """generate (or locate) the raw videos and the text encoders."""
    arguments = dict(locals())
    from components.runtime import invoke

    invoke("prepare-data", arguments, outputs=("raw",))
