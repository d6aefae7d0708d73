"""Running the distributed trainer from a stage: write the job file, check the plan, launch
:mod:`trainer.train` through :mod:`t2v.launch` (``torchrun`` locally, a Kubeflow Trainer TrainJob or a
PyTorchJob on the cluster), wait, and read its result. Used by every stage that trains the DiT (t2i, t2vi,
t2v, dpo), so no component imports another.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from components.framework.skeleton import StageRun
from t2v import storage
from t2v.errors import StageError
from t2v.images import project_image
from t2v.launch import LINEAGE_KFP_RUN_LABEL, LINEAGE_MLFLOW_RUN_LABEL, LaunchSpec, launch
from t2v.secrets import strip_credentials

log = logging.getLogger(__name__)

WORKER_MODULE = "trainer.train"


# settings that say how a stage runs, not what it trains: a changed one resumes the same training state
RUNTIME_FIELDS = frozenset({
    "nproc_per_node", "num_nodes", "launcher", "resources", "checkpoint", "log_every", "parallel",
    "attention_backend", "activation_checkpointing", "batch_size", "grad_accum_steps", "batch_size_per_bucket",
    "data_workers",
})


def train_state_uri(run_uri: str, config, stage: str, init_uri: str | None, latents: dict[str, Any]) -> str:
    """Where the stage's resumable state lives: one folder per training trajectory. The same job (a
    restarted pod, the same command again, another number of GPUs with the same global batch) finds its
    state; changed data, initial weights or optimisation settings start a new one."""
    import hashlib
    import json

    stage_cfg = getattr(config, stage)
    replicate, shard, _ = stage_cfg.parallel.layout(stage_cfg.world_size)
    ranks = replicate * shard * stage_cfg.grad_accum_steps  # samples per step = batch size x this
    trajectory = {
        "dit": config.section("dit"),
        "stage": {k: v for k, v in config.section(stage).items() if k not in RUNTIME_FIELDS},
        "global_batch": stage_cfg.batch_size * ranks,
        "global_batch_per_bucket": {k: v * ranks for k, v in sorted(stage_cfg.batch_size_per_bucket.items())},
        "init": init_uri,
        "latents": sorted((name, entry.get("sha256") or entry.get("uri")) for name, entry in latents.get("files", {}).items()),
    }
    digest = hashlib.sha256(json.dumps(trajectory, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return storage.join(run_uri, "train_state", digest)


def run_trainer(
    run: StageRun, stage: str, latents: dict[str, Any], init_uri: str | None, name: str | None = None, folder: str | None = None,
    base_model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``<stage>`` of the run's config on ``latents`` from ``init_uri``; returns the trainer's
    result (its ``files`` are the exported checkpoint's manifest entries, under ``<folder>/checkpoint``).
    ``folder`` (default: the stage's run folder) and ``name`` (of the launched job) let one stage train
    several times (Video-DPO's rounds); ``base_model`` is the lineage of the model a fine-tune started
    from (the base-model stage's), recorded with an exported adapter."""
    import mlflow

    ctx = run.ctx
    stage_cfg = getattr(ctx.config, stage)
    root = folder or run.uri
    job = {
        "stage": stage,
        "config_json": ctx.config.to_json(),
        "latents": latents,
        "init_checkpoint_uri": init_uri,
        "checkpoint_uri": storage.join(root, "checkpoint"),
        # resumable state: a restarted job continues from <train_state>/latest
        "train_state_uri": train_state_uri(root, ctx.config, stage, init_uri, latents),
        "result_uri": storage.join(root, "result.json"),
        "tracking_uri": strip_credentials(ctx.tracking_uri),  # the identity comes from the environment
        "mlflow_run_id": run.run_id,
        # the registered version a fine-tune started from (a LoRA adapter's t2v_adapter.json names it)
        "base_model_version": (base_model or {}).get("version"),
    }
    if not root.startswith("s3://"):  # rank 0's per-step lines beside the job (MLflow has them too)
        job["metrics_jsonl"] = str(storage.local_path(storage.join(root, "metrics.jsonl")))
    if stage_cfg.launcher != "local":  # refuse a plan that cannot fit before any GPU is asked for
        from trainer.planner import plan_stage, plan_summary

        plan = plan_stage(ctx.config, stage, accelerator=ctx.config.cluster.gpu_type)
        log.info("%s", plan.report())
        if not plan.fits:
            raise StageError(f"{stage}: the training plan does not fit cluster.gpu_type={ctx.config.cluster.gpu_type}:\n{plan.report()}")
        mlflow.log_params(plan_summary(plan))
    job_uri = storage.join(root, "job.json")
    storage.write_json(job_uri, job)
    threads = max(1, (os.cpu_count() or 1) // stage_cfg.nproc_per_node)
    spec = LaunchSpec(
        name=name or f"{ctx.run_name}-{stage}",
        image=project_image("cuda" if stage_cfg.launcher != "local" else "cpu"),
        module=WORKER_MODULE,
        args=["--job", job_uri],
        num_nodes=stage_cfg.num_nodes,
        nproc_per_node=stage_cfg.nproc_per_node,
        gpu=stage_cfg.nproc_per_node if stage_cfg.launcher != "local" else 0,
        cpu=stage_cfg.resources.cpu,
        memory=stage_cfg.resources.memory,
        shm_size=stage_cfg.resources.shm_size,
        max_restarts=stage_cfg.resources.max_restarts,
        termination_grace_s=stage_cfg.resources.termination_grace_s,
        env={"OMP_NUM_THREADS": str(threads), "MLFLOW_TRACKING_URI": ctx.tracking_uri},
        labels={LINEAGE_KFP_RUN_LABEL: ctx.run_name, LINEAGE_MLFLOW_RUN_LABEL: run.run_id, "t2v.dev/stage": stage},
        backend=stage_cfg.launcher,
        namespace=ctx.config.cluster.namespace,
    )
    mlflow.log_params({"launch.backend": spec.backend, "launch.world_size": spec.num_nodes * spec.nproc_per_node})
    launch(spec)
    if not storage.exists(job["result_uri"]):
        raise StageError(f"{stage}: the training job ended without writing {job['result_uri']}")
    result = storage.read_json(job["result_uri"])
    result["checkpoint_uri"] = job["checkpoint_uri"]
    return result
