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
from t2v.registry import TAG_CHECKPOINT, TAG_CLIP, TAG_LLM

log = logging.getLogger(__name__)
STAGE = "register"


def _register(client, name: str, manifest: dict[str, Any], run_id: str, tags: dict[str, str]):
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Step-Video-T2V training system (t2v)")
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    uri = manifest["checkpoint_uri"]
    artifact = name.replace("/", "_")
    mlflow.log_dict(
        {"checkpoint_uri": uri, "files": manifest.get("files", {}), "manifest_uri": manifest["manifest_uri"]},
        f"{artifact}/checkpoint.json",
    )
    source = uri if uri.startswith("s3://") else f"runs:/{run_id}/{artifact}"
    version = client.create_model_version(name, source=source, run_id=run_id, tags={**tags, TAG_CHECKPOINT: uri})
    return version


def _settings(ctx, **_inputs) -> dict[str, Any]:
    return ctx.config.section("registry")


def _register_models(
    run: StageRun,
    dit: dict[str, Any],
    vae: dict[str, Any],
    evaluation: dict[str, Any],
    clips: dict[str, Any] | None = None,
) -> StageOutput:
    import mlflow

    ctx = run.ctx
    cfg = ctx.config.registry
    client = mlflow.MlflowClient()
    run_id = run.run_id
    eval_summary = evaluation.get("summary", {})
    lineage = {
        **ctx.tags,
        "t2v.parent_run_id": ctx.parent_run_id,
        "t2v.eval_manifest": evaluation["manifest_uri"],
        "eval.score_total": str(eval_summary.get("score_total")),
        "eval.untrained_score_total": str(eval_summary.get("untrained_score_total")),
        "eval.gate": str(eval_summary.get("gate_reason")),
    }
    if clips is not None:
        lineage["t2v.curate_manifest"] = clips["manifest_uri"]
    vae_version = _register(
        client, cfg.vae_model_name, vae, run_id, {**lineage, "t2v.stage_manifest": vae["manifest_uri"]}
    )
    dit_lineage = {
        **lineage,
        "t2v.stage_manifest": dit["manifest_uri"],
        "t2v.init_checkpoint_uri": str(dit.get("init_checkpoint_uri")),
        "t2v.vae_model": f"{cfg.vae_model_name}/{vae_version.version}",
    }
    text_encoders = evaluation.get("text_encoders") or {}
    if text_encoders.get("clip") and text_encoders.get("llm"):
        dit_lineage.update({TAG_CLIP: text_encoders["clip"], TAG_LLM: text_encoders["llm"]})
    dit_version = _register(client, cfg.dit_model_name, dit, run_id, dit_lineage)
    aliases = []
    if eval_summary.get("gate_passed"):
        for name, version in ((cfg.dit_model_name, dit_version), (cfg.vae_model_name, vae_version)):
            client.set_registered_model_alias(name, cfg.challenger_alias, version.version)
        aliases.append(cfg.challenger_alias)
        log.info("register: gate passed; %s set on %s v%s", cfg.challenger_alias, cfg.dit_model_name, dit_version.version)
    else:
        log.info("register: gate not passed (%s); no alias set", eval_summary.get("gate_reason"))
    summary = {
        "dit_model": cfg.dit_model_name,
        "dit_version": dit_version.version,
        "vae_model": cfg.vae_model_name,
        "vae_version": vae_version.version,
        "aliases": aliases,
        "gate_passed": bool(eval_summary.get("gate_passed")),
    }
    mlflow.set_tags({"t2v.dit_version": dit_version.version, "t2v.vae_version": vae_version.version})
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

