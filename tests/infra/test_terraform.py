"""infra/terraform parses with python-hcl2 and its GPU pool carries the taint and labels the launcher uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from t2v.launch import naming

hcl2 = pytest.importorskip("hcl2")

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "infra" / "terraform"
EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


def unquote(value):
    """python-hcl2 keeps HCL's quotes on keys and literal strings and adds block markers; drop them."""
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if k not in {"__is_block__", "__comments__"}}
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load(name: str) -> dict:
    with open(TF / name) as fh:
        return unquote(hcl2.load(fh))


@pytest.fixture(scope="module")
def tf() -> dict:
    merged: dict = {}
    for path in sorted(TF.glob("*.tf")):
        for key, items in load(path.name).items():
            merged.setdefault(key, []).extend(items if isinstance(items, list) else [items])
    return merged


def blocks(tf: dict, kind: str, rtype: str) -> dict[str, dict]:
    out = {}
    for item in tf.get(kind, []):
        for t, named in item.items():
            if t == rtype:
                out.update(named)
    return out


def variables(tf: dict) -> dict[str, dict]:
    out = {}
    for item in tf["variable"]:
        out.update(item)
    return out


def resolve(tf: dict, expr):
    """Resolve ${var.x} (to its default) and ${local.x} references; return other values as they are."""
    if isinstance(expr, str):
        m = re.fullmatch(r"\$\{var\.(\w+)\}", expr)
        if m:
            return variables(tf)[m.group(1)].get("default")
        m = re.fullmatch(r"\$\{local\.(\w+)\}", expr)
        if m:
            for item in tf["locals"]:
                if m.group(1) in item:
                    return resolve(tf, item[m.group(1)])
    if isinstance(expr, dict):
        return {k: resolve(tf, v) for k, v in expr.items()}
    return expr


def test_every_file_parses_and_pins_versions(tf):
    assert {p.name for p in TF.glob("*.tf")} >= {"versions.tf", "variables.tf", "main.tf", "outputs.tf"}
    terraform = tf["terraform"][0]
    assert terraform["required_version"]
    aws = (
        terraform["required_providers"][0]["aws"]
        if isinstance(terraform["required_providers"], list)
        else terraform["required_providers"]["aws"]
    )
    assert aws["source"] == "hashicorp/aws" and re.match(r"^~>\s*\d+\.\d+", aws["version"])


def test_variables_are_typed_and_declared(tf):
    declared = variables(tf)
    for name, var in declared.items():
        assert "type" in var, f"variable {name} has no type"
    used = set()
    for path in TF.glob("*.tf"):
        used |= set(re.findall(r"\bvar\.(\w+)", path.read_text()))
    assert used <= set(declared), f"undeclared variables: {used - set(declared)}"


def test_gpu_pool_has_the_launcher_taint_and_labels(tf):
    groups = blocks(tf, "resource", "aws_eks_node_group")
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]
    taints = gpu["taint"]
    assert len(taints) == 1
    taint = taints[0]
    assert taint["key"] == naming.GPU_TAINT_KEY
    assert taint["value"] == naming.GPU_TAINT_VALUE
    assert EFFECTS[taint["effect"]] == naming.GPU_TAINT_EFFECT
    labels = resolve(tf, gpu["labels"])
    assert labels[naming.GPU_POOL_LABEL] == naming.POOL_GPU
    assert "t2v.dev/accelerator" in labels
    assert "NVIDIA" in gpu["ami_type"]
    # the autoscaler's scale-from-zero template must describe the same taint and label
    tags = gpu["tags"]
    assert tags[f"k8s.io/cluster-autoscaler/node-template/label/{naming.GPU_POOL_LABEL}"] == naming.POOL_GPU
    assert (
        tags[f"k8s.io/cluster-autoscaler/node-template/taint/{naming.GPU_TAINT_KEY}"]
        == f"{naming.GPU_TAINT_VALUE}:{naming.GPU_TAINT_EFFECT}"
    )


def test_pools_autoscale_within_a_range(tf):
    groups = blocks(tf, "resource", "aws_eks_node_group")
    for name, group in groups.items():
        scaling = resolve(tf, group["scaling_config"][0])
        assert 0 <= scaling["min_size"] <= scaling["desired_size"] <= scaling["max_size"], name
        assert scaling["max_size"] > scaling["min_size"], f"{name} pool cannot scale"
        assert "scaling_config[0].desired_size" in str(group["lifecycle"]), "the autoscaler owns desired_size"
    cpu = groups["cpu"]
    assert "taint" not in cpu
    assert resolve(tf, cpu["labels"])[naming.GPU_POOL_LABEL] == naming.POOL_CPU


def test_outputs_expose_cluster_and_gpu_selector(tf):
    outputs = {}
    for item in tf["output"]:
        outputs.update(item)
    assert {"cluster_name", "cluster_endpoint", "gpu_node_selector", "gpu_taint"} <= set(outputs)
    assert outputs["gpu_taint"]["value"] == (
        f"{naming.GPU_TAINT_KEY}={naming.GPU_TAINT_VALUE}:{naming.GPU_TAINT_EFFECT}"
    )


def test_cluster_version_matches_the_validated_kubernetes_version(tf, k8s_version):
    assert variables(tf)["kubernetes_version"]["default"] == ".".join(k8s_version.split(".")[:2])


def test_the_ebs_csi_driver_provisions_volumes_with_its_own_role(tf):
    # the gp3 StorageClass (infra/addons/storage) needs the driver; its controller assumes its role
    # through EKS Pod Identity, which the core add-ons install
    addons = blocks(tf, "resource", "aws_eks_addon")
    driver = addons["ebs_csi"]
    assert driver["addon_name"] == "aws-ebs-csi-driver"
    (association,) = driver["pod_identity_association"]
    assert association["service_account"] == "ebs-csi-controller-sa" and "aws_iam_role.ebs_csi" in association["role_arn"]
    assert "eks-pod-identity-agent" in str(addons["core"]["for_each"])
    attachments = blocks(tf, "resource", "aws_iam_role_policy_attachment")
    assert attachments["ebs_csi"]["policy_arn"].endswith("AmazonEBSCSIDriverPolicy")
