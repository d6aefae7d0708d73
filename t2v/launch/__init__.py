"""Distributed-training launcher: one spec, three backends.

A training stage describes *what* to run in a :class:`LaunchSpec` (a Python module and its arguments,
how many nodes and processes, resources, lineage labels) and :func:`launch` runs it:

- ``local``      -- ``torchrun --standalone`` on this machine (gloo on CPU); the embedded default.
- ``trainjob``   -- a Kubeflow Trainer v2 ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) that references
                    a ``ClusterTrainingRuntime`` (``infra/addons/trainer``), queued by Kueue.
- ``pytorchjob`` -- a Training Operator ``PyTorchJob`` (``kubeflow.org/v1``), Master + Workers.

The files, each one thing:

- ``naming.py``    -- cluster conventions (API groups, labels, pools, taints, queues) and Kubernetes-safe
                      names; standard library only, so :mod:`t2v.config` imports it cheaply.
- ``spec.py``      -- :class:`LaunchSpec` and :class:`LaunchError`.
- ``manifests.py`` -- the TrainJob / PyTorchJob manifests, validated with the ``kubeflow_trainer_api`` models.
- ``local.py``     -- :func:`run_local`: torchrun on this machine.
- ``cluster.py``   -- :func:`submit_and_wait`: create the job, follow it, clean up on failure.
"""

from __future__ import annotations

from typing import Any

from t2v.launch.cluster import JobStatus, submit_and_wait
from t2v.launch.local import run_local
from t2v.launch.manifests import (
    build_manifest,
    build_pytorchjob,
    build_trainjob,
    torchrun_command,
    validate_pytorchjob,
    validate_trainjob,
)
from t2v.launch.naming import (
    CPU_QUEUE,
    DEFAULT_QUEUE,
    DEFAULT_RUNTIME,
    GPU_POOL_LABEL,
    GPU_RESOURCE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    KUEUE_QUEUE_LABEL,
    LINEAGE_KFP_RUN_LABEL,
    LINEAGE_MLFLOW_RUN_LABEL,
    POOL_CPU,
    POOL_GPU,
    PYTORCHJOB_GROUP,
    PYTORCHJOB_PLURAL,
    PYTORCHJOB_VERSION,
    TRAINER_NODE,
    TRAINJOB_GROUP,
    TRAINJOB_PLURAL,
    TRAINJOB_VERSION,
    sanitize_label_value,
    sanitize_name,
)
from t2v.launch.spec import LaunchError, LaunchSpec

__all__ = [
    "GPU_POOL_LABEL",
    "GPU_RESOURCE",
    "GPU_TAINT_EFFECT",
    "GPU_TAINT_KEY",
    "GPU_TAINT_VALUE",
    "KUEUE_QUEUE_LABEL",
    "LINEAGE_KFP_RUN_LABEL",
    "LINEAGE_MLFLOW_RUN_LABEL",
    "POOL_CPU",
    "POOL_GPU",
    "PYTORCHJOB_GROUP",
    "PYTORCHJOB_PLURAL",
    "PYTORCHJOB_VERSION",
    "TRAINER_NODE",
    "TRAINJOB_GROUP",
    "TRAINJOB_PLURAL",
    "TRAINJOB_VERSION",
    "DEFAULT_RUNTIME",
    "DEFAULT_QUEUE",
    "CPU_QUEUE",
    "JobStatus",
    "LaunchError",
    "LaunchSpec",
    "build_manifest",
    "build_pytorchjob",
    "build_trainjob",
    "launch",
    "run_local",
    "sanitize_label_value",
    "sanitize_name",
    "submit_and_wait",
    "torchrun_command",
    "validate_pytorchjob",
    "validate_trainjob",
]


def launch(
    spec: LaunchSpec, *, namespace: str | None = None, poll_s: float = 15.0, kube_client: Any = None
) -> None:
    """Run ``spec`` with its backend; returns when the training finished, raises LaunchError otherwise."""
    if spec.backend == "local":
        run_local(spec)
        return
    submit_and_wait(spec, namespace, poll_s=poll_s, kube_client=kube_client)
