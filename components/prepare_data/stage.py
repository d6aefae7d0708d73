"""prepare-data: make the raw inputs the chain starts from.

* raw videos: the synthetic world (embedded default) is generated under ``<run>/prepare-data/raw/``;
  with ``source.kind: uri`` the given prefix (videos + metadata.jsonl) is checked and passed on as is;
* text encoders: the configured directories when given (for example the released HunyuanCLIP and
  Step-LLM folders), otherwise a small random-initialised pair saved in transformers' format over the
  world's vocabulary, so every later stage loads them the way it would load released ones.
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


def _settings(ctx) -> dict[str, Any]:
    cfg = ctx.config
    return {
        "source": cfg.section("source"),
        "world": cfg.section("world") if cfg.source.kind == "synthetic" else None,
        "text_encoders": cfg.section("text_encoders"),
    }


def _prepare(run: StageRun) -> StageOutput:
    import mlflow

    cfg = run.ctx.config
    summary: dict[str, Any] = {}
    if cfg.source.kind == "synthetic":
        raw_uri = storage.join(run.uri, "raw")
        summary.update(_generate_world(cfg, raw_uri))
    else:
        raw_uri = cfg.source.raw_uri
        if not storage.exists(storage.join(raw_uri, "metadata.jsonl")):
            raise StageError(f"{raw_uri}: no metadata.jsonl under the raw video prefix")
        summary["raw_videos"] = len(storage.read_text(storage.join(raw_uri, "metadata.jsonl")).splitlines())
    clip_uri, llm_uri = _text_encoders(cfg, storage.join(run.uri, "text_encoders"))
    mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float))})
    return StageOutput(
        files={"raw_metadata": {"uri": storage.join(raw_uri, "metadata.jsonl")}},
        summary=summary,
        extra={"raw_uri": raw_uri, "text_encoders": {"clip": clip_uri, "llm": llm_uri}},
    )


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
