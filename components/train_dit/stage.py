"""t2i / t2vi / t2v: the three flow-matching DiT training stages (one trainer, three configs).

The component writes a job file, launches the worker (``components.train_dit.worker``) through
:mod:`t2v.launcher` — ``torchrun`` locally, a Kubeflow Trainer TrainJob on the cluster — waits for it,
and publishes the checkpoint manifest. Each stage starts from the previous stage's checkpoint, or from
``<stage>.init_from`` when set (for example the released weights).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from t2v import storage
from t2v.images import project_image
from t2v.stage import StageContext, StageError, child_run, fingerprint, publish_manifest, stage_outputs

log = logging.getLogger(__name__)

WORKER_MODULE = "components.train_dit.worker"


def _run(ctx: StageContext, stage: str, latents: dict[str, Any], init: dict[str, Any] | None) -> dict[str, Any]:
    import mlflow

    from t2v.launcher import LINEAGE_KFP_RUN_LABEL, LINEAGE_MLFLOW_RUN_LABEL, LaunchSpec, launch

    stage_cfg = getattr(ctx.config, stage)
    settings = {"dit": ctx.config.section("dit"), stage: ctx.config.section(stage)}
    init_uri = stage_cfg.init_from or (init or {}).get("checkpoint_uri")
    fp = fingerprint(stage, {**settings, "init_uri": init_uri}, {"latents": latents, "init": init})
    with stage_outputs(ctx, stage, fp) as done, child_run(ctx, stage, params=settings) as run_:
        if done is not None:
            mlflow.set_tag("t2v.skipped", "up-to-date")
            return done
        out_uri = ctx.stage_uri(stage)
        job = {
            "stage": stage,
            "config_json": ctx.config.to_json(),
            "latents": latents,
            "init_checkpoint_uri": init_uri,
            "checkpoint_uri": storage.join(out_uri, "checkpoint"),
            "result_uri": storage.join(out_uri, "result.json"),
            "tracking_uri": ctx.tracking_uri,
            "mlflow_run_id": run_.info.run_id,
        }
        job_uri = storage.join(out_uri, "job.json")
        storage.write_json(job_uri, job)
        threads = max(1, (os.cpu_count() or 1) // stage_cfg.nproc_per_node)
        spec = LaunchSpec(
            name=f"{ctx.run_name}-{stage}",
            image=project_image("cuda" if stage_cfg.launcher != "local" else "cpu"),
            module=WORKER_MODULE,
            args=["--job", job_uri],
            num_nodes=stage_cfg.num_nodes,
            nproc_per_node=stage_cfg.nproc_per_node,
            gpu=stage_cfg.nproc_per_node if stage_cfg.launcher != "local" else 0,
            env={"OMP_NUM_THREADS": str(threads), "MLFLOW_TRACKING_URI": ctx.tracking_uri},
            labels={LINEAGE_KFP_RUN_LABEL: ctx.run_name, LINEAGE_MLFLOW_RUN_LABEL: run_.info.run_id, "t2v.dev/stage": stage},
            backend=stage_cfg.launcher,
        )
        mlflow.log_params({"launch.backend": spec.backend, "launch.world_size": spec.num_nodes * spec.nproc_per_node})
        launch(spec)
        if not storage.exists(job["result_uri"]):
            raise StageError(f"{stage}: the training job ended without writing {job['result_uri']}")
        result = storage.read_json(job["result_uri"])
        summary = {k: v for k, v in result.items() if k != "files"}
        mlflow.log_metrics(
            {"final_loss": float(result["final_loss"]), "first_loss": float(result["first_loss"])},
        )
        log.info("%s: loss %.4f -> %.4f in %ss", stage, result["first_loss"], result["final_loss"], result["train_seconds"])
        return publish_manifest(
            ctx,
            stage,
            fp,
            files=result["files"],
            summary=summary,
            inputs={"latents": latents, "init": init},
            mlflow_run_id=run_.info.run_id,
            extra={
                "checkpoint_uri": job["checkpoint_uri"],
                "init_checkpoint_uri": init_uri,
                "mirror": ["final_loss", "steps"],
            },
        )


def run_t2i(ctx: StageContext, latents: dict[str, Any], init: dict[str, Any] | None = None) -> dict[str, Any]:
    return _run(ctx, "t2i", latents, init)


def run_t2vi(ctx: StageContext, latents: dict[str, Any], init: dict[str, Any] | None) -> dict[str, Any]:
    return _run(ctx, "t2vi", latents, init)


def run_t2v(ctx: StageContext, latents: dict[str, Any], init: dict[str, Any] | None) -> dict[str, Any]:
    return _run(ctx, "t2v", latents, init)
