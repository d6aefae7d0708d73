"""register: record the VAE and the DiT as MLflow model versions with their lineage, and set the
``challenger`` alias when the evaluation gate passed.

Checkpoints are registered as external models: the bytes stay in the object store. An S3 checkpoint is
the version's source itself; a local (file://) checkpoint — which a tracking server refuses as a source —
is registered through a small pointer artifact logged in this run (``<model>/checkpoint.json``). Either
way the version's ``t2v.checkpoint_uri`` tag names the weights, which is what ``t2v generate`` and the
next pipeline's ``init_from`` read.
"""

from __future__ import annotations

import logging
from typing import Any

from components.framework.skeleton import Stage, StageOutput, StageRun
from t2v import checkpoints, registry, tracking
from t2v.registry import TAG_BASE_MODEL, TAG_CHECKPOINT, TAG_CLIP, TAG_LLM
from t2v.secrets import redact_obj

log = logging.getLogger(__name__)
STAGE = "register"


def _register(client, name: str, manifest: dict[str, Any], run_id: str, tags: dict[str, str], description: str = ""):
    """A model version of ``manifest``'s checkpoint, from run ``run_id`` (the pipeline's parent run, so the
    MLflow UI lists the version on the run a reviewer opens); a local checkpoint's pointer artifact is
    logged in that run."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Step-Video-T2V training system (t2v)")
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    uri = manifest["checkpoint_uri"]
    artifact = name.replace("/", "_")
    client.log_dict(
        run_id,
        {"checkpoint_uri": uri, "files": manifest.get("files", {}), "manifest_uri": manifest["manifest_uri"]},
        f"registered/{artifact}/checkpoint.json",
    )
    source = uri if uri.startswith("s3://") else f"runs:/{run_id}/registered/{artifact}"
    version = client.create_model_version(
        name, source=source, run_id=run_id, tags={**tags, TAG_CHECKPOINT: uri}, description=description or None
    )
    return version


def evidence_tags(eval_summary: dict[str, Any]) -> dict[str, str]:
    """The evaluation's decision and comparison as version tags (what ``t2v promote`` checks)."""
    comparison = eval_summary.get("champion_comparison") or {}
    interval = comparison.get("win_rate_ci95") or [None, None]
    return {
        registry.TAG_SCORE: str(eval_summary.get("score_total")),
        registry.TAG_UNTRAINED_SCORE: str(eval_summary.get("untrained_score_total")),
        registry.TAG_GATE: str(eval_summary.get("gate_reason")),
        registry.TAG_COMPARED_WITH: str(eval_summary.get("champion_version") or "none"),
        registry.TAG_CHAMPION_SCORE: str(eval_summary.get("champion_score_total")),
        registry.TAG_WIN_RATE: str(comparison.get("win_rate")),
        registry.TAG_WIN_RATE_HIGH: str(interval[1] if len(interval) > 1 else None),
    }


def base_model_of(dit: dict[str, Any]) -> str | None:
    """The model a fine-tuned DiT started from, as its manifest carries it (the base-model stage's
    lineage): its registered version as ``models:/<name>/<version>``, else the reference it was given."""
    lineage = dit.get("base_model")
    if isinstance(lineage, dict):
        return f"models:/{lineage['version']}" if lineage.get("version") else lineage.get("reference")
    return lineage or None


def _settings(ctx, **_inputs) -> dict[str, Any]:
    return ctx.config.section("registry")


def _register_models(
    run: StageRun,
    dit: dict[str, Any],
    vae: dict[str, Any],
    evaluation: dict[str, Any],
    clips: dict[str, Any] | None = None,
    base_model: str | None = None,
) -> StageOutput:
    import mlflow

    ctx = run.ctx
    cfg = ctx.config.registry
    client = mlflow.MlflowClient()
    run_id = ctx.parent_run_id or run.run_id  # the versions belong to the pipeline run that made them
    eval_summary = evaluation.get("summary", {})
    lineage = {
        **ctx.tags,
        "t2v.parent_run_id": ctx.parent_run_id,
        "t2v.register_run_id": run.run_id,
        "t2v.eval_manifest": evaluation["manifest_uri"],
        **evidence_tags(eval_summary),
    }
    data_manifest = clips["manifest_uri"] if clips is not None else None
    if data_manifest:
        lineage["t2v.curate_manifest"] = data_manifest
    lineage = redact_obj(lineage)
    card = dict(run_id=run_id, lineage=lineage, evaluation=eval_summary, data_manifest=data_manifest)
    vae_name = cfg.vae_model_name
    if vae.get("registered_version"):  # a fine-tune's VAE is its base's, already registered: no new version
        vae_name, _, number = str(vae["registered_version"]).rpartition("/")
        vae_version = client.get_model_version(vae_name, number)
    else:
        vae_version = _register(
            client, vae_name, vae, run_id, {**lineage, "t2v.stage_manifest": vae["manifest_uri"]},
            registry.model_card(model=vae_name, kind="Video-VAE", checkpoint_uri=vae["checkpoint_uri"], **card),
        )
    dit_lineage = {
        **lineage,
        "t2v.stage_manifest": dit["manifest_uri"],
        "t2v.init_checkpoint_uri": str(dit.get("init_checkpoint_uri")),
        "t2v.vae_model": f"{vae_name}/{vae_version.version}",
    }
    base_model = base_model or base_model_of(dit)
    if base_model:
        dit_lineage[TAG_BASE_MODEL] = str(base_model)
    if checkpoints.is_adapter(dit["checkpoint_uri"]):
        dit_lineage[registry.TAG_ADAPTER] = "lora"
    text_encoders = evaluation.get("text_encoders") or {}
    if text_encoders.get("clip") and text_encoders.get("llm"):
        dit_lineage.update({TAG_CLIP: text_encoders["clip"], TAG_LLM: text_encoders["llm"]})
    dit_version = _register(
        client, cfg.dit_model_name, dit, run_id, dit_lineage,
        registry.model_card(
            model=cfg.dit_model_name, kind="DiT", checkpoint_uri=dit["checkpoint_uri"], base_model=base_model,
            vae_model=dit_lineage["t2v.vae_model"], **card,
        ),
    )
    why = f"registered by pipeline run {ctx.run_name} (gate: {eval_summary.get('gate_reason')})"
    registered = [(cfg.dit_model_name, dit_version)]
    if not vae.get("registered_version"):
        registered.append((vae_name, vae_version))
    for name, version in registered:
        registry.record_step(ctx.tracking_uri, name, "register", None, None, version.version, why, client=client)
    aliases = []
    if eval_summary.get("gate_passed"):
        for name, version in ((cfg.dit_model_name, dit_version), (vae_name, vae_version)):
            previous = registry.version_by_alias(ctx.tracking_uri, name, cfg.challenger_alias)
            client.set_registered_model_alias(name, cfg.challenger_alias, version.version)
            registry.record_step(
                ctx.tracking_uri, name, "challenger", cfg.challenger_alias,
                previous.version if previous is not None else None, version.version,
                f"gate passed in pipeline run {ctx.run_name}", client=client,
            )
        aliases.append(cfg.challenger_alias)
        log.info("register: gate passed; %s set on %s v%s", cfg.challenger_alias, cfg.dit_model_name, dit_version.version)
    else:
        log.info("register: gate not passed (%s); no alias set", eval_summary.get("gate_reason"))
    summary = {
        "dit_model": cfg.dit_model_name,
        "dit_version": dit_version.version,
        "vae_model": vae_name,
        "vae_version": vae_version.version,
        "aliases": aliases,
        "gate_passed": bool(eval_summary.get("gate_passed")),
        "base_model": base_model,
    }
    mlflow.set_tags({"t2v.dit_version": dit_version.version, "t2v.vae_version": vae_version.version})
    tracking.log_to_parent(ctx.tracking_uri, ctx.parent_run_id, tags={  # linked from the parent run's description
        "t2v.model_versions": ",".join(f"{n}/{v.version}" for n, v in registered),
    })
    return StageOutput(files={}, summary=summary, mirror=("dit_version", "vae_version", "gate_passed"))


STAGES = (
    Stage(
        STAGE,
        output="registration",
        inputs={"dit": "dit", "vae": "vae", "evaluation": "evaluation", "clips": "clips"},
        settings=_settings,
        body=_register_models,
        optional_inputs=("clips",),
    ),
)

