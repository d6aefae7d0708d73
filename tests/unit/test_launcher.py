"""Launcher: manifests checked by the real kubeflow_trainer_api models and Kubernetes schemas, real torchrun
with two gloo processes, and submit_and_wait against a scripted CustomObjectsApi (no API server runs here)."""

from __future__ import annotations

import copy
import logging
import re
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from t2v.launch import (
    CPU_QUEUE,
    DEFAULT_QUEUE,
    GPU_POOL_LABEL,
    KUEUE_QUEUE_LABEL,
    LINEAGE_KFP_RUN_LABEL,
    LINEAGE_MLFLOW_RUN_LABEL,
    LaunchError,
    LaunchSpec,
    build_pytorchjob,
    build_trainjob,
    launch,
    run_local,
    sanitize_label_value,
    submit_and_wait,
    validate_trainjob,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
K8S_VERSION = "1.33.0"  # the cluster version infra/terraform pins
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def gpu_spec(**kw) -> LaunchSpec:
    base = dict(
        name="t2v-stage-run-0a1b",
        image="registry.example.com/t2v:cuda-abc123",
        module="components.train_t2v.stage",
        args=["--config", "configs/step-video-t2v-30b/train.yaml"],
        num_nodes=4,
        nproc_per_node=8,
        cpu="96",
        memory="1800Gi",
        gpu=8,
        env={"NCCL_DEBUG": "WARN"},
        secret_env={"AWS_SECRET_ACCESS_KEY": "t2v-s3/secret-key"},
        labels={LINEAGE_KFP_RUN_LABEL: "7c1f0b3e-run", LINEAGE_MLFLOW_RUN_LABEL: "0f3e9a"},
        backend="trainjob",
    )
    base.update(kw)
    return LaunchSpec(**base)


def k8s_validate(obj: dict) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# ----------------------------------------------------------------------------------------------- manifests


def test_trainjob_is_valid_for_the_trainer_api_models():
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    spec = gpu_spec()
    obj = build_trainjob(spec)
    assert obj["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and obj["kind"] == "TrainJob"
    model = TrainerV1alpha1TrainJob.from_dict(obj)
    assert model.spec.runtime_ref.name == "t2v-torch-distributed"
    assert model.spec.trainer.num_nodes == 4 and model.spec.trainer.num_proc_per_node == 8
    assert model.spec.trainer.command == ["torchrun", "-m", spec.module, *spec.args]
    assert obj["spec"]["activeDeadlineSeconds"] == spec.timeout_s
    labels = obj["metadata"]["labels"]
    assert labels[KUEUE_QUEUE_LABEL] == "t2v-gpu"
    assert labels[LINEAGE_KFP_RUN_LABEL] == "7c1f0b3e-run" and labels[LINEAGE_MLFLOW_RUN_LABEL] == "0f3e9a"
    patch = obj["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod = patch["template"]["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {GPU_POOL_LABEL: "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    assert pod["metadata"]["labels"][LINEAGE_MLFLOW_RUN_LABEL] == "0f3e9a"
    assert KUEUE_QUEUE_LABEL not in pod["metadata"]["labels"]


def test_trainjob_pieces_are_valid_kubernetes():
    """The trainer container and pod patch, assembled as the runtime will, pass the Kubernetes schema."""
    obj = build_trainjob(gpu_spec())
    trainer = obj["spec"]["trainer"]
    patch = obj["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod_patch = patch["template"]["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": obj["metadata"]["name"] + "-node-0-0", "labels": obj["metadata"]["labels"]},
        "spec": {
            **pod_patch["spec"],
            "containers": [
                {
                    "name": "node",
                    "image": trainer["image"],
                    "command": trainer["command"],
                    "env": trainer["env"],
                    "resources": trainer["resourcesPerNode"],
                }
            ],
        },
    }
    k8s_validate(pod)


def test_trainjob_validation_catches_a_misspelt_field():
    obj = build_trainjob(gpu_spec())
    bad = copy.deepcopy(obj)
    bad["spec"]["trainer"]["numProcsPerNode"] = 8  # not a field
    with pytest.raises(LaunchError, match="numProcsPerNode"):
        validate_trainjob(bad)
    bad = copy.deepcopy(obj)
    bad["spec"]["trainer"]["numNodes"] = "four"
    with pytest.raises(LaunchError, match="TrainerV1alpha1TrainJob"):
        validate_trainjob(bad)
    bad = copy.deepcopy(obj)
    del bad["spec"]["runtimeRef"]["name"]
    with pytest.raises(LaunchError):
        validate_trainjob(bad)


def test_pytorchjob_master_and_workers_validate():
    spec = gpu_spec(backend="pytorchjob")
    obj = build_pytorchjob(spec)
    assert obj["apiVersion"] == "kubeflow.org/v1" and obj["kind"] == "PyTorchJob"
    reps = obj["spec"]["pytorchReplicaSpecs"]
    assert reps["Master"]["replicas"] == 1 and reps["Worker"]["replicas"] == 3
    assert obj["spec"]["nprocPerNode"] == "8"
    assert obj["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "t2v-gpu"
    for rtype in ("Master", "Worker"):
        template = reps[rtype]["template"]
        assert template["spec"]["containers"][0]["name"] == "pytorch"
        assert template["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
        k8s_validate(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": f"x-{rtype.lower()}"},
                "template": template,
            }
        )
    single = build_pytorchjob(gpu_spec(backend="pytorchjob", num_nodes=1))
    assert set(single["spec"]["pytorchReplicaSpecs"]) == {"Master"}


def test_cpu_job_goes_to_the_cpu_pool_without_gpu_toleration():
    obj = build_pytorchjob(gpu_spec(backend="pytorchjob", gpu=0, kueue_queue=None, secret_env={}))
    pod = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert pod["nodeSelector"] == {GPU_POOL_LABEL: "cpu"}
    assert "tolerations" not in pod
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert KUEUE_QUEUE_LABEL not in obj["metadata"]["labels"]
    auto = gpu_spec(backend="pytorchjob", gpu=0)
    assert auto.kueue_queue == CPU_QUEUE and gpu_spec().kueue_queue == DEFAULT_QUEUE


def test_invalid_label_values_are_sanitised():
    ugly = "kfp run/2025-01-01T00:00:00Z with spaces & " + "x" * 80
    spec = gpu_spec(labels={LINEAGE_KFP_RUN_LABEL: ugly, LINEAGE_MLFLOW_RUN_LABEL: "-abc-"})
    value = spec.labels[LINEAGE_KFP_RUN_LABEL]
    assert LABEL_VALUE.match(value) and len(value) <= 63
    assert value.startswith("kfp-run-2025-01-01T00-00-00Z-with-spaces")
    assert LABEL_VALUE.match(spec.labels[LINEAGE_MLFLOW_RUN_LABEL])
    # two long ids that share a prefix stay distinct, and valid values are untouched
    assert sanitize_label_value("a" * 70 + "1") != sanitize_label_value("a" * 70 + "2")
    assert sanitize_label_value("0f3e9a_ok.1") == "0f3e9a_ok.1"
    assert sanitize_label_value("") == ""
    k8s_validate(
        build_pytorchjob(gpu_spec(backend="pytorchjob", labels={LINEAGE_KFP_RUN_LABEL: ugly}))["spec"][
            "pytorchReplicaSpecs"
        ]["Master"]["template"]
        | {"apiVersion": "v1", "kind": "Pod"}
        | {"metadata": {"name": "p", "labels": spec.all_labels()}}
    )


def test_spec_rejects_bad_values_naming_the_field():
    with pytest.raises(ValidationError, match="memory"):
        gpu_spec(memory="lots")
    with pytest.raises(ValidationError, match="nproc_per_node"):
        gpu_spec(nproc_per_node=0)
    with pytest.raises(ValidationError, match="label key"):
        gpu_spec(labels={"bad key!": "x"})
    with pytest.raises(ValidationError, match="image"):
        gpu_spec(image="")
    with pytest.raises(ValidationError, match="secret-name/key"):
        gpu_spec(secret_env={"TOKEN": "no-key"})
    with pytest.raises(ValidationError, match="backend"):
        gpu_spec(backend="slurm")
    long = gpu_spec(name="Step_Video/T2V " + "stage-" * 20)
    assert re.match(r"^[a-z][a-z0-9-]*[a-z0-9]$", long.name) and len(long.name) <= 48


# --------------------------------------------------------------------------------------------------- local


def local_spec(tmp_path: Path, *extra: str) -> LaunchSpec:
    return LaunchSpec(
        name="allreduce",
        module="dist_allreduce",
        args=[str(tmp_path), *extra],
        nproc_per_node=2,
        env={"PYTHONPATH": str(FIXTURES)},
        timeout_s=240,
    )


def test_run_local_runs_torchrun_with_two_gloo_processes(tmp_path, capfd):
    assert (Path(sys.executable).parent / "torchrun").exists()
    assert run_local(local_spec(tmp_path)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.txt", "rank1.txt"]
    for p in tmp_path.iterdir():
        assert p.read_text().split() == ["2", "3"]  # world size 2, sum of (rank + 1)
    out = capfd.readouterr().out
    assert "rank 0/2: all_reduce ok" in out and "rank 1/2: all_reduce ok" in out  # streamed


def test_run_local_failure_raises_one_line_launch_error(tmp_path):
    with pytest.raises(LaunchError) as err:
        launch(local_spec(tmp_path, "--fail-rank", "1"))
    msg = str(err.value)
    assert "\n" not in msg
    assert "exited with code" in msg and "planted failure on rank 1" in msg


# ------------------------------------------------------------------------------------------------- cluster


class ApiError(Exception):
    def __init__(self, status: int, reason: str = ""):
        super().__init__(f"({status}) {reason}")
        self.status, self.reason = status, reason


class ScriptedCustomObjectsApi:
    """Stands in for kubernetes.client.CustomObjectsApi: each get returns the next scripted status."""

    def __init__(self, statuses: list, create_error: Exception | None = None):
        self.statuses = list(statuses)
        self.create_error = create_error
        self.created: list[tuple] = []
        self.deleted: list[tuple] = []
        self.gets = 0
        self.objects: dict[str, dict] = {}

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kw):
        if self.create_error:
            raise self.create_error
        assert body["metadata"]["namespace"] == namespace
        self.created.append((group, version, namespace, plural, copy.deepcopy(body)))
        self.objects[body["metadata"]["name"]] = copy.deepcopy(body)
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):
        self.gets += 1
        step = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(step, BaseException):
            raise step
        if name not in self.objects:
            raise ApiError(404, "NotFound")
        return {**self.objects[name], "status": step}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):
        self.deleted.append((group, version, namespace, plural, name, kw))
        self.objects.pop(name, None)
        return {}


def cond(type_: str, status: str = "True", reason: str = "", message: str = "") -> dict:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }


def test_submit_and_wait_trainjob_success(caplog):
    api = ScriptedCustomObjectsApi(
        [
            {},
            {"conditions": [cond("Suspended", reason="Suspended", message="waiting for Kueue admission")]},
            {
                "conditions": [cond("Suspended", "False", "Resumed")],
                "trainerStatus": {"progressPercentage": 40, "estimatedRemainingSeconds": 600},
            },
            {"conditions": [cond("Suspended", "False", "Resumed"), cond("Complete", reason="JobsCompleted")]},
        ]
    )
    with caplog.at_level(logging.INFO, logger="t2v.launch"):
        status = submit_and_wait(gpu_spec(), "kubeflow", poll_s=0, kube_client=api)
    assert status.succeeded and status.kind == "TrainJob" and status.reason == "JobsCompleted"
    group, version, ns, plural, body = api.created[0]
    assert (group, version, ns, plural) == ("trainer.kubeflow.org", "v1alpha1", "kubeflow", "trainjobs")
    validate_trainjob({k: v for k, v in body.items()})
    assert api.deleted == []  # a finished job is left for inspection
    text = caplog.text
    assert "waiting for Kueue admission" in text and "progress 40%" in text and "succeeded" in text


def test_submit_and_wait_pytorchjob_failure_deletes_the_job():
    api = ScriptedCustomObjectsApi(
        [
            {"conditions": [cond("Created", reason="PyTorchJobCreated")]},
            {"conditions": [cond("Running", reason="PyTorchJobRunning")]},
            {
                "conditions": [
                    cond("Running", "False"),
                    cond(
                        "Failed",
                        reason="PyTorchJobFailed",
                        message="PyTorchJob x is failed because 1 Master replica(s) failed.",
                    ),
                ]
            },
        ]
    )
    with pytest.raises(LaunchError) as err:
        submit_and_wait(gpu_spec(backend="pytorchjob"), "team-a", poll_s=0, kube_client=api)
    msg = str(err.value)
    assert "\n" not in msg and "PyTorchJobFailed" in msg and "team-a/" in msg
    assert api.created[0][:4] == ("kubeflow.org", "v1", "team-a", "pytorchjobs")
    assert [d[:5] for d in api.deleted] == [
        ("kubeflow.org", "v1", "team-a", "pytorchjobs", "t2v-stage-run-0a1b")
    ]


def test_submit_and_wait_timeout_deletes_the_job():
    api = ScriptedCustomObjectsApi([{"conditions": [cond("Suspended", reason="Suspended")]}])
    with pytest.raises(LaunchError, match="timed out"):
        submit_and_wait(gpu_spec(timeout_s=1), "kubeflow", poll_s=0.2, kube_client=api)
    assert len(api.deleted) == 1 and api.gets >= 2


def test_submit_and_wait_interrupt_deletes_the_job():
    api = ScriptedCustomObjectsApi([{}, KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        submit_and_wait(gpu_spec(), "kubeflow", poll_s=0, kube_client=api)
    assert len(api.deleted) == 1


def test_submit_and_wait_tolerates_transient_api_errors_then_gives_up():
    api = ScriptedCustomObjectsApi([ApiError(503), {"conditions": [cond("Complete")]}])
    assert submit_and_wait(gpu_spec(), "kubeflow", poll_s=0, kube_client=api).succeeded
    api = ScriptedCustomObjectsApi([ApiError(500, "boom")])
    with pytest.raises(LaunchError, match="API errors"):
        submit_and_wait(gpu_spec(), "kubeflow", poll_s=0, kube_client=api, max_api_errors=3)
    assert len(api.deleted) == 1


def test_submit_conflict_is_a_clear_error():
    api = ScriptedCustomObjectsApi([{}], create_error=ApiError(409, "AlreadyExists"))
    with pytest.raises(LaunchError, match="unique name"):
        submit_and_wait(gpu_spec(), "kubeflow", poll_s=0, kube_client=api)
    assert api.deleted == []  # not ours: never delete a job we did not create


def test_launch_dispatches_cluster_backends():
    api = ScriptedCustomObjectsApi([{"conditions": [cond("Succeeded", reason="PyTorchJobSucceeded")]}])
    launch(gpu_spec(backend="pytorchjob"), namespace="kubeflow", poll_s=0, kube_client=api)
    assert api.created[0][3] == "pytorchjobs"


def test_spec_namespace_is_where_submit_and_wait_creates_the_job(monkeypatch):
    monkeypatch.setenv("T2V_NAMESPACE", "elsewhere")  # the default namespace, which spec.namespace overrides
    api = ScriptedCustomObjectsApi([{"conditions": [cond("Complete", reason="JobsCompleted")]}])
    status = submit_and_wait(gpu_spec(namespace="team-a"), poll_s=0, kube_client=api)
    assert status.succeeded and status.namespace == "team-a"
    assert api.created[0][2] == "team-a" and api.created[0][4]["metadata"]["namespace"] == "team-a"
    api = ScriptedCustomObjectsApi([{"conditions": [cond("Complete", reason="JobsCompleted")]}])
    submit_and_wait(gpu_spec(namespace="team-a"), "team-b", poll_s=0, kube_client=api)  # an explicit one wins
    assert api.created[0][2] == "team-b"
    api = ScriptedCustomObjectsApi([{"conditions": [cond("Complete", reason="JobsCompleted")]}])
    launch(gpu_spec(namespace="team-a"), poll_s=0, kube_client=api)
    assert api.created[0][2] == "team-a"


TORCHRUN_SUMMARY_RANK0_KILLED = """\
[rank1]: RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection reset by peer
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
======================================================
trainer.train FAILED
------------------------------------------------------
Failures:
[1]:
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 6984)
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-01_11:25:41
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -9 (pid: 6983)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 6983
======================================================
"""


def test_the_failure_names_the_rank_that_failed_first_not_the_ones_torn_down_after_it():
    from t2v.launch.local import _RootCause

    cause = _RootCause()
    for line in TORCHRUN_SUMMARY_RANK0_KILLED.splitlines(keepends=True):
        cause.feed(line)
    assert cause.describe() == "rank 0 was killed by SIGKILL (out of memory, or killed from outside)"

    raised = _RootCause()
    for line in [
        "[rank1]: RuntimeError: Connection reset by peer\n",
        "[rank0]: ValueError: bad batch\n",
        "Root Cause (first observed failure):\n",
        "  rank      : 0 (local_rank: 0)\n",
        "  exitcode  : 1 (pid: 5)\n",
        "=====\n",
    ]:
        raised.feed(line)
    assert raised.describe() == "[rank0]: ValueError: bad batch"


def test_shm_restarts_and_grace_period_reach_both_job_kinds():
    spec = gpu_spec(shm_size="64Gi", max_restarts=3, termination_grace_s=300)
    pod_patch = build_trainjob(spec)["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod_patch["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}}]
    assert pod_patch["terminationGracePeriodSeconds"] == 300
    job = build_pytorchjob(gpu_spec(backend="pytorchjob", shm_size="64Gi", max_restarts=3, termination_grace_s=300))
    assert job["spec"]["runPolicy"]["backoffLimit"] == 3
    for rtype in ("Master", "Worker"):
        template = job["spec"]["pytorchReplicaSpecs"][rtype]["template"]
        assert template["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == "64Gi"
        assert template["spec"]["terminationGracePeriodSeconds"] == 300
        k8s_validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"x-{rtype.lower()}"}, "template": template})


def test_the_training_component_launches_with_the_stage_resources(monkeypatch, tmp_path):
    """The t2v component's LaunchSpec carries the stage's GPUs, CPU, memory, shm and restarts."""
    from components.train_dit import stage as train_stage
    from t2v.config import load_config

    config = load_config("step-video-t2v-30b")
    seen = {}

    class Stop(Exception):
        pass

    def fake_launch(spec):
        seen["spec"] = spec
        raise Stop

    class Run:
        name, run_id, uri = "t2v", "abc", str(tmp_path)

        class ctx:
            run_name = "r1"
            tracking_uri = "sqlite:///x.db"

    Run.ctx.config = config
    monkeypatch.setattr("components.framework.training.launch", fake_launch)
    monkeypatch.setattr("mlflow.log_params", lambda params: seen.setdefault("params", {}).update(params))
    with pytest.raises(Stop):
        train_stage._train(Run, latents={"files": {}})
    spec = seen["spec"]
    assert (spec.gpu, spec.nproc_per_node, spec.num_nodes) == (8, 8, 16)
    assert (spec.cpu, spec.memory, spec.shm_size, spec.max_restarts) == ("16", "200Gi", "64Gi", 3)
    assert spec.image.endswith("cuda") or "cuda" in spec.image
    assert seen["params"]["plan.memory_per_gpu_gib"] < 76  # the shipped plan fits an H100-80GB


def test_the_training_component_refuses_a_plan_that_does_not_fit(monkeypatch, tmp_path):
    from components.train_dit import stage as train_stage
    from t2v.config import load_config
    from t2v.errors import StageError

    class Run:
        name, run_id, uri = "t2v", "abc", str(tmp_path)

        class ctx:
            run_name = "r1"
            tracking_uri = "sqlite:///x.db"

    Run.ctx.config = load_config("step-video-t2v-30b", ["t2v.parallel.sequence_parallel=1"])
    monkeypatch.setattr("components.framework.training.launch", lambda spec: pytest.fail("launched a plan that does not fit"))
    with pytest.raises(StageError, match="does not fit cluster.gpu_type=h100-80gb"):
        train_stage._train(Run, latents={"files": {}})


def test_the_training_state_folder_follows_the_trajectory_not_how_it_runs():
    from components.framework.training import train_state_uri
    from t2v.config import load_config

    latents = {"files": {"shards/latents-00000.tar": {"uri": "s3://b/x.tar", "sha256": "ab"}}}

    def where(*overrides, init=None, data=latents):
        return train_state_uri("s3://b/run/t2i", load_config("tiny", list(overrides)), "t2i", init, data)

    same = where()
    assert same.startswith("s3://b/run/t2i/train_state/") and same == where()
    # another layout with the same global batch (2 ranks x 16 = 1 rank x 32), checkpoint cadence, logging
    assert where("t2i.nproc_per_node=1", "t2i.batch_size=32", "t2i.checkpoint.every_steps=50", "t2i.log_every=5") == same
    # what changes the trajectory starts a new state
    assert where("t2i.seed=11") != same
    assert where("t2i.nproc_per_node=1") != same  # global batch 16, not 32
    assert where(init="s3://b/other/checkpoint") != same
    assert where(data={"files": {"shards/latents-00000.tar": {"uri": "s3://b/x.tar", "sha256": "cd"}}}) != same
