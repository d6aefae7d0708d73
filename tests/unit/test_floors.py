"""The house keeps its floors: imports only point down, no component imports another, no import cycles.

Floors, lowest first (docs/ARCHITECTURE.md draws them):

    model  <-  t2v (core library)  <-  trainer  <-  components.framework, components.runtime
           <-  components.<stage folder>  <-  pipelines  <-  t2v_cli

A module may import modules of its own floor or of a floor below. Every import counts, at module level or
inside a function (a function-level import is still an arrow). The check reads the source with ``ast``;
nothing is imported, so it is fast and sees every file, tested or not.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("model", "t2v", "trainer", "components", "pipelines", "t2v_cli")
FRAMEWORK = ("components.framework", "components.runtime", "components")
#: third-party packages the networks may not touch: model/ is pure networks and maths
NOT_IN_MODEL = ("mlflow", "kfp", "kubernetes", "boto3", "botocore", "webdataset", "av", "cv2", "requests", "yaml")


def floor_of(module: str) -> tuple[int, str]:
    """(floor, room) of a project module; the room tells stage folders apart on floor 4."""
    top = module.split(".")[0]
    if top == "model":
        return 0, "model"
    if top == "t2v":
        return 1, "t2v"
    if top == "trainer":
        return 2, "trainer"
    if top == "components":
        parts = module.split(".")
        if module in FRAMEWORK or module.startswith("components.framework."):
            return 3, "framework"
        return 4, ".".join(parts[:2])
    if top == "pipelines":
        return 5, "pipelines"
    if top == "t2v_cli":
        return 6, "t2v_cli"
    raise ValueError(module)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    return {
        module_name(root, path): path
        for package in packages
        if (root / package).is_dir()
        for path in sorted((root / package).rglob("*.py"))
    }


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in the file, resolved to project modules
    where they are ones (``from t2v import storage`` -> ``t2v.storage``); others keep their top name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                out.append((candidate if candidate in known else base, node.lineno))
    return out


def violations(root: Path, packages=PACKAGES) -> list[str]:
    """Every reversed arrow, component-to-component arrow, impure model import and import cycle."""
    modules = project_modules(root, packages)
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    found = []
    for module, path in modules.items():
        floor, room = floor_of(module)
        for target, line in imports_of(module, path, known):
            where = f"{path.relative_to(root)}:{line}"
            if target.split(".")[0] not in packages:
                if floor == 0 and target.split(".")[0] in NOT_IN_MODEL:
                    found.append(f"{where}: model/ imports {target} (networks and maths only)")
                continue
            target_module = target if target in known else next(
                (m for m in sorted(known, key=len, reverse=True) if target.startswith(m + ".")), target
            )
            if target_module not in known:
                found.append(f"{where}: imports {target}, which is not a module of the project")
                continue
            graph[module].add(target_module)
            target_floor, target_room = floor_of(target_module)
            if target_floor > floor:
                found.append(f"{where}: {module} (floor {floor}) imports {target_module} (floor {target_floor}) above it")
            elif floor == target_floor == 4 and room != target_room:
                found.append(f"{where}: component {room} imports component {target_room}")
    found.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                out.append(sorted(component) + [sorted(component)[0]])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_house_keeps_its_floors():
    problems = violations(ROOT)
    assert not problems, "\n".join(problems)


def test_every_module_has_a_floor():
    for module in project_modules(ROOT):
        floor_of(module)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


CLEAN = {
    "model/__init__.py": "",
    "model/dit.py": "import torch\n",
    "t2v/__init__.py": "",
    "t2v/storage.py": "import boto3\nfrom model import dit\n",
    "t2v/config.py": "from t2v import storage\n",
    "components/__init__.py": "",
    "components/runtime.py": "from t2v import config\n",
    "components/encode/__init__.py": "",
    "components/encode/stage.py": "from components import runtime\nfrom t2v.storage import join\n",
    "components/evaluate/__init__.py": "",
    "components/evaluate/stage.py": "from model.dit import StepVideoDiT\n",
    "pipelines/__init__.py": "",
    "pipelines/runner.py": "from components.encode import stage\n",
}


def test_a_clean_house_passes(tmp_path):
    _write(tmp_path, CLEAN)
    assert violations(tmp_path) == []


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("t2v/storage.py", "from pipelines import runner\n", "t2v.storage (floor 1) imports pipelines.runner (floor 5) above it"),
        ("model/dit.py", "def f():\n    from t2v import config\n", "model.dit (floor 0) imports t2v.config (floor 1) above it"),
        ("model/dit.py", "import mlflow\n", "model/ imports mlflow"),
        ("components/evaluate/stage.py", "from components.encode.stage import x\n", "component components.evaluate imports component components.encode"),
        ("t2v/storage.py", "def f():\n    from t2v import config\n", "import cycle: t2v.config -> t2v.storage -> t2v.config"),
    ],
)
def test_a_planted_violation_is_found(tmp_path, name, text, expected):
    _write(tmp_path, {**CLEAN, name: CLEAN[name] + text})
    assert any(expected in problem for problem in violations(tmp_path)), violations(tmp_path)


def test_the_config_tree_loads_without_torch():
    """Reading a profile (the CLI, the pipeline compiler, every component's start) must not pull in torch."""
    code = "import sys, t2v.config; t2v.config.load_config('tiny'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
