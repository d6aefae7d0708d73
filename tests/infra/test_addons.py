"""infra/addons: every manifest parses, kustomizations reference what exists and pin their remote bases, the
Trainer runtime validates with the kubeflow-trainer-api models, and Kueue/Terraform/launcher agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from t2v.launch import naming
from t2v.launch.manifests import _roundtrip

ROOT = Path(__file__).resolve().parents[2]
ADDONS = ROOT / "infra" / "addons"
YAMLS = sorted(ADDONS.rglob("*.yaml"))


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def objects(kind: str) -> list[dict]:
    return [d for p in YAMLS for d in docs(p) if isinstance(d, dict) and d.get("kind") == kind]


def by_name(kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects(kind)}


@pytest.fixture(scope="module")
def versions() -> dict:
    return yaml.safe_load((ADDONS / "versions.yaml").read_text())


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(ADDONS)))
def test_every_yaml_parses(path: Path):
    assert docs(path), f"{path} is empty"


def test_expected_layout():
    for rel in [
        "README.md",
        "versions.yaml",
        "kfp/kustomization.yaml",
        "trainer/kustomization.yaml",
        "trainer/runtimes/kustomization.yaml",
        "kueue/kustomization.yaml",
        "kueue/values.yaml",
        "gpu-operator/values.yaml",
        "seaweedfs/values.yaml",
        "storage/storageclass-gp3.yaml",
    ]:
        assert (ADDONS / rel).exists(), rel


@pytest.mark.parametrize("path", sorted(ADDONS.rglob("kustomization.yaml")), ids=lambda p: str(p.parent.name))
def test_kustomizations_reference_existing_files_and_pinned_bases(path: Path, versions):
    kust = docs(path)[0]
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
    for res in kust.get("resources", []):
        if "github.com" in res:
            ref = re.search(r"[?&]ref=([^&]+)$", res)
            assert ref, f"{path}: remote base {res} is not pinned"
            assert ref.group(1) in {str(v) for v in versions.values()}, f"{res} not in versions.yaml"
            assert ref.group(1) not in {"master", "main", "HEAD"}
        else:
            assert (path.parent / res).exists(), f"{path}: missing resource {res}"


def test_readme_install_commands_use_the_pinned_versions(versions):
    text = (ADDONS / "README.md").read_text()
    for name in ["kubeflow-pipelines", "kueue", "gpu-operator", "seaweedfs"]:
        assert str(versions[name]) in text, f"README does not install {name} {versions[name]}"
    block = text[text.index("```bash") :]
    order = [
        block.index(s)
        for s in [
            "gpu-operator/values.yaml",
            "infra/addons/kfp",
            "kueue/values.yaml",
            "infra/addons/trainer/runtimes",
        ]
    ]
    assert order == sorted(order), "install order: GPU operator, KFP, Kueue, Trainer"


def test_cluster_training_runtime_validates_and_matches_the_launcher(k8s_version):
    from kubeflow_trainer_api.models import TrainerV1alpha1ClusterTrainingRuntime

    runtimes = by_name("ClusterTrainingRuntime")
    runtime = runtimes[naming.DEFAULT_RUNTIME]
    assert runtime["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    _roundtrip(TrainerV1alpha1ClusterTrainingRuntime, runtime, "ClusterTrainingRuntime")
    spec = runtime["spec"]
    assert "torch" in spec["mlPolicy"]
    jobs = {j["name"]: j for j in spec["template"]["spec"]["replicatedJobs"]}
    node = jobs[naming.TRAINER_NODE]  # the launcher's runtimePatches target this replicated job
    assert node["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    pod = node["template"]["spec"]["template"]
    assert [c["name"] for c in pod["spec"]["containers"]] == [naming.TRAINER_NODE]
    assert pod["spec"]["nodeSelector"] == {naming.GPU_POOL_LABEL: naming.POOL_GPU}
    assert {"key": naming.GPU_TAINT_KEY, "operator": "Exists", "effect": naming.GPU_TAINT_EFFECT} in pod[
        "spec"
    ]["tolerations"]
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t2v-torch-node"}, "template": pod},
        k8s_version,
        strict=True,
    )
    kubernetes_validate.validate(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "node"},
            "spec": node["template"]["spec"],
        },
        k8s_version,
        strict=True,
    )


def test_kueue_objects_have_required_fields_and_cross_reference():
    flavors = by_name("ResourceFlavor")
    queues = by_name("ClusterQueue")
    locals_ = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects("LocalQueue")}
    for obj in [*flavors.values(), *queues.values(), *locals_.values()]:
        assert obj["apiVersion"] == "kueue.x-k8s.io/v1beta1"
    for name, cq in queues.items():
        groups = cq["spec"]["resourceGroups"]
        assert groups, name
        for group in groups:
            covered = set(group["coveredResources"])
            for flavor in group["flavors"]:
                assert flavor["name"] in flavors, f"{name}: unknown flavor {flavor['name']}"
                assert {r["name"] for r in flavor["resources"]} == covered
                for r in flavor["resources"]:
                    assert "nominalQuota" in r
    for (ns, _name), lq in locals_.items():
        assert ns == "kubeflow" and lq["spec"]["clusterQueue"] in queues
    # the launcher's queues exist in the pipelines namespace
    assert ("kubeflow", naming.DEFAULT_QUEUE) in locals_ and ("kubeflow", naming.CPU_QUEUE) in locals_
    gpu_cq = queues[locals_[("kubeflow", naming.DEFAULT_QUEUE)]["spec"]["clusterQueue"]]
    gpu_flavor_names = {f["name"] for g in gpu_cq["spec"]["resourceGroups"] for f in g["flavors"]}
    gpu_quota = sum(
        int(r["nominalQuota"])
        for g in gpu_cq["spec"]["resourceGroups"]
        for f in g["flavors"]
        for r in f["resources"]
        if r["name"] == naming.GPU_RESOURCE
    )
    assert gpu_quota > 0
    for fname in gpu_flavor_names:
        flavor = flavors[fname]["spec"]
        assert flavor["nodeLabels"][naming.GPU_POOL_LABEL] == naming.POOL_GPU
        assert {
            "key": naming.GPU_TAINT_KEY,
            "value": naming.GPU_TAINT_VALUE,
            "effect": naming.GPU_TAINT_EFFECT,
        } in flavor["nodeTaints"]
    cpu_cq = queues[locals_[("kubeflow", naming.CPU_QUEUE)]["spec"]["clusterQueue"]]
    for g in cpu_cq["spec"]["resourceGroups"]:
        assert naming.GPU_RESOURCE not in g["coveredResources"]
        for f in g["flavors"]:
            assert flavors[f["name"]]["spec"]["nodeLabels"][naming.GPU_POOL_LABEL] == naming.POOL_CPU


def test_gpu_quota_matches_the_terraform_gpu_pool():
    hcl2 = pytest.importorskip("hcl2")
    with open(ROOT / "infra" / "terraform" / "variables.tf") as fh:
        tf = hcl2.load(fh)
    defaults = {k.strip('"'): v.get("default") for item in tf["variable"] for k, v in item.items()}
    gpu_cq = by_name("ClusterQueue")["t2v-gpu"]
    quota = next(
        int(r["nominalQuota"])
        for g in gpu_cq["spec"]["resourceGroups"]
        for f in g["flavors"]
        for r in f["resources"]
        if r["name"] == naming.GPU_RESOURCE
    )
    assert quota == defaults["gpu_max_size"] * defaults["gpus_per_node"]
    flavor_labels = by_name("ResourceFlavor")["h100"]["spec"]["nodeLabels"]
    assert flavor_labels["t2v.dev/accelerator"] == defaults["gpu_accelerator"].strip('"')


def test_kueue_integrations_cover_the_launcher_backends():
    values = docs(ADDONS / "kueue" / "values.yaml")[0]
    config = yaml.safe_load(values["managerConfig"]["controllerManagerConfigYaml"])
    frameworks = set(config["integrations"]["frameworks"])
    assert {"trainer.kubeflow.org/trainjob", "kubeflow.org/pytorchjob"} <= frameworks
    assert config["manageJobsWithoutQueueName"] is False


def test_gpu_operator_and_seaweedfs_values():
    gpu = docs(ADDONS / "gpu-operator" / "values.yaml")[0]
    assert gpu["devicePlugin"]["enabled"] is True
    assert gpu["driver"]["enabled"] is False  # the EKS NVIDIA AMI ships the driver
    assert any(t["key"] == naming.GPU_TAINT_KEY for t in gpu["daemonsets"]["tolerations"])
    sw = docs(ADDONS / "seaweedfs" / "values.yaml")[0]
    assert sw["s3"]["enabled"] is True and sw["s3"]["enableAuth"] is True
    assert sw["s3"]["existingConfigSecret"]  # credentials from a Secret, not from values


def test_no_bitnami_images_or_charts():
    """Bitnami's images moved to an unmaintained registry in 2025: no image, chart or repository of theirs."""
    pattern = re.compile(r"bitnami/|charts\.bitnami\.com|bitnamicharts|repository:\s*\S*bitnami", re.I)
    for path in [*ADDONS.rglob("*"), *(ROOT / "charts").rglob("*")]:
        if path.is_file() and path.suffix in {".yaml", ".yml", ".tpl", ".json", ".lock"}:
            assert not pattern.search(path.read_text(errors="ignore")), path


def test_the_storage_class_the_volumes_claim_exists_and_validates(k8s_version):
    # SeaweedFS's disks and the pipeline tasks' scratch volumes claim it by name; the EBS CSI driver
    # (infra/terraform) provisions it.
    from t2v.config import load_config

    (sc,) = docs(ADDONS / "storage" / "storageclass-gp3.yaml")
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(sc, k8s_version, strict=True)
    assert sc["provisioner"] == "ebs.csi.aws.com" and sc["volumeBindingMode"] == "WaitForFirstConsumer"
    cluster = load_config("step-video-t2v-30b").cluster
    assert cluster.scratch_storage_class == sc["metadata"]["name"] and cluster.resources.curate.scratch
    sw = docs(ADDONS / "seaweedfs" / "values.yaml")[0]
    claimed = {v.get("storageClass") for part in sw.values() if isinstance(part, dict) for v in part.values()
               if isinstance(v, dict) and "storageClass" in v}
    assert claimed == {sc["metadata"]["name"]}, claimed
