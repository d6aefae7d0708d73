"""An installed project finds its package data (the profiles, the evaluation prompts) through the
package, not through a source checkout: build the wheel, install it into a bare folder, and use it from
a directory that is not the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_wheel_finds_profiles_and_eval_prompts(tmp_path):
    # a copy of the source: building writes build/ and *.egg-info beside the sources
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns(".git", ".venv", ".runs", "build", "*.egg-info", "__pycache__", "tests")
    shutil.copytree(ROOT, source, ignore=ignore)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(source)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "configs/tiny/dit.yaml" in names and "configs/eval/step-video-t2v-eval-prompts.txt" in names
    assert "configs/eval/LICENSE.step-video-t2v" in names
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        "import t2v.config as c, components.evaluate.stage as e; "
        "print(c.config_dir()); print(c.load_config('step-video-t2v-30b').dit.num_layers); "
        "print(len(e.step_video_eval_prompts()))"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    folder, layers, prompts = out.stdout.split()
    assert Path(folder) == target / "configs"
    assert (layers, prompts) == ("48", "128")
