"""Promotion through the MLflow model registry: move ``champion`` to a checked challenger, or roll back.

Aliases only (``challenger``, ``champion``); stages are deprecated in MLflow. Each promotion leaves an
audit record: tags on the promoted version (who, when, which version it replaced) and a line in the
registered model's ``t2v.audit`` tags. Only CI moves ``champion``: :func:`promote` refuses outside CI unless
told otherwise, and the tracking server's permissions (charts/mlflow) give only the CI identity write
access to the registry.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

# Tags of a registered model version: where its weights are and what it was trained with.
TAG_CHECKPOINT = "t2v.checkpoint_uri"
TAG_VAE_MODEL = "t2v.vae_model"
TAG_CLIP = "t2v.text_encoders.clip"
TAG_LLM = "t2v.text_encoders.llm"


class PromotionError(RuntimeError):
    """A promotion check failed; the message says which."""


@dataclass
class PromotionRecord:
    model: str
    alias: str
    version: str
    previous_version: str | None
    actor: str
    at: str
    checks: dict[str, Any]
    action: str = "promote"


def _client(tracking_uri: str | None):
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient()


def _alias_version(client, model: str, alias: str):
    """The version of ``model`` holding ``alias``; None when there is no such registered model or no such
    alias. Every other failure (the server, permissions) raises its ``MlflowException``."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model, alias)
    except MlflowException as exc:
        missing_model = exc.error_code == "RESOURCE_DOES_NOT_EXIST"
        missing_alias = exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in exc.message and "not found" in exc.message
        if missing_model or missing_alias:
            return None
        raise


def version_by_alias(tracking_uri: str | None, model: str, alias: str):
    """The version of ``model`` holding ``alias``, or None when there is none (see :func:`_alias_version`)."""
    return _alias_version(_client(tracking_uri), model, alias)


def _score(version) -> float | None:
    value = (version.tags or {}).get("eval.score_total")
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _audit(client, record: PromotionRecord) -> None:
    client.set_model_version_tag(record.model, record.version, f"t2v.{record.action}d_at", record.at)
    client.set_model_version_tag(record.model, record.version, f"t2v.{record.action}d_by", record.actor)
    if record.previous_version:
        client.set_model_version_tag(record.model, record.version, "t2v.previous_champion", record.previous_version)
    key = f"t2v.audit.{record.at.replace(':', '').replace('-', '')}"
    client.set_registered_model_tag(record.model, key, json.dumps(asdict(record), sort_keys=True)[:5000])


def promote(
    model: str,
    version: str | None = None,
    from_alias: str = "challenger",
    to_alias: str = "champion",
    tracking_uri: str | None = None,
    actor: str | None = None,
    require_ci: bool = True,
    allow_worse: bool = False,
) -> PromotionRecord:
    """Point ``to_alias`` at ``version`` (default: the version holding ``from_alias``) after checks:
    the version passed its evaluation gate and scores at least as well as the current champion."""
    if require_ci and os.environ.get("CI", "").lower() != "true":
        raise PromotionError("promotion runs in CI (CI=true); pass --allow-local to override for a local registry")
    client = _client(tracking_uri)
    if version is None:
        holder = _alias_version(client, model, from_alias)
        if holder is None:
            raise PromotionError(f"{model}: no version holds the alias {from_alias!r}")
        version = holder.version
    candidate = client.get_model_version(model, str(version))
    current = _alias_version(client, model, to_alias)
    checks: dict[str, Any] = {
        "gate": (candidate.tags or {}).get("eval.gate"),
        "score": _score(candidate),
        "champion_score": _score(current) if current else None,
    }
    if checks["gate"] != "passed":
        raise PromotionError(f"{model} v{version}: its evaluation gate did not pass ({checks['gate']})")
    if current is not None and str(current.version) == str(version):
        raise PromotionError(f"{model} v{version} already holds {to_alias!r}")
    if (
        not allow_worse
        and checks["champion_score"] is not None
        and (checks["score"] is None or checks["score"] < checks["champion_score"])
    ):
        raise PromotionError(
            f"{model} v{version} scores {checks['score']} below the champion's {checks['champion_score']}"
        )
    client.set_registered_model_alias(model, to_alias, str(version))
    record = PromotionRecord(
        model=model,
        alias=to_alias,
        version=str(version),
        previous_version=str(current.version) if current else None,
        actor=actor or os.environ.get("GITHUB_ACTOR") or os.environ.get("USER") or "unknown",
        at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        checks=checks,
    )
    _audit(client, record)
    return record


def rollback(
    model: str,
    alias: str = "champion",
    tracking_uri: str | None = None,
    actor: str | None = None,
    require_ci: bool = True,
) -> PromotionRecord:
    """Point ``alias`` back at the version it replaced (recorded at promotion time)."""
    if require_ci and os.environ.get("CI", "").lower() != "true":
        raise PromotionError("rollback runs in CI (CI=true); pass --allow-local to override for a local registry")
    client = _client(tracking_uri)
    current = _alias_version(client, model, alias)
    if current is None:
        raise PromotionError(f"{model}: no version holds {alias!r}; nothing to roll back")
    previous = (current.tags or {}).get("t2v.previous_champion")
    if not previous:
        raise PromotionError(f"{model} v{current.version}: no previous {alias} recorded; nothing to roll back to")
    client.set_registered_model_alias(model, alias, previous)
    record = PromotionRecord(
        model=model,
        alias=alias,
        version=previous,
        previous_version=str(current.version),
        actor=actor or os.environ.get("GITHUB_ACTOR") or os.environ.get("USER") or "unknown",
        at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        checks={},
        action="rollback",
    )
    client.set_registered_model_tag(
        model, f"t2v.audit.{record.at.replace(':', '').replace('-', '')}", json.dumps(asdict(record), sort_keys=True)
    )
    return record
