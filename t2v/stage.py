"""What every stage shares: its context (config, storage root, tracking), its hand-off manifest and the
skip-if-done rule.

A stage writes its bulk outputs under ``<run root>/<stage>/`` and its ``manifest.json`` there last. The
manifest lists the files (URI, sha256, size), the stage's fingerprint (a hash of its config section and its
inputs' fingerprints) and a summary. The KFP artifact a component returns is a copy of that manifest, so
only small JSON passes through KFP's artifact store.

Re-running a stage whose manifest already exists with the same fingerprint does no work: it reuses the
outputs (idempotent, resumable pipelines).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2v import storage, tracking
from t2v.config import ProjectConfig

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


class StageError(RuntimeError):
    """A stage cannot run with the inputs it was given; the message says why in one line."""


@dataclass
class StageContext:
    """Everything a component needs besides its input artifacts; built from pipeline parameters."""

    config: ProjectConfig
    run_root: str
    tracking_uri: str
    parent_run_id: str
    pipeline_version: str = "dev"
    git_sha: str = "unknown"
    run_name: str = "local"
    extra_tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_params(
        cls,
        config_json: str,
        run_root: str,
        tracking_uri: str,
        parent_run_id: str,
        pipeline_version: str = "dev",
        git_sha: str = "unknown",
        run_name: str = "local",
    ) -> StageContext:
        return cls(
            config=ProjectConfig.from_json(config_json),
            run_root=run_root,
            tracking_uri=tracking_uri,
            parent_run_id=parent_run_id,
            pipeline_version=pipeline_version,
            git_sha=git_sha,
            run_name=run_name,
        )

    def stage_uri(self, stage: str) -> str:
        return storage.join(self.run_root, stage)

    @property
    def tags(self) -> dict[str, str]:
        return {
            tracking.TAG_GIT_SHA: self.git_sha,
            tracking.TAG_PIPELINE_VERSION: self.pipeline_version,
            tracking.TAG_CONFIG_HASH: self.config.config_hash(),
            tracking.TAG_RUN_NAME: self.run_name,
            tracking.TAG_PROFILE: self.config.profile,
            **self.extra_tags,
        }


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(local: Path, uri: str) -> dict[str, Any]:
    return {"uri": uri, "sha256": sha256_file(local), "size": local.stat().st_size}


def fingerprint(stage: str, settings: Mapping[str, Any], inputs: Mapping[str, Mapping[str, Any] | None]) -> str:
    payload = {
        "stage": stage,
        "settings": settings,
        "inputs": {k: (v or {}).get("fingerprint") for k, v in sorted(inputs.items())},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_manifest(path_or_uri: str | Path) -> dict[str, Any]:
    """Read a stage manifest from a KFP artifact file or a storage URI."""
    text = str(path_or_uri)
    data = storage.read_json(text if "://" in text else storage.to_uri(text))
    if not isinstance(data, dict) or "stage" not in data:
        raise StageError(f"{path_or_uri}: not a stage manifest")
    return data


def write_artifact(artifact: Any, manifest: Mapping[str, Any], mirror: tuple[str, ...] = ()) -> None:
    """Write the manifest into a KFP artifact's file and mirror key fields into its metadata."""
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    artifact.metadata["manifest_uri"] = manifest["manifest_uri"]
    artifact.metadata["fingerprint"] = manifest["fingerprint"]
    artifact.metadata["stage"] = manifest["stage"]
    for key in mirror:
        if key in manifest.get("summary", {}):
            artifact.metadata[key] = manifest["summary"][key]


@contextmanager
def stage_outputs(
    ctx: StageContext, stage: str, fingerprint_: str, where: str | None = None
) -> Iterator[dict[str, Any] | None]:
    """Yield the existing manifest when the stage already completed with this fingerprint, else None.
    ``where`` is the folder of the manifest when it is not the stage's own (a curation shard's part)."""
    manifest_uri = storage.join(where or ctx.stage_uri(stage), MANIFEST_NAME)
    if storage.exists(manifest_uri):
        existing = storage.read_json(manifest_uri)
        if existing.get("fingerprint") == fingerprint_:
            log.info("%s: outputs at %s are up to date (fingerprint %s); skipping", stage, manifest_uri, fingerprint_)
            yield existing
            return
        log.info("%s: existing outputs have another fingerprint; recomputing", stage)
    yield None


def publish_manifest(
    ctx: StageContext,
    stage: str,
    fingerprint_: str,
    files: Mapping[str, Mapping[str, Any]],
    summary: Mapping[str, Any],
    inputs: Mapping[str, Mapping[str, Any] | None],
    mlflow_run_id: str | None,
    extra: Mapping[str, Any] | None = None,
    where: str | None = None,
) -> dict[str, Any]:
    """Write ``<stage uri>/manifest.json`` last, after every file it names exists."""
    where = where or ctx.stage_uri(stage)
    manifest_uri = storage.join(where, MANIFEST_NAME)
    manifest = {
        "stage": stage,
        "uri": where,
        "manifest_uri": manifest_uri,
        "fingerprint": fingerprint_,
        "config_hash": ctx.config.config_hash(),
        "git_sha": ctx.git_sha,
        "pipeline_version": ctx.pipeline_version,
        "run_name": ctx.run_name,
        "mlflow_run_id": mlflow_run_id,
        "inputs": {k: (v or {}).get("manifest_uri") for k, v in inputs.items()},
        "files": dict(files),
        "summary": dict(summary),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    storage.write_json(manifest_uri, manifest)
    import mlflow

    if mlflow.active_run() is not None:  # the stage's child run: the hand-off manifest is one of its artifacts
        mlflow.log_dict(manifest, "manifest.json")
    return manifest


@contextmanager
def child_run(ctx: StageContext, stage: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
    with tracking.stage_run(ctx.tracking_uri, ctx.parent_run_id, stage, ctx.tags, params) as run:
        yield run


class Progress:
    """Periodic progress lines with rate and ETA for loops that run for minutes."""

    def __init__(self, name: str, total: int, every_s: float = 10.0, logger: logging.Logger | None = None):
        self.name, self.total, self.every_s = name, max(total, 1), every_s
        self.start = self.last = time.monotonic()
        self.log = logger or log

    def update(self, done: int, **fields: Any) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and done < self.total:
            return
        self.last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        self.log.info(
            "%s: %d/%d (%.0f%%) %.2f/s eta %.0fs %s", self.name, done, self.total, 100 * done / self.total, rate, eta, extra
        )
