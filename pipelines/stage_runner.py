"""``t2v stage <name>``: run one stage outside KFP, with the same function the component calls.

Inputs default to the manifests the earlier stages of the same run wrote under ``<root>/<run name>/``;
``--input name=<manifest uri>`` points an input elsewhere.
"""

from __future__ import annotations

from typing import Any

from components.runtime import (
    DEFAULT_INPUT_STAGE,
    PREVIOUS_DIT_STAGE,
    STAGES,
    configure_logging,
    stage_function,
)
from pipelines.runner import absolute_tracking_uri, parent_tags, pipeline_version
from t2v import storage, tracking
from t2v.config import ProjectConfig
from t2v.stage import MANIFEST_NAME, StageContext, read_manifest


def _input_manifest(run_root: str, stage: str, name: str, overrides: dict[str, str]) -> Any:
    if name in overrides:
        return read_manifest(overrides[name])
    if name == "parts":
        uris = [u for u in storage.list_uris(storage.join(run_root, "curate", "parts")) if u.endswith(MANIFEST_NAME)]
        if not uris:
            raise ValueError(f"no curation parts under {run_root}/curate/parts: run curate-shard first")
        return [read_manifest(u) for u in uris]
    source = PREVIOUS_DIT_STAGE.get(stage) if name == "init" else DEFAULT_INPUT_STAGE[name]
    uri = storage.join(run_root, source, MANIFEST_NAME)
    if not storage.exists(uri):
        raise ValueError(f"input {name!r}: {uri} does not exist; run stage {source!r} first or pass --input {name}=URI")
    return read_manifest(uri)


def run_stage(
    cfg: ProjectConfig,
    name: str,
    run_name: str,
    tracking_uri: str | None,
    root: str | None,
    parent_run_id: str | None,
    overrides: dict[str, str],
    shard_index: int = 0,
) -> dict[str, Any]:
    configure_logging()
    tracking_uri = absolute_tracking_uri(tracking_uri or cfg.tracking.default_tracking_uri)
    run_root = storage.join(storage.to_uri(root or cfg.storage.root), run_name)
    sha = tracking.git_sha()
    version = pipeline_version(sha)
    inputs = {input_name: _input_manifest(run_root, name, input_name, overrides) for input_name in STAGES[name][2]}
    if parent_run_id is None:
        artifact_location = None if tracking_uri.startswith("http") else storage.to_uri(cfg.tracking.default_artifact_root)
        parent_run_id = tracking.start_parent_run(
            tracking_uri,
            cfg.tracking.experiment,
            f"{run_name}:{name}",
            parent_tags(cfg, run_name, sha, version, run_root=run_root, orchestrator="t2v stage"),
            artifact_location=artifact_location,
        )
        own_parent = True
    else:
        own_parent = False
    ctx = StageContext(cfg, run_root, tracking_uri, parent_run_id, version, sha, run_name)
    options = {"shard_index": shard_index} if name == "curate-shard" else {}
    status = "FAILED"
    try:
        manifest = stage_function(name)(ctx, **inputs, **options)
        status = "FINISHED"
        return manifest
    finally:
        if own_parent:
            tracking.finish_run(tracking_uri, parent_run_id, status)
