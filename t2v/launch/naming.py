"""Names shared by the launcher and the cluster: API groups, labels, pools, queues; Kubernetes-safe names.

Standard library only, so :mod:`t2v.config` can import these constants without pulling in the launcher.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

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
