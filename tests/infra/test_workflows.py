"""GitHub workflows: valid against check-jsonschema's vendored GitHub-workflow schema (no download), actions
pinned, secrets only through ${{ secrets.* }}, and the job shapes the design asks for."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WF = ROOT / ".github" / "workflows"
FILES = sorted(WF.glob("*.yml"))


def load(name: str) -> dict:
    data = yaml.safe_load((WF / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def tool(name: str, package: str) -> str:
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed (pip install {package})")
    return found


def test_expected_workflows():
    assert {p.name for p in FILES} >= {"ci.yml", "images.yml", "publish-pipeline.yml", "promote.yml"}


def test_schema_valid_offline():
    proc = subprocess.run(
        [
            tool("check-jsonschema", "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, FILES),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_yamllint_clean():
    config = (
        "{extends: default, rules: {line-length: {max: 140}, truthy: {allowed-values: ['true', 'false', 'on']}, "
        "document-start: disable, comments: {min-spaces-from-content: 1}}}"
    )
    proc = subprocess.run(
        [tool("yamllint", "yamllint"), "-s", "-d", config, *map(str, FILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_are_pinned_and_secrets_come_from_secrets(path: Path):
    data = yaml.safe_load(path.read_text())
    for job in data["jobs"].values():
        for step in job.get("steps", []):
            if "uses" in step:
                ref = step["uses"].partition("@")[2]
                assert re.fullmatch(r"v\d+\.\d+\.\d+|[0-9a-f]{40}", ref), (
                    f"{path.name}: unpinned {step['uses']}"
                )
    text = path.read_text()
    # credentials appear only as ${{ secrets.X }} expressions, never as literals
    for line in text.splitlines():
        if re.search(r"(PASSWORD|TOKEN|SECRET|_KEY)\s*:", line) and "${{" not in line:
            pytest.fail(f"{path.name}: credential not taken from secrets: {line.strip()}")
    assert not re.search(r"(AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{20,})", text)


def test_ci_runs_the_ci_script_on_pull_requests_and_main():
    wf = load("ci.yml")
    assert "pull_request" in wf["on"] and wf["on"]["push"]["branches"] == ["main"]
    runs = [s.get("run", "") for j in wf["jobs"].values() for s in j["steps"]]
    assert any(r.strip() == "bash .ci/run" for r in runs)


def test_images_build_cpu_and_cuda_tagged_with_the_sha():
    wf = load("images.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    job = wf["jobs"]["build"]
    files = {m["dockerfile"] for m in job["strategy"]["matrix"]["include"]}
    assert {"infra/docker/Dockerfile", "infra/docker/Dockerfile.cuda"} <= files
    for f in files:
        assert (ROOT / f).exists()
    text = (WF / "images.yml").read_text()
    assert "GITHUB_SHA::12" in text and "push: true" in text
    assert wf["permissions"]["packages"] == "write"


def test_publish_pipeline_compiles_and_uploads_a_version():
    wf = load("publish-pipeline.yml")
    assert wf["on"]["workflow_run"]["workflows"] == ["images"]
    runs = "\n".join(s.get("run", "") for j in wf["jobs"].values() for s in j["steps"])
    assert "t2v compile" in runs and "--out pipeline.yaml" in runs
    assert "t2v submit" in runs and "--upload-only" in runs
    env = {k: v for j in wf["jobs"].values() for s in j["steps"] for k, v in (s.get("env") or {}).items()}
    assert env["KFP_HOST"] == "${{ secrets.KFP_HOST }}"


def test_promote_is_manual_with_model_and_version_in_production():
    wf = load("promote.yml")
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert inputs["model"]["required"] and inputs["version"]["required"]
    job = wf["jobs"]["promote"]
    assert job["environment"] == "production"
    step = next(s for s in job["steps"] if "t2v promote" in s.get("run", ""))
    assert '--model "$MODEL"' in step["run"] and '--version "$VERSION"' in step["run"]
    # inputs reach the shell through env, never pasted into the script (script injection)
    assert "${{" not in step["run"]
    assert step["env"]["MLFLOW_TRACKING_PASSWORD"].startswith("${{ secrets.")
    # the CI identity's credentials for every registry step; a rollback names the version it undoes
    back = next(s for s in job["steps"] if "t2v rollback" in s.get("run", ""))
    assert back["if"] == "inputs.action == 'rollback'" and '--from-version "$VERSION"' in back["run"]
    assert inputs["action"]["options"] == ["promote", "rollback"] and inputs["reason"]["required"]
    for s in (step, back):
        assert '--reason "$REASON"' in s["run"] and "${{" not in s["run"]
        assert s["env"]["MLFLOW_TRACKING_USERNAME"] == "${{ secrets.MLFLOW_CI_USERNAME }}"
        assert s["env"]["MLFLOW_TRACKING_PASSWORD"] == "${{ secrets.MLFLOW_CI_PASSWORD }}"
        assert "CI" not in s["env"]  # nothing in the environment decides who may promote
