"""The model registry: model versions with their evidence, ``challenger`` and ``champion``, promotion,
rollback and their audit trail.

Aliases only (``challenger``, ``champion``); stages are deprecated in MLflow. Who may move an alias is the
tracking server's decision, not this module's: the server runs MLflow's basic-auth app (charts/mlflow), the
CI identity may MANAGE the registered models, reviewers may READ, and an unauthenticated request is refused
(docs/MLOPS.md). This module adds what the server cannot know:

* ``champion`` moves only to a version whose evaluation gate passed and which does not regress against the
  current champion on the evaluation's own comparison (the champion it was evaluated against must be the
  champion now; its score on the same prompts must not be lower; its win rate's upper bound must reach 0.5);
* every step (register, challenger, promote, a refused promotion, rollback) is an audit record — who (the
  identity the server authenticated, asked from the server, never an environment variable), when, why, from
  which version to which — kept as a ``t2v.audit.<time>-<action>`` tag of the registered model;
* each version's description is its model card (:func:`model_card`).
"""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from t2v.errors import UserError
from t2v.secrets import redact, redact_obj, strip_credentials

# Tags of a registered model version: where its weights are and what it was trained with.
TAG_CHECKPOINT = "t2v.checkpoint_uri"
TAG_VAE_MODEL = "t2v.vae_model"
TAG_CLIP = "t2v.text_encoders.clip"
TAG_LLM = "t2v.text_encoders.llm"
TAG_BASE_MODEL = "t2v.base_model"  # an adapter's base: models:/<name>/<version> or a checkpoint URI
TAG_ADAPTER = "t2v.adapter"
# ... and the evidence promotion reads (written by the register stage from the evaluate stage's summary)
TAG_GATE = "eval.gate"  # "passed" or the gate's reasons
TAG_SCORE = "eval.score_total"
TAG_UNTRAINED_SCORE = "eval.untrained_score_total"
TAG_COMPARED_WITH = "eval.champion_version"  # the champion version it was evaluated against ("none")
TAG_CHAMPION_SCORE = "eval.champion_score_total"  # that champion's score on the same prompts and seed
TAG_WIN_RATE = "eval.win_rate"
TAG_WIN_RATE_HIGH = "eval.win_rate_ci95_high"
TAG_PREVIOUS = "t2v.previous_champion"

AUDIT_PREFIX = "t2v.audit."


class PromotionError(UserError, RuntimeError):
    """A promotion or rollback was refused or failed; the message says why in one line."""


class RegistryAccessError(PromotionError):
    """The tracking server refused the caller (no credentials, wrong ones, or not allowed)."""


@dataclass
class Identity:
    """Who the tracking server says the caller is. ``authenticated`` is False for a local store or a
    server without authentication (where any name would be a claim)."""

    username: str
    authenticated: bool
    is_admin: bool = False


@dataclass
class AuditRecord:
    model: str
    action: str  # register | challenger | promote | refuse | rollback
    alias: str | None
    from_version: str | None
    to_version: str | None
    actor: str
    authenticated: bool
    at: str
    reason: str
    checks: dict[str, Any] = field(default_factory=dict)
    requested_by: str | None = None  # what the CI job says triggered it (informative, not the actor)
    ci_run_url: str | None = None

    # the names of the earlier record shape, for callers that read them
    @property
    def version(self) -> str | None:
        return self.to_version

    @property
    def previous_version(self) -> str | None:
        return self.from_version


PromotionRecord = AuditRecord


# ---------------------------------------------------------------------------------------------- client


def _is_server(tracking_uri: str | None) -> bool:
    return bool(tracking_uri) and tracking_uri.startswith(("http://", "https://"))


def _client(tracking_uri: str | None):
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient()


def _tracking_uri(tracking_uri: str | None) -> str:
    import mlflow

    return tracking_uri or mlflow.get_tracking_uri()


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return redact(" ".join(str(text).split()))[:400]


def _access_error(exc: BaseException, what: str, tracking_uri: str | None) -> PromotionError:
    """An MlflowException from the server -> a one-line error that says what to do."""
    code = getattr(exc, "error_code", "")
    where = strip_credentials(_tracking_uri(tracking_uri))
    text = str(exc)
    if code == "PERMISSION_DENIED" or "403" in text.split("Response body")[0]:
        who = os.environ.get("MLFLOW_TRACKING_USERNAME") or "the caller"
        return RegistryAccessError(f"{what}: the tracking server {where} refused {who} (permission denied); only the CI identity may change the registry")
    if code == "UNAUTHENTICATED" or "401" in text.split("Response body")[0]:
        return RegistryAccessError(
            f"{what}: the tracking server {where} needs credentials (set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
        )
    return PromotionError(f"{what}: {_one_line(exc)}")


def whoami(tracking_uri: str | None = None) -> Identity:
    """Ask the tracking server who the caller is (basic-auth's ``users/current``). A local store (sqlite,
    file) or a server without authentication answers with an unauthenticated identity named after the OS
    user; wrong or missing credentials raise :class:`RegistryAccessError`."""
    uri = _tracking_uri(tracking_uri)
    if not _is_server(uri):
        return Identity(f"local:{getpass.getuser()}", authenticated=False)
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        resp = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/users/current", "GET", max_retries=0, timeout=30)
    except Exception as exc:  # noqa: BLE001 - the server did not answer: one line naming it
        raise PromotionError(f"the tracking server {strip_credentials(uri)} did not answer: {_one_line(exc)}") from None
    if resp.status_code == 401:
        raise RegistryAccessError(
            f"the tracking server {strip_credentials(uri)} refused the credentials (set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
        )
    if resp.status_code == 404:  # no auth app: nobody is anybody
        return Identity(f"unauthenticated:{getpass.getuser()}", authenticated=False)
    if resp.status_code != 200:
        raise PromotionError(f"the tracking server {strip_credentials(uri)} answered {resp.status_code} to users/current")
    user = resp.json().get("user", {})
    return Identity(str(user.get("username")), authenticated=True, is_admin=bool(user.get("is_admin")))


def _require_identity(tracking_uri: str | None, allow_local: bool, what: str) -> Identity:
    identity = whoami(tracking_uri)
    if identity.authenticated:
        return identity
    uri = _tracking_uri(tracking_uri)
    if _is_server(uri):
        raise PromotionError(
            f"{what}: the tracking server {strip_credentials(uri)} runs without authentication; "
            "promotion needs the basic-auth server of charts/mlflow (docs/MLOPS.md)"
        )
    if not allow_local:
        raise PromotionError(
            f"{what}: {strip_credentials(uri)} is a local registry with no identities; pass --allow-local to change it anyway"
        )
    return identity


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


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def _record(model, action, alias, from_version, to_version, identity: Identity, reason, checks=None) -> AuditRecord:
    return AuditRecord(
        model=model,
        action=action,
        alias=alias,
        from_version=str(from_version) if from_version is not None else None,
        to_version=str(to_version) if to_version is not None else None,
        actor=identity.username,
        authenticated=identity.authenticated,
        at=_now(),
        reason=reason,
        checks=checks or {},
        requested_by=os.environ.get("T2V_PROMOTED_BY") or None,
        ci_run_url=os.environ.get("T2V_CI_RUN_URL") or None,
    )


def write_audit(client, record: AuditRecord) -> str:
    """Store ``record`` as a tag of its registered model; returns the tag key."""
    key = f"{AUDIT_PREFIX}{record.at.replace(':', '').replace('-', '')}-{record.action}"
    client.set_registered_model_tag(record.model, key, json.dumps(redact_obj(asdict(record)), sort_keys=True)[:5000])
    return key


def audit_trail(tracking_uri: str | None, model: str) -> list[AuditRecord]:
    """Every audit record of ``model``, oldest first."""
    tags = _client(tracking_uri).get_registered_model(model).tags or {}
    out = []
    for key in sorted(k for k in tags if k.startswith(AUDIT_PREFIX)):
        try:
            data = json.loads(tags[key])
            out.append(AuditRecord(**{k: data.get(k) for k in AuditRecord.__dataclass_fields__}))
        except (ValueError, TypeError):
            continue
    return out


def record_step(tracking_uri: str | None, model: str, action: str, alias: str | None, from_version, to_version,
                reason: str, checks: dict[str, Any] | None = None, client=None) -> AuditRecord:
    """An audit record for a step taken elsewhere (the register stage's registration and challenger)."""
    identity = whoami(tracking_uri)
    record = _record(model, action, alias, from_version, to_version, identity, reason, checks)
    write_audit(client or _client(tracking_uri), record)
    return record


# ------------------------------------------------------------------------------------------- promotion


def promotion_checks(candidate, current) -> tuple[dict[str, Any], list[str]]:
    """The evidence of ``candidate`` against the ``current`` champion (None: no champion yet) and the
    reasons it may not become champion (empty: it may)."""
    tags = candidate.tags or {}
    checks: dict[str, Any] = {
        "gate": tags.get(TAG_GATE),
        "score": _float(tags.get(TAG_SCORE)),
        "compared_with": tags.get(TAG_COMPARED_WITH),
        "champion_score": _float(tags.get(TAG_CHAMPION_SCORE)),
        "win_rate": _float(tags.get(TAG_WIN_RATE)),
        "win_rate_ci95_high": _float(tags.get(TAG_WIN_RATE_HIGH)),
        "current_champion": str(current.version) if current is not None else None,
    }
    name = f"{candidate.name} v{candidate.version}"
    reasons = []
    if checks["gate"] is None:
        reasons.append(f"{name} has no gate evidence ({TAG_GATE} tag): it was not registered by the register stage")
    elif checks["gate"] != "passed":
        reasons.append(f"{name}: its evaluation gate did not pass ({checks['gate']})")
    if current is not None:
        if str(current.version) == str(candidate.version):
            reasons.append(f"{name} is already the champion")
        elif checks["compared_with"] in (None, "", "None", "none"):
            reasons.append(f"{name} was evaluated with no champion, but v{current.version} is champion now: evaluate it against the champion first")
        elif str(checks["compared_with"]) != str(current.version):
            reasons.append(
                f"{name} was evaluated against v{checks['compared_with']}, but v{current.version} is champion now: evaluate it against the champion first"
            )
        elif checks["score"] is None or checks["champion_score"] is None:
            reasons.append(f"{name}: its evaluation has no score for itself or the champion")
        else:
            if checks["score"] < checks["champion_score"]:
                reasons.append(
                    f"{name} scores {checks['score']:.3f}, below champion v{current.version}'s {checks['champion_score']:.3f} on the same prompts"
                )
            if checks["win_rate_ci95_high"] is not None and checks["win_rate_ci95_high"] < 0.5:
                reasons.append(
                    f"{name} loses to champion v{current.version}: win rate {checks['win_rate']:.2f}, 95% interval below 0.5"
                )
    return checks, reasons


def promote(
    model: str,
    version: str | None = None,
    from_alias: str = "challenger",
    to_alias: str = "champion",
    tracking_uri: str | None = None,
    reason: str | None = None,
    allow_local: bool = False,
    allow_worse: bool = False,
) -> AuditRecord:
    """Point ``to_alias`` at ``version`` (default: the version holding ``from_alias``) after the checks of
    :func:`promotion_checks`; an audit record either way. ``allow_worse`` skips the regression checks (the
    gate still has to pass) and says so in the record."""
    from mlflow.exceptions import MlflowException

    identity = _require_identity(tracking_uri, allow_local, f"promote {model}")
    client = _client(tracking_uri)
    try:
        if version is None:
            holder = _alias_version(client, model, from_alias)
            if holder is None:
                raise PromotionError(f"{model}: no version holds the alias {from_alias!r}")
            version = holder.version
        try:
            candidate = client.get_model_version(model, str(version))
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise PromotionError(f"{model}: there is no version {version}") from None
            raise
        current = _alias_version(client, model, to_alias)
        checks, reasons = promotion_checks(candidate, current)
        if allow_worse:
            kept = [r for r in reasons if "gate" in r or "already" in r]
            checks["allow_worse"] = reasons != kept
            reasons = kept
        previous = str(current.version) if current is not None else None
        if reasons:
            why = "; ".join(reasons)
            write_audit(client, _record(model, "refuse", to_alias, previous, version, identity, why, checks))
            raise PromotionError(f"refused: {why}")
        client.set_registered_model_alias(model, to_alias, str(version))
        record = _record(
            model, "promote", to_alias, previous, version, identity,
            reason or f"gate passed; {_evidence(checks)}", checks,
        )
        client.set_model_version_tag(model, str(version), "t2v.promoted_at", record.at)
        client.set_model_version_tag(model, str(version), "t2v.promoted_by", record.actor)
        if previous:
            client.set_model_version_tag(model, str(version), TAG_PREVIOUS, previous)
        elif TAG_PREVIOUS in (candidate.tags or {}):  # promoted once before: that champion is not this one's
            client.delete_model_version_tag(model, str(version), TAG_PREVIOUS)
        write_audit(client, record)
        return record
    except MlflowException as exc:
        raise _access_error(exc, f"promote {model}", tracking_uri) from None


def _evidence(checks: dict[str, Any]) -> str:
    if checks.get("current_champion") is None:
        return f"score {checks.get('score')}; no champion before"
    text = f"score {checks.get('score')} vs champion v{checks['current_champion']}'s {checks.get('champion_score')}"
    if checks.get("win_rate") is not None:
        text += f", win rate {checks['win_rate']:.2f}"
    return text + (" (regression checks skipped: --allow-worse)" if checks.get("allow_worse") else "")


def rollback(
    model: str,
    alias: str = "champion",
    tracking_uri: str | None = None,
    reason: str | None = None,
    allow_local: bool = False,
    from_version: str | None = None,
) -> AuditRecord:
    """Point ``alias`` back at the version it replaced (recorded when it was promoted). ``from_version``:
    refuse unless that version holds ``alias`` now (a rollback undoes what its caller saw)."""
    from mlflow.exceptions import MlflowException

    identity = _require_identity(tracking_uri, allow_local, f"rollback {model}")
    client = _client(tracking_uri)
    try:
        current = _alias_version(client, model, alias)
        if current is None:
            raise PromotionError(f"{model}: no version holds {alias!r}; nothing to roll back")
        if from_version is not None and str(from_version) != str(current.version):
            raise PromotionError(f"{model}: {alias} is v{current.version}, not v{from_version}; nothing rolled back")
        previous = (current.tags or {}).get(TAG_PREVIOUS)
        if not previous:
            raise PromotionError(f"{model} v{current.version}: no previous {alias} recorded; nothing to roll back to")
        client.set_registered_model_alias(model, alias, previous)
        record = _record(
            model, "rollback", alias, current.version, previous, identity,
            reason or f"rolled back from v{current.version} to the {alias} it replaced",
        )
        client.set_model_version_tag(model, str(current.version), "t2v.rolled_back_at", record.at)
        write_audit(client, record)
        return record
    except MlflowException as exc:
        raise _access_error(exc, f"rollback {model}", tracking_uri) from None


# ------------------------------------------------------------------------------------ listing, cards


def list_versions(tracking_uri: str | None, model: str) -> dict[str, Any]:
    """``model``'s versions (newest first) with their aliases, evidence and lineage, and its audit trail.
    ``champion_audited`` says whether the champion's holder got there by an audit-recorded step."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        registered = client.get_registered_model(model)
        versions = client.search_model_versions(f"name = '{model}'", max_results=1000)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise PromotionError(f"no registered model {model!r} at {strip_credentials(_tracking_uri(tracking_uri))}") from None
        raise _access_error(exc, f"models {model}", tracking_uri) from None
    aliases: dict[str, list[str]] = {}
    for alias, number in (registered.aliases or {}).items():
        aliases.setdefault(str(number), []).append(alias)
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = v.tags or {}
        rows.append({
            "version": str(v.version),
            "aliases": sorted(aliases.get(str(v.version), [])),
            "gate": tags.get(TAG_GATE),
            "score": _float(tags.get(TAG_SCORE)),
            "compared_with": tags.get(TAG_COMPARED_WITH),
            "run_id": v.run_id,
            "parent_run_id": tags.get("t2v.parent_run_id"),
            "pipeline_version": tags.get("t2v.pipeline_version"),
            "git_sha": tags.get("t2v.git_sha"),
            "checkpoint": redact(tags.get(TAG_CHECKPOINT)),
            "base_model": tags.get(TAG_BASE_MODEL),
            "vae_model": tags.get(TAG_VAE_MODEL),
            "created": time.strftime("%Y-%m-%d %H:%M", time.gmtime((v.creation_timestamp or 0) / 1000)),
        })
    trail = [asdict(r) for r in audit_trail(tracking_uri, model)]
    champion = next((r["version"] for r in rows if "champion" in r["aliases"]), None)
    moves = [r for r in trail if r["action"] in ("promote", "rollback") and r.get("alias") == "champion"]
    audited = champion is None or (bool(moves) and moves[-1]["to_version"] == champion)
    return {"model": model, "versions": rows, "audit": trail, "champion": champion, "champion_audited": audited}


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def model_card(
    *,
    model: str,
    kind: str,
    checkpoint_uri: str,
    run_id: str,
    lineage: dict[str, str],
    evaluation: dict[str, Any] | None = None,
    data_manifest: str | None = None,
    base_model: str | None = None,
    vae_model: str | None = None,
) -> str:
    """A version's description as a model card (markdown): what it is, where its weights are, what data,
    code and configuration made it, how it evaluated, and (for an adapter) its base model."""
    ev = evaluation or {}
    lines = [
        f"# {model}",
        "",
        f"{kind} of the Step-Video-T2V training system (t2v)"
        + (f", a LoRA adapter on **{base_model}**" if base_model else "")
        + ".",
        "",
        "| | |",
        "|---|---|",
        f"| weights | `{redact(checkpoint_uri)}` |",
    ]
    if base_model:
        lines.append(f"| base model | `{base_model}` (load it first, then this adapter) |")
    if vae_model:
        lines.append(f"| VAE | `{vae_model}` |")
    lines += [
        f"| data manifest | `{redact(data_manifest) if data_manifest else 'n/a'}` |",
        f"| config hash | `{lineage.get('t2v.config_hash', 'n/a')}` (profile {lineage.get('t2v.profile', 'n/a')}) |",
        f"| pipeline version | `{lineage.get('t2v.pipeline_version', 'n/a')}` |",
        f"| git sha | `{lineage.get('t2v.git_sha', 'n/a')}` |",
        f"| pipeline run | {lineage.get('t2v.run_name', 'n/a')} (MLflow parent run `{lineage.get('t2v.parent_run_id', 'n/a')}`, stage run `{run_id}`) |",
    ]
    if ev:
        lines += ["", "## Evaluation", ""]
        scores = ev.get("scores") or {}
        untrained = ev.get("untrained_scores") or {}
        metrics = [k for k in scores if isinstance(scores.get(k), (int, float))]
        if metrics:
            lines += ["| metric | this model | untrained |", "|---|---|---|"]
            lines += [f"| {m} | {_fmt(scores.get(m))} | {_fmt(untrained.get(m))} |" for m in metrics]
            lines.append("")
        lines.append(f"- score (total): {_fmt(ev.get('score_total'))}; untrained floor {_fmt(ev.get('untrained_score_total'))}")
        if ev.get("champion_version") is not None:
            comparison = ev.get("champion_comparison") or {}
            line = f"- against champion v{ev['champion_version']}: {_fmt(ev.get('champion_score_total'))}"
            if comparison:
                low, high = (comparison.get("win_rate_ci95") or [None, None])[:2]
                line += (
                    f"; {comparison.get('wins')} wins, {comparison.get('ties')} ties, {comparison.get('losses')} losses, "
                    f"win rate {_fmt(comparison.get('win_rate'))} (95% interval {_fmt(low)}–{_fmt(high)})"
                )
            lines.append(line)
        else:
            lines.append("- no champion to compare against")
        lines.append(f"- gate: **{ev.get('gate_reason', 'n/a')}**" + (f" ({'; '.join(ev['gate_notes'])})" if ev.get("gate_notes") else ""))
    return "\n".join(lines)[:5000]


def lookup_error(ref: str, exc: BaseException, tracking_uri: str | None) -> str:
    """One line for a failed ``models:/`` lookup (``t2v generate``): no such model, alias or version, or
    a server that refused or did not answer."""
    where = strip_credentials(_tracking_uri(tracking_uri))
    body = ref[len("models:/"):] if ref.startswith("models:/") else ref
    name, alias = (body.split("@", 1) + [None])[:2] if "@" in body else (body.rpartition("/")[0] or body, None)
    code = getattr(exc, "error_code", "")
    message = getattr(exc, "message", str(exc))
    if code == "RESOURCE_DOES_NOT_EXIST" and "version" in message.lower() and "registered model with name" not in message.lower():
        return f"{ref}: {name} has no such version at {where}"
    if code == "RESOURCE_DOES_NOT_EXIST":
        return f"{ref}: no registered model {name!r} at {where} (`t2v models --model NAME` lists what there is)"
    if code == "INVALID_PARAMETER_VALUE" and alias and "alias" in message:
        return f"{ref}: no version of {name} holds the alias {alias!r} (`t2v models --model {name}` lists the aliases)"
    return str(_access_error(exc, ref, tracking_uri))
