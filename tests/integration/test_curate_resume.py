"""Killing a curate shard in the middle (SIGKILL, while it is writing clips) and running it again gives
the same manifest and the same shard tars, byte for byte, as one clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RUN = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from components.curate.stage import curate_shard
from t2v.config import load_curate_config
cfg = load_curate_config(Path(sys.argv[1]) / "configs/tiny/curate.yaml")
curate_shard(Path(sys.argv[2]), Path(sys.argv[3]), cfg, shard_index=0, num_shards=1)
"""


def _run(raw: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN, str(REPO), str(raw), str(out)], env={**os.environ, "OMP_NUM_THREADS": "1"})


def _outputs(out: Path) -> dict[str, bytes]:
    files = sorted(out.glob("manifest-*.jsonl")) + sorted(out.glob("scenes-*.jsonl")) + sorted(out.glob("thumbs-*.jsonl"))
    files += sorted((out / "shards").glob("*.tar"))
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


@pytest.mark.slow
def test_killed_shard_reruns_to_the_clean_result(tmp_path):
    from t2v.world import WorldConfig, generate_raw_videos

    world = yaml.safe_load((REPO / "configs/tiny/world.yaml").read_text())
    world.update(num_raw_videos=10, corrupt_files=1, seed=3)
    generate_raw_videos(WorldConfig(**world), tmp_path / "raw")

    clean = tmp_path / "clean"
    assert _run(tmp_path / "raw", clean).wait(timeout=300) == 0

    killed = tmp_path / "killed"
    proc = _run(tmp_path / "raw", killed)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until it has spooled a few clips, then kill it
        if len(list((killed / "shards").glob(".tmp-000-*/spool/*.mp4"))) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("the shard finished before it could be killed")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "done-000.json").exists()
    assert not list((killed / "shards").glob("*.tar"))  # nothing where a reader would look
    assert _run(tmp_path / "raw", killed).wait(timeout=300) == 0

    first, again = _outputs(clean), _outputs(killed)
    assert any(k.endswith(".tar") for k in first)
    assert sorted(again) == sorted(first)
    for name, data in first.items():
        assert again[name] == data, f"{name} differs after kill + rerun"
    assert not list((killed / "shards").glob(".tmp-*"))
