"""What to launch: :class:`LaunchSpec`, the one spec every backend runs, and :class:`LaunchError`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from t2v.errors import UserError
from t2v.launch.naming import (
    _ENV_NAME_RE,
    _QUANTITY_RE,
    CPU_QUEUE,
    DEFAULT_QUEUE,
    DEFAULT_RUNTIME,
    GPU_POOL_LABEL,
    GPU_RESOURCE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    KUEUE_QUEUE_LABEL,
    POOL_CPU,
    POOL_GPU,
    _check_label_key,
    sanitize_label_value,
    sanitize_name,
)

#: the Secret (keys ``username``, ``password``) a cluster job's MLflow identity comes from when its tracking
#: URI was given with the credentials inside it (charts/pipeline-rbac documents it; docs/MLOPS.md)
MLFLOW_CREDENTIALS_SECRET = "mlflow-credentials"


class LaunchError(UserError, RuntimeError):
    """A launch failed; the message is one line naming the job and the reason."""


class LaunchSpec(BaseModel):
    """What to launch. The same spec runs locally (torchrun) or on the cluster (TrainJob / PyTorchJob)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="job name; sanitised to a DNS-1123 label of <= 48 chars")
    image: str = Field(default="", description="container image (ignored by the local backend)")
    module: str = Field(min_length=1, description="python -m target run by torchrun on every process")
    args: list[str] = Field(default_factory=list)
    num_nodes: int = Field(default=1, ge=1, le=1024)
    nproc_per_node: int = Field(default=1, ge=1, le=64)
    cpu: str = Field(default="1", description="CPU request/limit per node (Kubernetes quantity)")
    memory: str = Field(default="4Gi", description="memory request/limit per node (Kubernetes quantity)")
    gpu: int = Field(default=0, ge=0, le=64, description="GPUs per node (nvidia.com/gpu)")
    shm_size: str | None = Field(default=None, description="/dev/shm size per node (None: the node's default)")
    max_restarts: int = Field(default=0, ge=0, le=100, description="PyTorchJob backoffLimit (TrainJob: the runtime's)")
    termination_grace_s: int | None = Field(default=None, ge=1, description="pod terminationGracePeriodSeconds")
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, str] = Field(
        default_factory=dict,
        description="ENV_NAME -> 'secret-name/key': values taken from Kubernetes Secrets on the cluster",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="lineage labels (kfp run id, mlflow run id, ...); values sanitised"
    )
    kueue_queue: str | None = Field(
        default="auto",
        description=f"Kueue LocalQueue; 'auto': {DEFAULT_QUEUE} when gpu > 0 else {CPU_QUEUE}; None: no Kueue",
    )
    backend: Literal["local", "trainjob", "pytorchjob"] = "local"
    namespace: str | None = Field(
        default=None,
        description="namespace the cluster job goes to; None: $T2V_NAMESPACE, else this pod's, else kubeflow",
    )
    runtime_ref: str = Field(default=DEFAULT_RUNTIME, description="ClusterTrainingRuntime name (trainjob)")
    timeout_s: int = Field(default=7 * 24 * 3600, ge=1)
    node_selector: dict[str, str] | None = Field(
        default=None, description="None: the GPU pool when gpu > 0, else the CPU pool"
    )
    service_account: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return sanitize_name(v)

    @field_validator("module")
    @classmethod
    def _module(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", v):
            raise ValueError(f"module must be a dotted python module path, got {v!r}")
        return v

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, v: str) -> str:
        v = str(v)
        if not _QUANTITY_RE.match(v):
            raise ValueError(f"not a Kubernetes quantity: {v!r} (e.g. '8', '500m', '64Gi')")
        return v

    @field_validator("env", "secret_env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _ENV_NAME_RE.match(key):
                raise ValueError(f"invalid environment variable name {key!r}")
        return v

    @field_validator("env")
    @classmethod
    def _no_clear_secrets(cls, v: dict[str, str]) -> dict[str, str]:
        from t2v.secrets import SECRET_ENV

        clear = sorted(set(v) & set(SECRET_ENV))
        if clear:
            raise ValueError(f"env {clear} would be written in clear into the job; pass them as secret_env")
        return v

    @field_validator("secret_env")
    @classmethod
    def _secret_refs(cls, v: dict[str, str]) -> dict[str, str]:
        for key, ref in v.items():
            secret, _, item = ref.partition("/")
            if not secret or not item:
                raise ValueError(f"secret_env[{key!r}] must be 'secret-name/key', got {ref!r}")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for key, value in v.items():
            _check_label_key(key)
            out[key] = sanitize_label_value(value)
        return out

    @model_validator(mode="after")
    def _cross(self) -> LaunchSpec:
        if self.backend != "local" and not self.image:
            raise ValueError(f"backend {self.backend!r} needs an image")
        if self.kueue_queue == "auto":
            self.kueue_queue = DEFAULT_QUEUE if self.gpu > 0 else CPU_QUEUE
        if self.kueue_queue is not None:
            self.kueue_queue = sanitize_label_value(self.kueue_queue)
        if set(self.env) & set(self.secret_env):
            raise ValueError(f"env and secret_env both set {sorted(set(self.env) & set(self.secret_env))}")
        return self

    # derived pieces shared by both manifests
    def all_labels(self) -> dict[str, str]:
        labels = {
            "app.kubernetes.io/name": "t2v-train",
            "app.kubernetes.io/managed-by": "t2v-launcher",
            "t2v.dev/job": self.name,
        }
        labels.update(self.labels)
        if self.kueue_queue:
            labels[KUEUE_QUEUE_LABEL] = self.kueue_queue
        return labels

    def selected_nodes(self) -> dict[str, str]:
        if self.node_selector is not None:
            return dict(self.node_selector)
        return {GPU_POOL_LABEL: POOL_GPU if self.gpu > 0 else POOL_CPU}

    def tolerations(self) -> list[dict[str, Any]]:
        if self.gpu == 0 and self.selected_nodes().get(GPU_POOL_LABEL) != POOL_GPU:
            return []
        return [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}]

    def resources(self) -> dict[str, dict[str, str]]:
        res = {"cpu": self.cpu, "memory": self.memory}
        if self.gpu:
            res[GPU_RESOURCE] = str(self.gpu)
        return {"requests": dict(res), "limits": dict(res)}

    def env_list(self) -> list[dict[str, Any]]:
        """The container's environment. No credential is written in clear: a URI's userinfo is dropped,
        and a job that logs to a tracking server gets its MLflow identity from :data:`MLFLOW_CREDENTIALS_SECRET`
        (optional: a server without authentication needs none)."""
        from t2v.secrets import split_credentials

        out: list[dict[str, Any]] = []
        implied: dict[str, str] = {}
        for k, v in sorted(self.env.items()):
            clean, _, _ = split_credentials(str(v))
            if k == "MLFLOW_TRACKING_URI" and clean.startswith(("http://", "https://")):
                implied = {"MLFLOW_TRACKING_USERNAME": "username", "MLFLOW_TRACKING_PASSWORD": "password"}
            out.append({"name": k, "value": clean})
        for k, ref in sorted(self.secret_env.items()):
            secret, _, item = ref.partition("/")
            out.append({"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": item}}})
        for k, item in implied.items():
            if k not in self.secret_env and k not in self.env:
                ref = {"name": MLFLOW_CREDENTIALS_SECRET, "key": item, "optional": True}
                out.append({"name": k, "valueFrom": {"secretKeyRef": ref}})
        return out
