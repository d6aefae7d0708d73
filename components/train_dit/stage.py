"""t2i / t2vi / t2v, and finetune: the flow-matching DiT training stages (one trainer, four configs).

The component runs the distributed trainer (:mod:`trainer.train`) through
:func:`components.framework.training.run_trainer` -- ``torchrun`` locally, a Kubeflow Trainer TrainJob on
the cluster -- and publishes the checkpoint manifest. Each stage starts from the previous stage's checkpoint, or from
``<stage>.init_from`` when set (for example the released weights). ``finetune`` is the fine-tune
pipeline's one training stage: from the base model (:mod:`components.base_model.stage`), full or with
LoRA adapters (``finetune.lora``).
"""

from __future__ import annotations

import logging
from typing import Any

from components.framework.skeleton import Stage, StageOutput, StageRun
from components.framework.training import run_trainer
from t2v.errors import StageError

log = logging.getLogger(__name__)


def _stage_config(ctx, stage: str):
    cfg = getattr(ctx.config, stage)
    if cfg is None:
        raise StageError(f"{stage}: the profile has no {stage} section (configs/<profile>/{stage}.yaml)")
    return cfg


def _init_uri(ctx, stage: str, init: dict[str, Any] | None) -> str | None:
    return _stage_config(ctx, stage).init_from or (init or {}).get("checkpoint_uri")


def _settings_of(stage: str):
    def settings(ctx, latents, init=None) -> dict[str, Any]:
        return {
            "dit": ctx.config.section("dit"),
            stage: ctx.config.section(stage),
            "init_uri": _init_uri(ctx, stage, init),
        }

    return settings


def _train(run: StageRun, latents: dict[str, Any], init: dict[str, Any] | None = None) -> StageOutput:
    import mlflow

    ctx, stage = run.ctx, run.name
    init_uri = _init_uri(ctx, stage, init)
    base_model = (init or {}).get("base_model")  # a fine-tune's lineage, carried on by every stage after it
    result = run_trainer(run, stage, latents, init_uri, base_model=base_model)
    mlflow.log_metrics({"final_loss": float(result["final_loss"]), "first_loss": float(result["first_loss"])})
    log.info("%s: loss %.4f -> %.4f in %ss", stage, result["first_loss"], result["final_loss"], result["train_seconds"])
    return StageOutput(
        files=result["files"],
        summary={k: v for k, v in result.items() if k not in ("files", "checkpoint_uri")},
        extra={
            "checkpoint_uri": result["checkpoint_uri"],
            "init_checkpoint_uri": init_uri,
            **({"base_model": base_model} if base_model else {}),
            **({"adapter": result["adapter"]} if result.get("adapter") else {}),
        },
        mirror=("final_loss", "steps"),
    )


def _dit_stage(name: str, inputs: dict[str, str]) -> Stage:
    return Stage(
        name, output="dit", inputs=inputs, settings=_settings_of(name), body=_train, optional_inputs=("init",)
    )


STAGES = (
    _dit_stage("t2i", {"latents": "latents"}),
    _dit_stage("t2vi", {"latents": "latents", "init": "dit"}),
    _dit_stage("t2v", {"latents": "latents", "init": "dit"}),
    _dit_stage("finetune", {"latents": "latents", "init": "dit"}),
)
