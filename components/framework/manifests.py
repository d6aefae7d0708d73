"""The hand-off between stages: a small JSON manifest per stage.

A stage writes its bulk outputs under ``<run root>/<stage>/`` and its ``manifest.json`` there last. The
manifest lists the files (URI, sha256, size), the stage's fingerprint (a hash of its settings and of its
inputs' fingerprints), a summary and the lineage. The KFP artifact a component returns is a copy of that
manifest, so only small JSON passes through KFP's artifact store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.framework.context import StageContext
from t2v import storage
from t2v.errors import StageError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"

#: what an input may be: one manifest, a list of them (``dsl.Collected``), or None (an optional input)
Inputs = Mapping[str, Any]


def _each(inputs: Inputs, key: str) -> dict[str, Any]:
    """One field of every input manifest: a value per input, a list for a list of manifests."""
    def pick(value: Any) -> Any:
        if isinstance(value, list):
            return [pick(item) for item in value]
        return (value or {}).get(key)

    return {name: pick(value) for name, value in sorted(inputs.items())}


def fingerprint(stage: str, settings: Mapping[str, Any], inputs: Inputs) -> str:
    """A hash of what a stage's outputs depend on: its name, its settings, its inputs' fingerprints."""
    payload = {"stage": stage, "settings": settings, "inputs": _each(inputs, "fingerprint")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_manifest(path_or_uri: str | Path) -> dict[str, Any]:
    """Read a stage manifest from a KFP artifact file or a storage URI."""
    text = str(path_or_uri)
    data = storage.read_json(text if "://" in text else storage.to_uri(text))
    if not isinstance(data, dict) or "stage" not in data:
        raise StageError(f"{path_or_uri}: not a stage manifest")
    return data


def up_to_date(manifest_uri: str, fingerprint_: str, stage: str) -> dict[str, Any] | None:
    """The manifest at ``manifest_uri`` when it exists with this fingerprint (the stage's work is done),
    else None."""
    if not storage.exists(manifest_uri):
        return None
    existing = storage.read_json(manifest_uri)
    if existing.get("fingerprint") == fingerprint_:
        log.info("%s: outputs at %s are up to date (fingerprint %s); skipping", stage, manifest_uri, fingerprint_)
        return existing
    log.info("%s: existing outputs have another fingerprint; recomputing", stage)
    return None


def write_manifest(
    ctx: StageContext,
    stage: str,
    where: str,
    fingerprint_: str,
    inputs: Inputs,
    mlflow_run_id: str | None,
    files: Mapping[str, Mapping[str, Any]],
    summary: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``<where>/manifest.json``: called last, after every file it names exists."""
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
        "inputs": _each(inputs, "manifest_uri"),
        "files": dict(files),
        "summary": dict(summary),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    storage.write_json(manifest_uri, manifest)
    return manifest


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
