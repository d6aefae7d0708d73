"""The cluster job's manifest: a Kubeflow Trainer ``TrainJob`` or a Training Operator ``PyTorchJob``.

On the cluster the job runs the same command as locally, ``torchrun -m <module> <args...>``: the Trainer
and the Training Operator both inject the ``PET_*`` environment (nnodes, node rank, master address) that
torchrun reads. The built objects are checked by round-tripping them through the ``kubeflow_trainer_api``
pydantic models, so a misspelt or mistyped field fails here, before anything reaches the API server.
"""

from __future__ import annotations

from typing import Any

from t2v.launch.naming import (
    KUEUE_QUEUE_LABEL,
    PATCH_MANAGER,
    PYTORCH_CONTAINER,
    PYTORCHJOB_GROUP,
    PYTORCHJOB_VERSION,
    TRAINER_NODE,
    TRAINJOB_GROUP,
    TRAINJOB_VERSION,
)
from t2v.launch.spec import LaunchError, LaunchSpec


def build_manifest(spec: LaunchSpec) -> dict[str, Any]:
    if spec.backend == "trainjob":
        return build_trainjob(spec)
    if spec.backend == "pytorchjob":
        return build_pytorchjob(spec)
    raise LaunchError(f"job {spec.name}: backend 'local' has no Kubernetes manifest")


def torchrun_command(spec: LaunchSpec) -> list[str]:
    """The in-container command: torchrun picks nnodes/rank/master from the PET_* env the controller sets."""
    return ["torchrun", "-m", spec.module, *spec.args]


def build_trainjob(spec: LaunchSpec) -> dict[str, Any]:
    """A Kubeflow Trainer v2 TrainJob for ``spec``, validated with the kubeflow_trainer_api models."""
    pod_patch: dict[str, Any] = {"nodeSelector": spec.selected_nodes()}
    if spec.shm_size:  # merged by name into the runtime's dshm volume
        pod_patch["volumes"] = [_shm_volume(spec)]
    if spec.termination_grace_s:
        pod_patch["terminationGracePeriodSeconds"] = spec.termination_grace_s
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


def _shm_volume(spec: LaunchSpec) -> dict[str, Any]:
    empty_dir: dict[str, Any] = {"medium": "Memory"}
    if spec.shm_size:
        empty_dir["sizeLimit"] = spec.shm_size
    return {"name": "dshm", "emptyDir": empty_dir}


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
        "volumes": [_shm_volume(spec)],
    }
    if spec.termination_grace_s:
        pod["terminationGracePeriodSeconds"] = spec.termination_grace_s
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
                "backoffLimit": spec.max_restarts,  # each restart resumes from the latest checkpoint
                "cleanPodPolicy": "None",
            },
            "pytorchReplicaSpecs": replicas,
        },
    }
    validate_pytorchjob(obj)
    return obj


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
