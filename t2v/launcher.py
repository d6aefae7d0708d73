"""Distributed-training launcher: one spec, three backends.

A training stage describes *what* to run in a :class:`LaunchSpec` (a Python module and its arguments,
how many nodes and processes, resources, lineage labels) and :func:`launch` runs it:

- ``local``      -- ``torchrun --standalone`` on this machine (gloo on CPU); the embedded default.
- ``trainjob``   -- a Kubeflow Trainer v2 ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) that references
                    a ``ClusterTrainingRuntime`` (``infra/addons/trainer``), queued by Kueue.
- ``pytorchjob`` -- a Training Operator ``PyTorchJob`` (``kubeflow.org/v1``), Master + Workers.

On the cluster the job runs the same command as locally, ``torchrun -m <module> <args...>``: the Trainer
and the Training Operator both inject the ``PET_*`` environment (nnodes, node rank, master address) that
torchrun reads. The built objects are checked by round-tripping them through the ``kubeflow_trainer_api``
pydantic models, so a misspelt or mistyped field fails here, before anything reaches the API server.

:func:`submit_and_wait` creates the object, polls its status conditions, logs progress, and deletes the job
on failure, timeout or interrupt ("fails loudly and cleans up"). This module knows nothing of MLflow: the
caller passes run ids in as lineage labels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger(__name__)

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
]

# --- cluster conventions (shared with infra/terraform, infra/addons and charts/; tests check they agree) ---
TRAINJOB_GROUP = "trainer.kubeflow.org"
TRAINJOB_VERSION = "v1alpha1"
TRAINJOB_PLURAL = "trainjobs"
PYTORCHJOB_GROUP = "kubeflow.org"
PYTORCHJOB_VERSION = "v1"
PYTORCHJOB_PLURAL = "pytorchjobs"

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
LINEAGE_KFP_RUN_LABEL = "t2v.dev/kfp-run-id"
LINEAGE_MLFLOW_RUN_LABEL = "t2v.dev/mlflow-run-id"
GPU_POOL_LABEL = "t2v.dev/pool"  # node label set on the Terraform node groups
POOL_GPU = "gpu"
POOL_CPU = "cpu"
GPU_TAINT_KEY = "nvidia.com/gpu"  # taint on the GPU node group: nvidia.com/gpu=present:NoSchedule
GPU_TAINT_VALUE = "present"
GPU_TAINT_EFFECT = "NoSchedule"
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_RUNTIME = "t2v-torch-distributed"  # ClusterTrainingRuntime in infra/addons/trainer
DEFAULT_QUEUE = "t2v-gpu"  # Kueue LocalQueue for GPU jobs in the pipelines namespace (infra/addons/kueue)
CPU_QUEUE = "t2v-cpu"  # Kueue LocalQueue for CPU-only jobs
TRAINER_NODE = "node"  # replicated job / container name of the torch runtime
PATCH_MANAGER = "t2v.dev/launcher"
PYTORCH_CONTAINER = "pytorch"  # the Training Operator requires this container name

_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUANTITY_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_NAME = 48  # JobSet/Job/Pod names get suffixes appended; keep the TrainJob name well under 63


class LaunchError(RuntimeError):
    """A launch failed; the message is one line naming the job and the reason."""


# --------------------------------------------------------------------------------------------------- names


def _short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def sanitize_label_value(value: Any) -> str:
    """Turn any value into a valid Kubernetes label value (<= 63 chars, alnum at both ends, [-_.A-Za-z0-9]).

    Invalid characters become ``-``; a value that has to be shortened keeps a hash of the original so two
    long ids stay distinct. The empty string is a valid label value and is kept.
    """
    text = str(value)
    if _LABEL_VALUE_RE.match(text) and len(text) <= 63:
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    if len(cleaned) > 63 or cleaned != text:
        digest = _short_hash(text)
        cleaned = cleaned[: 63 - len(digest) - 1].rstrip("-_.")
        cleaned = f"{cleaned}-{digest}" if cleaned else digest
    return cleaned


def _check_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    ok = bool(name) and len(name) <= 63 and _LABEL_NAME_RE.match(name) is not None
    if prefix:
        ok = ok and len(prefix) <= 253 and _DNS_SUBDOMAIN_RE.match(prefix) is not None
    if not ok:
        raise ValueError(f"invalid Kubernetes label key {key!r}")


def sanitize_name(name: str, max_len: int = _MAX_NAME) -> str:
    """A DNS-1123 label for the job's name: lowercase alnum and '-', at most ``max_len`` characters."""
    text = name.lower()
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text).strip("-")
    if not cleaned:
        raise ValueError(f"job name {name!r} has no usable characters")
    if not cleaned[0].isalpha():
        cleaned = "j-" + cleaned  # some controllers derive DNS names (services) that must start with a letter
    if len(cleaned) > max_len:
        digest = _short_hash(name, 6)
        cleaned = cleaned[: max_len - len(digest) - 1].rstrip("-") + "-" + digest
    return cleaned


# ---------------------------------------------------------------------------------------------------- spec


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
        out: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in sorted(self.env.items())]
        for k, ref in sorted(self.secret_env.items()):
            secret, _, item = ref.partition("/")
            out.append({"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": item}}})
        return out


# ----------------------------------------------------------------------------------------------- manifests


def torchrun_command(spec: LaunchSpec) -> list[str]:
    """The in-container command: torchrun picks nnodes/rank/master from the PET_* env the controller sets."""
    return ["torchrun", "-m", spec.module, *spec.args]


def _diff(want: Any, got: Any, path: str = "") -> str | None:
    if isinstance(want, dict) and isinstance(got, dict):
        for key in want:
            if key not in got:
                return f"{path}.{key}".lstrip(".") + " (unknown or dropped field)"
            d = _diff(want[key], got[key], f"{path}.{key}")
            if d:
                return d
        return None
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return f"{path} (list length {len(want)} != {len(got)})"
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            d = _diff(a, b, f"{path}[{i}]")
            if d:
                return d
        return None
    if want != got and not (isinstance(want, str) and isinstance(got, (int, float)) and str(got) == want):
        return f"{path} ({want!r} became {got!r})"
    return None


def _roundtrip(model_cls: Any, obj: dict[str, Any], what: str) -> None:
    """Parse ``obj`` with a generated API model and check nothing was dropped or coerced."""
    try:
        parsed = model_cls.from_dict(obj)
    except Exception as exc:  # pydantic.ValidationError and friends
        first = str(exc).strip().splitlines()
        raise LaunchError(
            f"{what} does not validate against {model_cls.__name__}: {' '.join(first[:3])}"
        ) from exc
    back = parsed.to_dict()
    problem = _diff(obj, back)
    if problem:
        raise LaunchError(f"{what} does not validate against {model_cls.__name__}: {problem}")


def validate_trainjob(obj: dict[str, Any]) -> None:
    """Validate a TrainJob dict with the ``kubeflow_trainer_api`` models (raises LaunchError)."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    if obj.get("apiVersion") != f"{TRAINJOB_GROUP}/{TRAINJOB_VERSION}" or obj.get("kind") != "TrainJob":
        raise LaunchError(
            f"not a {TRAINJOB_GROUP}/{TRAINJOB_VERSION} TrainJob: {obj.get('apiVersion')}/{obj.get('kind')}"
        )
    _roundtrip(TrainerV1alpha1TrainJob, obj, f"TrainJob {obj.get('metadata', {}).get('name')}")


def validate_pytorchjob(obj: dict[str, Any]) -> None:
    """Check a PyTorchJob's shape and validate each replica's pod template with the core/v1 models."""
    from kubeflow_trainer_api.models import (
        IoK8sApiCoreV1PodTemplateSpec,
        IoK8sApimachineryPkgApisMetaV1ObjectMeta,
    )

    name = obj.get("metadata", {}).get("name")
    if obj.get("apiVersion") != f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}" or obj.get("kind") != "PyTorchJob":
        raise LaunchError(f"not a kubeflow.org/v1 PyTorchJob: {obj.get('apiVersion')}/{obj.get('kind')}")
    _roundtrip(IoK8sApimachineryPkgApisMetaV1ObjectMeta, obj["metadata"], f"PyTorchJob {name} metadata")
    replicas = obj.get("spec", {}).get("pytorchReplicaSpecs", {})
    if set(replicas) - {"Master", "Worker"} or "Master" not in replicas:
        raise LaunchError(
            f"PyTorchJob {name}: replica types must be Master (+ Worker), got {sorted(replicas)}"
        )
    if replicas["Master"].get("replicas") != 1:
        raise LaunchError(f"PyTorchJob {name}: Master must have exactly 1 replica")
    for rtype, rspec in replicas.items():
        if rspec.get("restartPolicy") not in {"Always", "OnFailure", "Never", "ExitCode"}:
            raise LaunchError(f"PyTorchJob {name}: {rtype}.restartPolicy {rspec.get('restartPolicy')!r}")
        containers = rspec["template"]["spec"]["containers"]
        if not any(c.get("name") == PYTORCH_CONTAINER for c in containers):
            raise LaunchError(f"PyTorchJob {name}: {rtype} needs a container named {PYTORCH_CONTAINER!r}")
        _roundtrip(IoK8sApiCoreV1PodTemplateSpec, rspec["template"], f"PyTorchJob {name} {rtype} template")


def build_trainjob(spec: LaunchSpec) -> dict[str, Any]:
    """A Kubeflow Trainer v2 TrainJob for ``spec``, validated with the kubeflow_trainer_api models."""
    pod_patch: dict[str, Any] = {"nodeSelector": spec.selected_nodes()}
    if spec.tolerations():
        pod_patch["tolerations"] = spec.tolerations()
    if spec.service_account:
        pod_patch["serviceAccountName"] = spec.service_account
    lineage = {k: v for k, v in spec.all_labels().items() if k != KUEUE_QUEUE_LABEL}
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": torchrun_command(spec),
        "numNodes": spec.num_nodes,
        "numProcPerNode": spec.nproc_per_node,
        "resourcesPerNode": spec.resources(),
    }
    if spec.env or spec.secret_env:
        trainer["env"] = spec.env_list()
    obj: dict[str, Any] = {
        "apiVersion": f"{TRAINJOB_GROUP}/{TRAINJOB_VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": spec.name, "labels": spec.all_labels()},
        "spec": {
            "runtimeRef": {
                "apiGroup": TRAINJOB_GROUP,
                "kind": "ClusterTrainingRuntime",
                "name": spec.runtime_ref,
            },
            "activeDeadlineSeconds": spec.timeout_s,
            "trainer": trainer,
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": TRAINER_NODE,
                                        "template": {
                                            "spec": {
                                                "template": {
                                                    "metadata": {"labels": lineage},
                                                    "spec": pod_patch,
                                                }
                                            }
                                        },
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }
    validate_trainjob(obj)
    return obj


def _pod_template(spec: LaunchSpec) -> dict[str, Any]:
    lineage = {k: v for k, v in spec.all_labels().items() if k != KUEUE_QUEUE_LABEL}
    container: dict[str, Any] = {
        "name": PYTORCH_CONTAINER,
        "image": spec.image,
        "command": torchrun_command(spec),
        "resources": spec.resources(),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if spec.env or spec.secret_env:
        container["env"] = spec.env_list()
    pod: dict[str, Any] = {
        "containers": [container],
        "nodeSelector": spec.selected_nodes(),
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if spec.tolerations():
        pod["tolerations"] = spec.tolerations()
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    return {"metadata": {"labels": lineage}, "spec": pod}


def build_pytorchjob(spec: LaunchSpec) -> dict[str, Any]:
    """A Training Operator PyTorchJob (kubeflow.org/v1): one Master and ``num_nodes - 1`` Workers."""
    replicas: dict[str, Any] = {
        "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": _pod_template(spec)}
    }
    if spec.num_nodes > 1:
        replicas["Worker"] = {
            "replicas": spec.num_nodes - 1,
            "restartPolicy": "OnFailure",
            "template": _pod_template(spec),
        }
    obj = {
        "apiVersion": f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}",
        "kind": "PyTorchJob",
        "metadata": {"name": spec.name, "labels": spec.all_labels()},
        "spec": {
            "nprocPerNode": str(spec.nproc_per_node),
            "runPolicy": {
                "activeDeadlineSeconds": spec.timeout_s,
                "backoffLimit": 0,
                "cleanPodPolicy": "None",
            },
            "pytorchReplicaSpecs": replicas,
        },
    }
    validate_pytorchjob(obj)
    return obj


def build_manifest(spec: LaunchSpec) -> dict[str, Any]:
    if spec.backend == "trainjob":
        return build_trainjob(spec)
    if spec.backend == "pytorchjob":
        return build_pytorchjob(spec)
    raise LaunchError(f"job {spec.name}: backend 'local' has no Kubernetes manifest")


# --------------------------------------------------------------------------------------------------- local


def _torchrun_exe() -> list[str]:
    exe = Path(sys.executable).parent / "torchrun"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "torch.distributed.run"]


def run_local(spec: LaunchSpec, *, stream: Any = None) -> int:
    """Run ``spec`` with ``torchrun --standalone`` on this machine; stream its output; 0 or LaunchError."""
    if spec.num_nodes > 1:
        log.warning("job %s: local backend runs 1 node (spec asks for %d)", spec.name, spec.num_nodes)
    cmd = [
        *_torchrun_exe(),
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(spec.nproc_per_node),
        "-m",
        spec.module,
        *spec.args,
    ]
    env = dict(os.environ)
    env.update(spec.env)
    missing = [k for k in spec.secret_env if k not in env]
    if missing:
        log.warning("job %s: secret_env %s not set in the local environment", spec.name, missing)
    env.setdefault("PYTHONUNBUFFERED", "1")
    out = stream if stream is not None else sys.stdout
    tail: deque[str] = deque(maxlen=20)
    root_cause: str | None = None  # first "[rankN]: SomeError: message" line: the worker's own exception
    log.info("job %s: %s", spec.name, " ".join(cmd))
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )
    timed_out = threading.Event()

    def _kill_on_timeout() -> None:
        if proc.poll() is None:
            timed_out.set()
            _kill_group(proc)

    timer = threading.Timer(spec.timeout_s, _kill_on_timeout)
    timer.daemon = True
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            out.flush()
            if line.strip():
                tail.append(line.rstrip())
                if root_cause is None and _RANK_ERROR_RE.match(line):
                    root_cause = line.strip()[:300]
        rc = proc.wait()
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        timer.cancel()
    elapsed = time.monotonic() - start
    if timed_out.is_set():
        raise LaunchError(f"job {spec.name}: torchrun timed out after {spec.timeout_s}s and was killed")
    if rc != 0:
        last = root_cause or _last_error_line(tail)
        raise LaunchError(f"job {spec.name}: torchrun -m {spec.module} exited with code {rc}: {last}")
    log.info("job %s: torchrun finished in %.1fs", spec.name, elapsed)
    return rc


_RANK_ERROR_RE = re.compile(r"^\[(default)?rank\d+\]:\s*[\w.]+(Error|Exception|Interrupt)\b")


def _last_error_line(tail: deque[str]) -> str:
    for line in reversed(tail):
        if re.search(r"\w(Error|Exception): \S", line):
            return line.strip()[:300]
    return tail[-1].strip()[:300] if tail else "(no output)"


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


# ------------------------------------------------------------------------------------------------- cluster


@dataclass
class JobStatus:
    """Final state of a cluster job."""

    name: str
    namespace: str
    kind: str
    state: Literal["Succeeded", "Failed", "TimedOut", "Interrupted"]
    reason: str = ""
    message: str = ""
    elapsed_s: float = 0.0
    conditions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.state == "Succeeded"


_API = {
    "trainjob": (TRAINJOB_GROUP, TRAINJOB_VERSION, TRAINJOB_PLURAL, "TrainJob"),
    "pytorchjob": (PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL, "PyTorchJob"),
}
# condition type -> terminal state (TrainJob: Complete/Failed; PyTorchJob: Succeeded/Failed)
_TERMINAL = {"Complete": "Succeeded", "Succeeded": "Succeeded", "Failed": "Failed"}
_POD_SELECTOR = {
    "trainjob": "jobset.sigs.k8s.io/jobset-name={name}",
    "pytorchjob": "training.kubeflow.org/job-name={name}",
}


def _default_clients() -> tuple[Any, Any]:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi(), client.CoreV1Api()


def _status_code(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())[:400]


def submit_and_wait(
    spec: LaunchSpec,
    namespace: str,
    poll_s: float = 15.0,
    kube_client: Any = None,
    *,
    core_client: Any = None,
    max_api_errors: int = 5,
) -> JobStatus:
    """Create the TrainJob/PyTorchJob, wait for a terminal condition, return its JobStatus.

    ``kube_client`` is a ``kubernetes.client.CustomObjectsApi`` (or anything with its create/get/delete
    methods); by default one is built from the in-cluster or kubeconfig credentials. On failure, timeout
    (``spec.timeout_s``, queueing included) or KeyboardInterrupt the job is deleted before the error is raised.
    """
    if spec.backend not in _API:
        raise LaunchError(
            f"job {spec.name}: submit_and_wait needs backend trainjob or pytorchjob, not {spec.backend!r}"
        )
    group, version, plural, kind = _API[spec.backend]
    body = build_manifest(spec)
    body["metadata"]["namespace"] = namespace
    if kube_client is None:
        kube_client, default_core = _default_clients()
        core_client = core_client or default_core
    name = spec.name
    where = f"{kind} {namespace}/{name}"

    try:
        kube_client.create_namespaced_custom_object(group, version, namespace, plural, body)
    except Exception as exc:
        code = _status_code(exc)
        hint = " (a job of that name exists: use a unique name per run)" if code == 409 else ""
        raise LaunchError(f"{where}: create failed{hint}: {_one_line(getattr(exc, 'reason', exc))}") from exc
    log.info(
        "%s created (queue=%s, %d node(s) x %d proc)",
        where,
        spec.kueue_queue,
        spec.num_nodes,
        spec.nproc_per_node,
    )

    start = time.monotonic()
    seen: set[tuple[str, str, str]] = set()
    last_progress: Any = None
    api_errors = 0
    conditions: list[dict[str, Any]] = []
    next_heartbeat = start + max(60.0, 4 * poll_s)

    def cleanup(why: str) -> None:
        _tail_pod_logs(core_client, spec.backend, namespace, name)
        try:
            kube_client.delete_namespaced_custom_object(
                group, version, namespace, plural, name, propagation_policy="Background"
            )
            log.warning("%s deleted (%s)", where, why)
        except Exception as exc:
            if _status_code(exc) != 404:
                log.error("%s: delete failed after %s: %s", where, why, _one_line(exc))

    try:
        while True:
            elapsed = time.monotonic() - start
            try:
                obj = kube_client.get_namespaced_custom_object(group, version, namespace, plural, name)
                api_errors = 0
            except Exception as exc:
                if _status_code(exc) == 404:
                    raise LaunchError(
                        f"{where} disappeared while waiting (deleted by someone else?)"
                    ) from exc
                api_errors += 1
                log.warning(
                    "%s: status read failed (%d/%d): %s", where, api_errors, max_api_errors, _one_line(exc)
                )
                if api_errors >= max_api_errors:
                    cleanup("API errors")
                    raise LaunchError(
                        f"{where}: {api_errors} API errors in a row, job deleted: {_one_line(exc)}"
                    ) from exc
                obj = None
            if obj is not None:
                status = obj.get("status") or {}
                conditions = list(status.get("conditions") or [])
                for cond in conditions:
                    key = (cond.get("type", ""), cond.get("status", ""), cond.get("reason", ""))
                    if key not in seen:
                        seen.add(key)
                        log.info(
                            "%s [%5.0fs] condition %s=%s %s %s",
                            where,
                            elapsed,
                            key[0],
                            key[1],
                            key[2],
                            _one_line(cond.get("message", "")),
                        )
                progress = status.get("trainerStatus")
                if progress and progress != last_progress:
                    last_progress = progress
                    log.info(
                        "%s [%5.0fs] progress %s%% eta %ss",
                        where,
                        elapsed,
                        progress.get("progressPercentage", "?"),
                        progress.get("estimatedRemainingSeconds", "?"),
                    )
                for cond in conditions:
                    state = _TERMINAL.get(cond.get("type", ""))
                    if state and cond.get("status") == "True":
                        result = JobStatus(
                            name=name,
                            namespace=namespace,
                            kind=kind,
                            state=state,
                            reason=cond.get("reason", ""),
                            message=_one_line(cond.get("message", "")),
                            elapsed_s=elapsed,
                            conditions=conditions,
                        )
                        if state == "Succeeded":
                            log.info("%s succeeded in %.0fs", where, elapsed)
                            return result
                        cleanup("failed")
                        raise LaunchError(
                            f"{where} failed after {elapsed:.0f}s: {result.reason or 'Failed'}: {result.message}"
                        )
            if elapsed >= spec.timeout_s:
                cleanup("timeout")
                raise LaunchError(f"{where} timed out after {spec.timeout_s}s, job deleted")
            now = time.monotonic()
            if now >= next_heartbeat:
                active = [c.get("type") for c in conditions if c.get("status") == "True"] or ["Pending"]
                log.info("%s [%5.0fs] still waiting (%s)", where, elapsed, ",".join(map(str, active)))
                next_heartbeat = now + max(60.0, 4 * poll_s)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        cleanup("interrupted")
        raise


def _tail_pod_logs(core_client: Any, backend: str, namespace: str, name: str, lines: int = 50) -> None:
    """Best effort: log the last lines of the job's first pod (rank 0) before it is deleted."""
    if core_client is None:
        return
    try:
        pods = core_client.list_namespaced_pod(
            namespace, label_selector=_POD_SELECTOR[backend].format(name=name)
        )
        items = sorted(pods.items, key=lambda p: p.metadata.name)
        if not items:
            return
        pod = items[0].metadata.name
        text = core_client.read_namespaced_pod_log(pod, namespace, tail_lines=lines)
        for line in str(text).splitlines():
            log.error("[%s] %s", pod, line)
    except Exception as exc:  # logs are a courtesy; never mask the real error
        log.debug("could not read logs of %s: %s", name, exc)


# -------------------------------------------------------------------------------------------------- launch


def _default_namespace() -> str:
    env = os.environ.get("T2V_NAMESPACE")
    if env:
        return env
    sa_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if sa_ns.exists():
        return sa_ns.read_text().strip()
    return "kubeflow"


def launch(
    spec: LaunchSpec, *, namespace: str | None = None, poll_s: float = 15.0, kube_client: Any = None
) -> None:
    """Run ``spec`` with its backend; returns when the training finished, raises LaunchError otherwise."""
    if spec.backend == "local":
        run_local(spec)
        return
    submit_and_wait(spec, namespace or _default_namespace(), poll_s=poll_s, kube_client=kube_client)
