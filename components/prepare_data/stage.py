"""prepare-data: make the raw inputs the chain starts from.

* raw videos: the synthetic world (embedded default) is generated under ``<run>/prepare-data/raw/``;
  with ``source.kind: uri`` the given prefix is passed on with its table (``curate.filters.input_table``:
  JSONL, CSV or parquet), or, where it has none, with a table listing its video files (:func:`_raw_videos`);
* text encoders: the configured directories when given (for example the released HunyuanCLIP and
  Step-LLM folders), otherwise a small random-initialised pair saved in transformers' format over the
  world's vocabulary, so every later stage loads them the way it would load released ones.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from components.framework.skeleton import Stage, StageOutput, StageRun
from t2v import storage
from t2v.errors import StageError

log = logging.getLogger(__name__)


def _settings(ctx) -> dict[str, Any]:
    cfg = ctx.config
    return {
        "source": cfg.section("source"),
        "world": cfg.section("world") if cfg.source.kind == "synthetic" else None,
        "input_table": cfg.curate.filters.input_table if cfg.source.kind == "uri" else None,
        "text_encoders": cfg.section("text_encoders"),
    }


def _prepare(run: StageRun) -> StageOutput:
    import mlflow

    cfg = run.ctx.config
    summary: dict[str, Any] = {}
    if cfg.source.kind == "synthetic":
        raw_uri = storage.join(run.uri, "raw")
        summary.update(_generate_world(cfg, raw_uri))
        table = storage.join(raw_uri, "metadata.jsonl")
    else:
        raw_uri, table, found = _raw_videos(cfg.source.raw_uri, cfg.curate.filters.input_table, run.uri)
        summary.update(found)
    clip_uri, llm_uri = _text_encoders(cfg, storage.join(run.uri, "text_encoders"))
    mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return StageOutput(
        files={"raw_metadata": {"uri": table}},
        summary=summary,
        extra={"raw_uri": raw_uri, "text_encoders": {"clip": clip_uri, "llm": llm_uri}},
    )


def _raw_videos(prefix: str, input_table: str, run_uri: str) -> tuple[str, str, dict[str, Any]]:
    """``(raw_uri, table, summary)`` for videos of one's own under ``prefix`` (a folder or an S3 prefix).

    With the table that ``curate.filters.input_table`` names (a name under the prefix, or a URI; JSONL,
    CSV or parquet) the prefix is handed on as it is, and the table's rows are counted (streamed). With
    no table, every video file under the prefix (:data:`t2v.video.VIDEO_SUFFIXES`, any depth, sorted) is
    one row of a table written here, ``<run>/prepare-data/raw-index/metadata.jsonl`` (``{"uri": ...}``),
    and that table is handed on: a folder of videos needs no table to be curated."""
    table = input_table if ("://" in input_table or input_table.startswith("/")) else storage.join(prefix, input_table)
    if storage.exists(table):
        return prefix, table, {"raw_videos": _count_rows(table), "raw_table": table}
    index = storage.join(run_uri, "raw-index", "metadata.jsonl")
    count = 0
    with tempfile.TemporaryDirectory(prefix="t2v-raw-index-") as tmp:
        local = Path(tmp) / "metadata.jsonl"
        with open(local, "w", encoding="utf-8") as out:
            for uri in _video_files(prefix):
                out.write(json.dumps({"uri": uri}, ensure_ascii=False) + "\n")
                count += 1
        if not count:
            raise StageError(
                f"{prefix}: no table ({input_table}, as curate.filters.input_table names it) and no video files "
                "under the raw video prefix"
            )
        storage.upload_file(local, index)
    log.info("prepare-data: %s has no table; %d video files listed in %s", prefix, count, index)
    return index, index, {"raw_videos": count, "raw_table": index, "raw_indexed": True}


def _video_files(prefix: str):
    """The video files under ``prefix``, sorted: S3 URIs as listed, local files as absolute paths (names
    taken as they are). Hidden files and folders are left out."""
    from t2v.video import VIDEO_SUFFIXES

    if prefix.startswith(("http://", "https://")):
        storage.list_uris(prefix)  # raises: a web server's folder is not listed
    if prefix.startswith("s3://"):
        start = len(prefix.rstrip("/")) + 1
        for uri in storage.list_uris(prefix):
            parts = uri[start:].split("/")
            if parts[-1].lower().endswith(VIDEO_SUFFIXES) and not any(p.startswith(".") for p in parts):
                yield uri
        return
    root = storage.local_path(prefix)
    if not root.is_dir():
        return
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and path.name.lower().endswith(VIDEO_SUFFIXES) and not any(p.startswith(".") for p in rel.parts):
            found.append(str(path.resolve()))
    yield from sorted(found)


def _count_rows(table: str) -> int:
    """Rows of a JSONL, CSV or parquet table, streamed (a parquet file's footer says)."""
    import csv

    with storage.local_file_for(table) as local:
        if table.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(local).metadata.num_rows)
        with open(local, encoding="utf-8", errors="replace", newline="") as f:
            if table.lower().endswith(".csv"):
                return sum(1 for _ in csv.DictReader(f))
            return sum(1 for line in f if line.strip())


STAGES = (Stage("prepare-data", output="raw", inputs={}, settings=_settings, body=_prepare),)


def _generate_world(cfg, raw_uri: str) -> dict[str, Any]:
    from t2v.world import generate_raw_videos

    with storage.staged_output_dir(raw_uri) as out_dir:
        records = generate_raw_videos(cfg.world, Path(out_dir))
    return {
        "raw_videos": len(records),
        "raw_scenes": sum(len(r.scenes if hasattr(r, "scenes") else r["scenes"]) for r in records),
        "corrupt_videos": sum(bool(r.corrupt if hasattr(r, "corrupt") else r["corrupt"]) for r in records),
    }


def _text_encoders(cfg, out_uri: str) -> tuple[str, str]:
    te = cfg.text_encoders
    if te.clip_path and te.llm_path:
        return te.clip_path, te.llm_path
    from t2v.world import vocabulary
    from t2v.world.text_encoders import create_tiny_text_encoders

    words = vocabulary(cfg.world) + cfg.evaluate.negative_prompt.split()
    with tempfile.TemporaryDirectory(prefix="t2v-text-") as tmp:
        clip_dir, llm_dir = create_tiny_text_encoders(Path(tmp), words, te)
        storage.upload_dir(clip_dir, storage.join(out_uri, "clip"))
        storage.upload_dir(llm_dir, storage.join(out_uri, "llm"))
    return storage.join(out_uri, "clip"), storage.join(out_uri, "llm")
