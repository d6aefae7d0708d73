"""The curate stage as the pipeline runs it: one ``curate-shard`` task per shard (``ParallelFor``), then
one ``curate`` merge (``dsl.Collected``). Moves data between the object store and the local folders the
curation logic (:mod:`components.curate.stage`) works in, logs to MLflow and publishes the manifests.

Layout under ``<run>/curate/``: ``shards/clips-SSS-NNNN.tar`` (immutable once written),
``manifest-SSS.jsonl`` / ``done-SSS.json`` per shard, ``parts/shard-SSS/manifest.json`` (the shard task's
hand-off), and after the merge ``manifest.jsonl``, ``manifest.parquet``, ``kept.jsonl`` (the training
index), ``report.html``, ``summary.json`` and ``manifest.json`` (the stage hand-off, written last).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from t2v import storage
from t2v.stage import StageContext, child_run, file_entry, fingerprint, publish_manifest, stage_outputs

log = logging.getLogger(__name__)
MERGE_OUTPUTS = ("manifest.jsonl", "manifest.parquet", "kept.jsonl", "report.html", "summary.json")


def _metrics(summary: dict[str, Any]) -> dict[str, float]:
    out = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for reason, count in (summary.get("dropped_by_reason") or {}).items():
        out[f"dropped/{reason}"] = float(count)
    evaluation = summary.get("evaluation") or {}
    for name, stats in (evaluation.get("filters") or evaluation).items():
        if isinstance(stats, dict):
            for key in ("precision", "recall"):
                if isinstance(stats.get(key), (int, float)):
                    out[f"filter/{name}/{key}"] = float(stats[key])
    return out


def run_shard(ctx: StageContext, raw: dict[str, Any], shard_index: int = 0) -> dict[str, Any]:
    import mlflow

    from components.curate.stage import curate_shard

    stage_cfg = ctx.config.curate
    if not 0 <= shard_index < stage_cfg.num_shards:
        raise ValueError(f"shard_index {shard_index} outside 0..{stage_cfg.num_shards - 1}")
    curate_uri = ctx.stage_uri("curate")
    where = storage.join(curate_uri, "parts", f"shard-{shard_index:03d}")
    settings = {"filters": stage_cfg.filters.model_dump(mode="json"), "shard": [shard_index, stage_cfg.num_shards]}
    fp = fingerprint("curate-shard", settings, {"raw": raw})
    name = f"curate-shard-{shard_index}"
    with stage_outputs(ctx, name, fp, where=where) as done, child_run(ctx, name, params=settings) as run_:
        if done is not None:
            mlflow.set_tag("t2v.skipped", "up-to-date")
            return done
        with storage.local_dir_for(raw["raw_uri"]) as raw_dir, tempfile.TemporaryDirectory(prefix="t2v-curate-") as tmp:
            summary = curate_shard(Path(raw_dir), Path(tmp), stage_cfg.filters, shard_index, stage_cfg.num_shards)
            summary.pop("raw_dir", None)
            files = {}
            for path in sorted(p for p in Path(tmp).rglob("*") if p.is_file() and not p.name.startswith(".")):
                rel = str(path.relative_to(tmp))
                uri = storage.join(curate_uri, rel)
                storage.upload_file(path, uri)
                files[rel] = file_entry(path, uri)
        mlflow.log_metrics(_metrics(summary))
        return publish_manifest(
            ctx, name, fp, files=files, summary=summary, inputs={"raw": raw}, mlflow_run_id=run_.info.run_id, where=where
        )


def run_merge(ctx: StageContext, raw: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    import mlflow

    from components.curate.stage import merge_manifests

    stage_cfg = ctx.config.curate
    curate_uri = ctx.stage_uri("curate")
    fp = fingerprint("curate", {"num_shards": stage_cfg.num_shards}, {f"part{i}": p for i, p in enumerate(parts)})
    with stage_outputs(ctx, "curate", fp) as done, child_run(ctx, "curate", params={"num_shards": len(parts)}) as run_:
        if done is not None:
            mlflow.set_tag("t2v.skipped", "up-to-date")
            return done
        with tempfile.TemporaryDirectory(prefix="t2v-merge-") as tmp:
            tmp = Path(tmp)
            for uri in storage.list_uris(curate_uri):
                rel = uri[len(curate_uri) + 1 :]
                if "/" not in rel and not rel.endswith(".tar"):  # the shards' manifests and markers
                    storage.download_file(uri, tmp / rel)
            raw_dir = tmp / ".raw"
            storage.download_file(storage.join(raw["raw_uri"], "metadata.jsonl"), raw_dir / "metadata.jsonl")
            summary = merge_manifests(tmp, [p["summary"] for p in parts], stage_cfg.filters, raw_dir)
            files = {}
            for name in MERGE_OUTPUTS:
                uri = storage.join(curate_uri, name)
                storage.upload_file(tmp / name, uri)
                files[name] = file_entry(tmp / name, uri)
            mlflow.log_artifact(str(tmp / "report.html"), "curation")
            mlflow.log_artifact(str(tmp / "manifest.parquet"), "curation")
        for part in parts:
            files.update({k: v for k, v in part["files"].items() if k.startswith("shards/")})
        mlflow.log_metrics(_metrics(summary))
        log.info("curate: %s of %s clips kept", summary.get("kept"), summary.get("clips"))
        return publish_manifest(
            ctx,
            "curate",
            fp,
            files=files,
            summary=summary,
            inputs={"raw": raw},
            mlflow_run_id=run_.info.run_id,
            extra={"kept_index_uri": storage.join(curate_uri, "kept.jsonl"), "mirror": ["kept", "clips"]},
        )
