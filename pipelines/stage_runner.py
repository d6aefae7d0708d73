"""``t2v stage <name>``: run one stage outside KFP, the same stage the component runs.

Inputs default to the manifests the earlier stages of the same run wrote under ``<root>/<run name>/``
(each input is fed by the nearest earlier stage of the catalog producing its kind);
``--input name=<manifest uri>`` points an input elsewhere.
"""

from __future__ import annotations

from typing import Any

from components.framework import catalog
from components.framework.context import StageContext
from components.framework.manifests import MANIFEST_NAME, read_manifest
from components.framework.skeleton import manifest_as
from components.runtime import configure_logging
from pipelines.runner import open_parent_run, pipeline_version
from t2v import storage, tracking
from t2v.config import ProjectConfig
from t2v.errors import StageError


def _input_manifest(ctx: StageContext, stage: str, name: str, overrides: dict[str, str]) -> Any:
    kind = catalog.get(stage).inputs[name]
    if name in overrides:
        return manifest_as(read_manifest(overrides[name]), kind)
    sources = catalog.candidates(stage, name)
    for source in sources:  # the nearest earlier stage that ran in this run (a fine-tune has no t2v)
        if source.fan_out_root is not None:  # every task's manifest of a fan-out stage (curate-shard)
            root = source.fan_out_root(ctx)
            uris = [u for u in storage.list_uris(root) if u.endswith(MANIFEST_NAME)]
            if uris:
                return [read_manifest(u) for u in uris]
            continue
        uri = storage.join(ctx.stage_uri(source.name), MANIFEST_NAME)
        if storage.exists(uri):
            return manifest_as(read_manifest(uri), kind)
    looked = ", ".join(s.name for s in sources)
    raise StageError(
        f"input {name!r}: no manifest of {looked} under {ctx.run_root}; run one of them first or pass --input {name}=URI"
    )


def run_stage(
    cfg: ProjectConfig,
    name: str,
    run_name: str,
    tracking_uri: str | None,
    root: str | None,
    parent_run_id: str | None,
    overrides: dict[str, str],
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    configure_logging()
    stage = catalog.get(name)
    tracking_uri = tracking.absolute_tracking_uri(tracking_uri or cfg.tracking.default_tracking_uri)
    run_root = storage.join(storage.to_uri(root or cfg.storage.root), run_name)
    sha = tracking.git_sha()
    version = pipeline_version(sha)
    own_parent = parent_run_id is None
    ctx = StageContext(cfg, run_root, tracking_uri, parent_run_id or "", version, sha, run_name)
    inputs = {input_name: _input_manifest(ctx, name, input_name, overrides) for input_name in stage.inputs}
    if own_parent:
        ctx.parent_run_id = open_parent_run(
            cfg, run_name, tracking_uri, run_root, sha, version, "t2v stage", mlflow_run_name=f"{run_name}:{name}"
        )
    status = "FAILED"
    try:
        manifest = stage(ctx, **inputs, **(options or {}))
        status = "FINISHED"
        return manifest
    finally:
        if own_parent:
            tracking.finish_run(tracking_uri, ctx.parent_run_id, status)
