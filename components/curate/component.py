"""KFP components: curation fan-out (one task per shard) and the merge after ``dsl.Collected``."""


from kfp import dsl

from t2v.images import project_image


@dsl.component(base_image=project_image(), install_kfp_package=False)
def curate_shard(
    config_json: str,
    run_root: str,
    tracking_uri: str,
    parent_run_id: str,
    pipeline_version: str,
    git_sha: str,
    run_name: str,
    shard_index: int,
    raw: dsl.Input[dsl.Dataset],
    part: dsl.Output[dsl.Dataset],
):
    """Split, score and caption one shard of the raw videos; write its clip shards and manifest."""
    arguments = dict(locals())
    from components.runtime import invoke

    invoke("curate-shard", arguments, outputs=("part",))


@dsl.component(base_image=project_image(), install_kfp_package=False)
def curate_merge(
    config_json: str,
    run_root: str,
    tracking_uri: str,
    parent_run_id: str,
    pipeline_version: str,
    git_sha: str,
    run_name: str,
    raw: dsl.Input[dsl.Dataset],
    parts: dsl.Input[list[dsl.Dataset]],
    clips: dsl.Output[dsl.Dataset],
):
    """Merge the shard manifests: cross-shard dedup, concept caps, the kept index and the report."""
    arguments = dict(locals())
    from components.runtime import invoke

    invoke("curate", arguments, outputs=("clips",))
