"""Killing a curate shard in the middle (SIGKILL, while it is writing clips) and running it again gives
the same manifest and the same shard tars, byte for byte, as one clean run, and curates only the videos
the killed run had not finished (a source that was unavailable is tried again); a video that kills the process
every time is skipped once it has done so ``max_video_crashes`` times, and the shard finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RUN = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from components.curate.stage import curate_shard
from t2v.config import load_curate_config
import os
cfg = load_curate_config(Path(sys.argv[1]) / "configs/tiny/curate.yaml")
cfg = cfg.model_copy(update={"video_workers": int(os.environ.get("VIDEO_WORKERS", "1")),
                             "max_video_stall_s": float(os.environ.get("MAX_STALL", "600"))})
if __name__ == "__main__":
    curate_shard(Path(sys.argv[2]), Path(sys.argv[3]), cfg, shard_index=0, num_shards=1)
"""
# In every process (the shard's, and the pool's workers): a video that kills the process curating it, as
# the out-of-memory killer would (DIE_ON), or that hangs it (HANG_ON): in Python code, a loop the stall
# watchdog's signal interrupts ("python"), or where no signal reaches (the signal blocked: "c"), as a
# decoder looping inside FFmpeg would.
SITE = """
import os, signal, sys, time
if os.environ.get("DIE_ON") or os.environ.get("HANG_ON"):
    sys.path.insert(0, os.environ["T2V_REPO"])
    import components.curate.stage as _stage
    _original = _stage._curate_video
    def _curate_video(row, *a, **k):
        if row.video_id == os.environ.get("DIE_ON"):
            os.kill(os.getpid(), signal.SIGKILL)
        if row.video_id == os.environ.get("HANG_ON"):
            if os.environ["HANG_HOW"] == "c":
                from components.curate.watchdog import STALL_SIGNAL
                signal.pthread_sigmask(signal.SIG_BLOCK, {STALL_SIGNAL})
            while True:
                time.sleep(0.05)
        return _original(row, *a, **k)
    _stage._curate_video = _curate_video
"""


def _run(raw: Path, out: Path, die_on: str = "", workers: int = 1, hang_on: str = "", hang_how: str = "python",
         max_stall: float = 600) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIE_ON": die_on, "VIDEO_WORKERS": str(workers), "T2V_REPO": str(REPO),
           "HANG_ON": hang_on, "HANG_HOW": hang_how, "MAX_STALL": str(max_stall)}
    if die_on or hang_on:  # (sitecustomize runs in every interpreter, the pool's spawned workers too)
        site = out.parent / f".site-{out.name}"
        site.mkdir(parents=True, exist_ok=True)
        (site / "sitecustomize.py").write_text(SITE)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", RUN, str(REPO), str(raw), str(out)], env=env)


def _outputs(out: Path) -> dict[str, bytes]:
    files = sorted(out.glob("manifest-*.jsonl")) + sorted(out.glob("scenes-*.jsonl")) + sorted(out.glob("thumbs-*.jsonl"))
    files += sorted((out / "shards").glob("*.tar"))
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_killed_shard_reruns_to_the_clean_result(tmp_path, workers):
    from t2v.world import WorldConfig, generate_raw_videos

    world = yaml.safe_load((REPO / "configs/tiny/world.yaml").read_text())
    world.update(num_raw_videos=10, corrupt_files=1, seed=3)
    generate_raw_videos(WorldConfig(**world), tmp_path / "raw")

    clean = tmp_path / "clean"
    assert _run(tmp_path / "raw", clean).wait(timeout=300) == 0

    killed = tmp_path / "killed"
    proc = _run(tmp_path / "raw", killed, workers=workers)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until it has finished a few videos, then kill it
        if len(list((killed / "shards").glob(".work-000/videos/*.json"))) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("the shard finished before it could be killed")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "done-000.json").exists()
    assert not list((killed / "shards").glob("*.tar"))  # nothing where a reader would look
    # The rerun takes the finished videos from the killed run's work: the first video, which kills any
    # process that curates it now, is not curated again.
    rows = [json.loads(x) for x in (tmp_path / "raw" / "metadata.jsonl").read_text().splitlines() if x.strip()]
    assert _run(tmp_path / "raw", killed, die_on=rows[0]["video_id"], workers=workers).wait(timeout=300) == 0

    first, again = _outputs(clean), _outputs(killed)
    assert any(k.endswith(".tar") for k in first)
    assert sorted(again) == sorted(first)
    for name, data in first.items():
        assert again[name] == data, f"{name} differs after kill + rerun"
    assert not list((killed / "shards").glob(".work-*"))


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
        assert [v["video_id"] for v in journal["current"]] == [poison] and journal["deaths"] == ({} if attempt == 1 else {"2": 1})
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


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    from t2v.world import WorldConfig, generate_raw_videos

    root = tmp_path_factory.mktemp("world")
    world = yaml.safe_load((REPO / "configs/tiny/world.yaml").read_text())
    world.update(num_raw_videos=8, corrupt_files=1, seed=5)
    generate_raw_videos(WorldConfig(**world), root / "raw")
    clean = root / "clean"
    assert _run(root / "raw", clean).wait(timeout=300) == 0
    return root / "raw", clean


@pytest.mark.slow
def test_videos_side_by_side_give_the_outputs_of_one_process(small_world, tmp_path):
    raw, clean = small_world
    assert _run(raw, tmp_path / "two", workers=2).wait(timeout=300) == 0
    first, again = _outputs(clean), _outputs(tmp_path / "two")
    assert sorted(again) == sorted(first) and any(k.endswith(".tar") for k in first)
    for name, data in first.items():
        assert again[name] == data, f"{name} differs with video_workers 2"


@pytest.mark.slow
def test_a_video_that_kills_its_worker_is_skipped_and_the_shard_finishes_in_one_run(small_world, tmp_path):
    import json

    raw, clean = small_world
    rows = [json.loads(x) for x in (raw / "metadata.jsonl").read_text().splitlines() if x.strip()]
    poison = rows[3]["video_id"]
    out = tmp_path / "out"
    assert _run(raw, out, die_on=poison, workers=2).wait(timeout=300) == 0
    records = [json.loads(x) for x in (out / "manifest-000.jsonl").read_text().splitlines() if x.strip()]
    (skipped,) = [r for r in records if r["video_id"] == poison]
    assert skipped["drop_reasons"] == ["crashed"] and "died 2 times" in skipped["error"], skipped
    want = [json.loads(x) for x in (clean / "manifest-000.jsonl").read_text().splitlines() if x.strip()]
    assert {r["clip_id"] for r in records if r["video_id"] != poison} == {r["clip_id"] for r in want if r["video_id"] != poison}
    journal = json.loads((out / "attempts-000.json").read_text())
    assert journal["current"] is None and journal["deaths"]["3"] == 2, journal  # (the others in flight: 1 each)


def test_worker_processes_that_cannot_start_fail_the_shard_and_blame_no_video(small_world, tmp_path):
    # A script read from stdin cannot be re-imported by a spawned worker: every worker dies as it starts.
    # That is the pool's fault: the shard fails saying so, and no video is counted as having killed it.
    raw, _ = small_world
    script = RUN.replace("sys.argv[1]", repr(str(REPO))).replace("sys.argv[2]", repr(str(raw))).replace(
        "sys.argv[3]", repr(str(tmp_path / "out")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VIDEO_WORKERS": "2"}
    result = subprocess.run([sys.executable, "-"], input=script, text=True, capture_output=True, env=env, timeout=300)
    assert result.returncode != 0 and "worker processes die as they start" in result.stderr, result.stderr[-2000:]
    journal = json.loads((tmp_path / "out" / "attempts-000.json").read_text())
    assert journal["deaths"] == {}, journal


@pytest.mark.slow
def test_workers_load_the_packaged_models_and_score_as_one_process_does(small_world, tmp_path):
    # Each worker loads its own OCR and NSFW detectors: the clips' model scores and scorer names are
    # those of one process.
    from components.curate.stage import curate_shard
    from t2v.config import load_curate_config

    raw, _ = small_world
    cfg = load_curate_config(REPO / "configs/tiny/curate.yaml").model_copy(update={"ocr": True, "nsfw": True})
    records = {}
    for workers in (1, 2):
        curate_shard(raw, tmp_path / f"w{workers}", cfg.model_copy(update={"video_workers": workers}))
        records[workers] = (tmp_path / f"w{workers}" / "manifest-000.jsonl").read_text()
    scored = [json.loads(x) for x in records[2].splitlines() if "ocr_text_area" in x]
    assert scored and all("nsfw" in r["scores"] and r["scorers"]["ocr"].startswith("rapidocr") for r in scored)
    assert records[2] == records[1]


def _records(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "manifest-000.jsonl").read_text().splitlines() if x.strip()]


def _stalled_and_the_rest_as_clean(out: Path, clean: Path, poison: str) -> dict:
    got = _records(out)
    (skipped,) = [r for r in got if r["video_id"] == poison]
    assert skipped["drop_reasons"] == ["stalled"] and "no progress for 2 s" in skipped["error"], skipped
    want = {r["clip_id"]: r for r in _records(clean) if r["video_id"] != poison}
    assert {r["clip_id"]: r for r in got if r["video_id"] != poison} == want  # every other video as in a clean run
    done = json.loads((out / "done-000.json").read_text())
    assert done["summary"]["rejected_by_reason"].get("stalled") == 1, done["summary"]
    journal = json.loads((out / "attempts-000.json").read_text())
    assert journal["current"] is None and list(journal["stalls"]) == [str(skipped["video_index"])], journal
    return skipped


@pytest.mark.slow
def test_a_video_that_hangs_is_interrupted_recorded_as_stalled_and_the_shard_goes_on(small_world, tmp_path):
    raw, clean = small_world
    poison = [json.loads(x) for x in (raw / "metadata.jsonl").read_text().splitlines() if x.strip()][2]["video_id"]
    t0 = time.monotonic()
    assert _run(raw, tmp_path / "out", hang_on=poison, max_stall=2).wait(timeout=300) == 0
    skipped = _stalled_and_the_rest_as_clean(tmp_path / "out", clean, poison)
    assert "could not be interrupted" not in skipped["error"]  # the signal reached it: no process ended
    assert time.monotonic() - t0 < 120


@pytest.mark.slow
def test_a_worker_stuck_where_no_signal_reaches_ends_and_the_shard_finishes_in_one_run(small_world, tmp_path):
    raw, clean = small_world
    poison = [json.loads(x) for x in (raw / "metadata.jsonl").read_text().splitlines() if x.strip()][4]["video_id"]
    out = tmp_path / "out"
    assert _run(raw, out, hang_on=poison, hang_how="c", workers=2, max_stall=2).wait(timeout=300) == 0
    skipped = _stalled_and_the_rest_as_clean(out, clean, poison)
    assert "could not be interrupted" in skipped["error"], skipped
    journal = json.loads((out / "attempts-000.json").read_text())
    assert journal["deaths"] == {}, journal  # the videos in flight beside it are not blamed
    assert not list(out.rglob("stalled/*.json"))  # the worker's note was taken


@pytest.mark.slow
def test_a_shard_process_stuck_where_no_signal_reaches_ends_and_its_rerun_skips_the_video(small_world, tmp_path):
    raw, clean = small_world
    poison = [json.loads(x) for x in (raw / "metadata.jsonl").read_text().splitlines() if x.strip()][1]["video_id"]
    out = tmp_path / "out"
    from components.curate.watchdog import EXIT_STALLED

    assert _run(raw, out, hang_on=poison, hang_how="c", max_stall=2).wait(timeout=300) == EXIT_STALLED
    assert not (out / "done-000.json").exists()
    journal = json.loads((out / "attempts-000.json").read_text())
    assert [v["video_id"] for v in journal["current"]] == [poison] and len(journal["stalls"]) == 1, journal
    assert _run(raw, out, hang_on=poison, hang_how="c", max_stall=2).wait(timeout=300) == 0  # the task's retry
    skipped = _stalled_and_the_rest_as_clean(out, clean, poison)
    assert "could not be interrupted" in skipped["error"], skipped
    assert json.loads((out / "attempts-000.json").read_text())["deaths"] == {}


class _PodGone(BaseException):
    """The shard's task ending in the middle of a video (a preemption), as seen from inside it."""


@pytest.mark.parametrize("where", ["out_dir", "s3_mirror"])
def test_a_rerun_curates_only_what_the_killed_run_left_and_tries_unavailable_sources_again(
    small_world, tmp_path, monkeypatch, request, where
):
    # "out_dir": the rerun finds the work folder the killed run left; "s3_mirror": as in the pipeline, each
    # attempt has a new, empty out_dir, and the work in progress is mirrored to the run's object store.
    import components.curate.stage as stage
    from components.curate.resume import ShardWork
    from t2v import storage
    from t2v.config import load_curate_config

    mirror = f"s3://{request.getfixturevalue('s3_bucket')}/runs/r1/curate/work/shard-000" if where == "s3_mirror" else None
    outs = iter([tmp_path / "out", tmp_path / ("again" if mirror else "out")])

    raw, clean = small_world
    rows = [json.loads(x) for x in (raw / "metadata.jsonl").read_text().splitlines() if x.strip()]
    offline, killed_on = rows[1]["video_id"], rows[5]["video_id"]
    cfg = load_curate_config(REPO / "configs/tiny/curate.yaml").model_copy(
        update={"video_workers": 1, "max_video_stall_s": 600.0})
    original, curated = stage._curate_video, []

    def first_run(row, *args, **kwargs):
        if row.video_id == killed_on:
            raise _PodGone
        curated.append(row.video_id)
        if row.video_id == offline:  # the object store was down for this one
            return {"records": [stage._row_record(row, "unavailable", f"{row.uri}: HTTP 503 Service Unavailable")]}
        return original(row, *args, **kwargs)

    monkeypatch.setattr(stage, "_curate_video", first_run)
    out = next(outs)
    with pytest.raises(_PodGone):
        stage.curate_shard(raw, out, cfg, work_uri=mirror)
    assert not (out / "done-000.json").exists() and not list((out / "shards").glob("*.tar"))
    assert curated == [r["video_id"] for r in rows[:5]]
    if mirror:
        assert len(storage.list_uris(f"{mirror}/videos")) == 5

    def second_run(row, *args, **kwargs):
        curated.append(row.video_id)
        return original(row, *args, **kwargs)

    curated.clear()
    monkeypatch.setattr(stage, "_curate_video", second_run)
    kept_again, put = [], ShardWork.put
    monkeypatch.setattr(ShardWork, "put", lambda self, index, result: (kept_again.append(index), put(self, index, result)))
    out = next(outs)
    stage.curate_shard(raw, out, cfg, work_uri=mirror)
    assert curated == [offline] + [r["video_id"] for r in rows[5:]]
    assert kept_again == [1, 5, 6, 7]  # the earlier run's results are not written (nor uploaded) again
    if mirror:
        assert storage.list_uris(mirror) == []  # removed with the finished shard
    first, again = _outputs(clean), _outputs(out)
    assert sorted(again) == sorted(first) and any(k.endswith(".tar") for k in first)
    for name, data in first.items():
        assert again[name] == data, f"{name} differs from one clean run after a resumed run"
    assert not list((out / "shards").glob(".work-*"))


def test_work_of_another_config_or_a_forced_run_is_not_taken(tmp_path):
    from components.curate.resume import ShardWork

    folder = tmp_path / ".work-000"
    work = ShardWork(folder, "aaaa")
    work.put(3, {"records": [{"clip_id": "v-3", "keep": False, "drop_reasons": ["too_short"]}]})
    assert ShardWork(folder, "aaaa").get(3)["records"][0]["clip_id"] == "v-3"
    assert ShardWork(folder, "aaaa", fresh=True).get(3) is None  # force: every video again
    work = ShardWork(folder, "aaaa")
    work.put(3, {"records": [{"clip_id": "v-3", "keep": False, "drop_reasons": ["too_short"]}]})
    assert ShardWork(folder, "bbbb").get(3) is None  # another config or other rows
    # a kept clip whose spooled file is gone, or a result cut short, is curated again
    work = ShardWork(folder, "cccc")
    sig = (np.arange(6, dtype=np.uint64).reshape(2, 3), np.ones((2, 4, 4, 3), np.uint8), np.array([0, 9]))
    rec = {"clip_id": "v-4-000000-000016", "keep": True, "drop_reasons": []}
    work.put(4, {"records": [rec], "pending": [(rec, sig)], "thumbs": [], "scenes": {"cuts": []}})
    assert work.get(4) is None
    (work.spool / "v-4-000000-000016.mp4").write_bytes(b"mp4")
    got = work.get(4)
    (got_rec, got_sig), = got["pending"]
    assert got_rec is got["records"][0] and all(
        a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(got_sig, sig, strict=True))
    (work.videos / "000000005.json").write_text('{"records": [')
    assert work.get(5) is None


def test_each_kept_clip_is_on_disk_once_while_the_tars_are_written(small_world, tmp_path, monkeypatch):
    # A production shard spools tens of GB of clips: as each goes into its tar, its spooled file goes.
    import components.curate.stage as stage
    from t2v.config import load_curate_config

    raw, _ = small_world
    cfg = load_curate_config(REPO / "configs/tiny/curate.yaml").model_copy(update={"video_workers": 1, "shard_max_clips": 4})
    spooled_after_each_tar, original = [], stage.write_tar

    def write_tar(path, samples):
        original(path, samples)
        spooled_after_each_tar.append(len(list((tmp_path / "out" / "shards").glob(".work-000/spool/*.mp4"))))

    monkeypatch.setattr(stage, "write_tar", write_tar)
    summary = stage.curate_shard(raw, tmp_path / "out", cfg)
    kept = summary["kept"]
    assert len(spooled_after_each_tar) == -(-kept // 4) > 1
    assert spooled_after_each_tar == [max(0, kept - 4 * (i + 1)) for i in range(len(spooled_after_each_tar))]
