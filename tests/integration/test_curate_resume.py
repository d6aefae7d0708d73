"""Killing a curate shard in the middle (SIGKILL, while it is writing clips) and running it again gives
the same manifest and the same shard tars, byte for byte, as one clean run; a video that kills the process
every time is skipped once it has done so ``max_video_crashes`` times, and the shard finishes."""

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
import os, signal
from components.curate import stage
cfg = load_curate_config(Path(sys.argv[1]) / "configs/tiny/curate.yaml")
if os.environ.get("DIE_ON"):  # a video that kills the process curating it (as the OOM killer would)
    curate_video = stage._curate_video
    def _curate_video(row, *a, **k):
        if row.video_id == os.environ["DIE_ON"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return curate_video(row, *a, **k)
    stage._curate_video = _curate_video
curate_shard(Path(sys.argv[2]), Path(sys.argv[3]), cfg, shard_index=0, num_shards=1)
"""


def _run(raw: Path, out: Path, die_on: str = "") -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIE_ON": die_on}
    return subprocess.Popen([sys.executable, "-c", RUN, str(REPO), str(raw), str(out)], env=env)


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


@pytest.mark.slow
def test_a_video_that_kills_the_process_is_skipped_after_two_deaths(tmp_path):
    import json

    from t2v.world import WorldConfig, generate_raw_videos

    world = yaml.safe_load((REPO / "configs/tiny/world.yaml").read_text())
    world.update(num_raw_videos=5, corrupt_files=0, seed=4)
    generate_raw_videos(WorldConfig(**world), tmp_path / "raw")
    rows = [json.loads(x) for x in (tmp_path / "raw" / "metadata.jsonl").read_text().splitlines() if x.strip()]
    poison = rows[2]["video_id"]

    clean = tmp_path / "clean"
    assert _run(tmp_path / "raw", clean).wait(timeout=300) == 0
    out = tmp_path / "out"
    for attempt in (1, 2):  # the task dies on the same video, and is retried
        assert _run(tmp_path / "raw", out, die_on=poison).wait(timeout=300) == -signal.SIGKILL
        journal = json.loads((out / "attempts-000.json").read_text())
        assert journal["current"]["video_id"] == poison and journal["deaths"] == ({} if attempt == 1 else {"2": 1})
    assert _run(tmp_path / "raw", out, die_on=poison).wait(timeout=300) == 0  # the third run skips it

    def records(folder: Path) -> list[dict]:
        return [json.loads(x) for x in (folder / "manifest-000.jsonl").read_text().splitlines() if x.strip()]

    got = records(out)
    (skipped,) = [r for r in got if r["video_id"] == poison]
    assert skipped["drop_reasons"] == ["crashed"] and "died 2 times" in skipped["error"], skipped
    others = {r["clip_id"] for r in records(clean) if r["video_id"] != poison}
    assert {r["clip_id"] for r in got if r["video_id"] != poison} == others  # every other video curated
    done = json.loads((out / "done-000.json").read_text())
    assert done["summary"]["rejected_by_reason"].get("crashed") == 1, done["summary"]
    assert json.loads((out / "attempts-000.json").read_text())["current"] is None
