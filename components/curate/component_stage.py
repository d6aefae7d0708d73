"""The curate stage as the pipeline runs it: one ``curate-shard`` task per shard (``ParallelFor``), then
one ``curate`` merge (``dsl.Collected``). Moves data between the object store and the local folders the
curation logic (:mod:`components.curate.stage`) works in, logs to MLflow and returns what the manifests
record.

Layout under ``<run>/curate/``: ``shards/clips-SSS-NNNN.tar`` (immutable once written),
``manifest-SSS.jsonl`` / ``done-SSS.json`` per shard, ``parts/shard-SSS/manifest.json`` (the shard task's
hand-off), ``attempts/shard-SSS.json`` (the shard's crash journal: which video it is on), ``work/shard-SSS/`` (its
work in progress, while it runs: each finished video's result and clips, for a retried task), and after the merge ``manifest.jsonl``, ``manifest.parquet``, ``kept.jsonl`` (the training
index), ``report.html``, ``summary.json`` and ``manifest.json`` (the stage hand-off, written last).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from components.framework.skeleton import Stage, StageOutput, StageRun
from t2v import storage
from t2v.errors import StageError

log = logging.getLogger(__name__)
MERGE_OUTPUTS = ("manifest.jsonl", "manifest.parquet", "kept.jsonl", "report.html", "summary.json")


def _metrics(summary: dict[str, Any]) -> dict[str, float]:
    out = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for reason, count in (summary.get("dropped_by_reason") or {}).items():
        out[f"dropped/{reason}"] = float(count)
    for reason, count in (summary.get("rejected_by_reason") or {}).items():
        out[f"rejected/{reason}"] = float(count)
    for step, seconds in (summary.get("step_seconds") or {}).items():
        out[f"cost_s/{step.replace(':', '_')}"] = float(seconds)
    evaluation = summary.get("evaluation") or {}
    for name, stats in (evaluation.get("filters") or evaluation).items():
        if isinstance(stats, dict):
            for key in ("precision", "recall"):
                if isinstance(stats.get(key), (int, float)):
                    out[f"filter/{name}/{key}"] = float(stats[key])
    return out


# ------------------------------------------------------------------------------------------ curate-shard
def _parts_root(ctx) -> str:
    return storage.join(ctx.stage_uri("curate"), "parts")


def _shard_instance(ctx, shard_index: int = 0) -> tuple[str, str]:
    num_shards = ctx.config.curate.num_shards
    if not 0 <= shard_index < num_shards:
        raise StageError(f"shard_index {shard_index} outside 0..{num_shards - 1}")
    return f"curate-shard-{shard_index}", storage.join(_parts_root(ctx), f"shard-{shard_index:03d}")


def _shard_settings(ctx, raw, shard_index: int = 0) -> dict[str, Any]:
    stage_cfg = ctx.config.curate
    return {"filters": stage_cfg.filters.model_dump(mode="json"), "shard": [shard_index, stage_cfg.num_shards]}


def _curate_shard(run: StageRun, raw: dict[str, Any], shard_index: int = 0) -> StageOutput:
    import mlflow

    from components.curate.merge import check_references
    from components.curate.stage import curate_shard

    stage_cfg = run.ctx.config.curate
    check_references(stage_cfg.filters.dedup_against)  # a wrong URI stops here, not after every shard's work
    curate_uri = run.ctx.stage_uri("curate")
    # The table is streamed and each video fetched on its own (an s3:// one to a temporary file): the task
    # never holds the raw folder.
    # The crash journal lives in the run's storage, not in the task's temporary folder: a retried task
    # learns from it on which video the attempt before it died (CrashJournal).
    journal = storage.join(curate_uri, "attempts", f"shard-{shard_index:03d}.json")
    # So is the work in progress (each finished video's result and clips): a retried task (a preempted
    # pod) takes up the videos its attempts finished and curates the rest (components.curate.resume).
    work = storage.join(curate_uri, "work", f"shard-{shard_index:03d}")
    with tempfile.TemporaryDirectory(prefix="t2v-curate-") as tmp:
        summary = curate_shard(
            raw["raw_uri"], Path(tmp), stage_cfg.filters, shard_index, stage_cfg.num_shards, journal=journal,
            work_uri=work,
        )
        summary.pop("raw_dir", None)
        summary.pop("table", None)
        names = sorted(  # (not the hidden work folder a shard with unavailable videos keeps for a rerun)
            str(p.relative_to(tmp)) for p in Path(tmp).rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(tmp).parts)
        )
        files = storage.upload_files(tmp, names, curate_uri)
    mlflow.log_metrics(_metrics(summary))
    return StageOutput(files=files, summary=summary)


# ------------------------------------------------------------------------------------------------ curate
def _merge_settings(ctx, raw, parts) -> dict[str, Any]:
    return {"num_shards": ctx.config.curate.num_shards}


def _merge(run: StageRun, raw: dict[str, Any], parts: list[dict[str, Any]]) -> StageOutput:
    import mlflow

    from components.curate.stage import merge_manifests

    stage_cfg = run.ctx.config.curate
    curate_uri = run.uri
    with tempfile.TemporaryDirectory(prefix="t2v-merge-") as tmp:
        tmp = Path(tmp)
        for uri in storage.list_uris(curate_uri):
            rel = uri[len(curate_uri) + 1 :]
            if "/" not in rel and not rel.endswith(".tar"):  # the shards' manifests and markers
                storage.download_file(uri, tmp / rel)
        summary = merge_manifests(tmp, [p["summary"] for p in parts], stage_cfg.filters, raw["raw_uri"])
        files = storage.upload_files(tmp, MERGE_OUTPUTS, curate_uri)
        mlflow.log_artifact(str(tmp / "report.html"), "curation")
        mlflow.log_artifact(str(tmp / "manifest.parquet"), "curation")
    for part in parts:
        files.update({k: v for k, v in part["files"].items() if k.startswith("shards/")})
    mlflow.log_metrics(_metrics(summary))
    log.info("curate: %s of %s clips kept", summary.get("kept"), summary.get("clips"))
    return StageOutput(
        files=files,
        summary=summary,
        extra={"kept_index_uri": storage.join(curate_uri, "kept.jsonl")},
        mirror=("kept", "clips"),
    )


STAGES = (
    Stage(
        "curate-shard",
        output="part",
        inputs={"raw": "raw"},
        settings=_shard_settings,
        body=_curate_shard,
        instance=_shard_instance,
        fan_out_root=_parts_root,
    ),
    Stage("curate", output="clips", inputs={"raw": "raw", "parts": "part"}, settings=_merge_settings, body=_merge),
)
