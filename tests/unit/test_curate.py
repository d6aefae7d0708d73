"""The curate stage on a tiny synthetic world: 2 shards + merge, checked against the planted truth.

The world is the tiny profile's (64x64, 25 fps) with 16 raw videos, 2 corrupt files and each defect
planted in 10 % of the scenes, so that every filter has a handful of positives to be measured on.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from components.curate import filters, transitions
from components.curate.stage import curate_shard, kept_filter, merge_manifests
from t2v.config import CurateConfig, load_curate_config
from t2v.shards import write_tar

REPO = Path(__file__).resolve().parents[2]
DEFECTS = ("static", "too_fast", "dark", "blurred", "subtitles", "watermark", "black_borders", "duplicate")


def _truth_scene(video: dict, start: int, end: int) -> dict:
    return max(video["scenes"], key=lambda s: min(end, s["end_frame"]) - max(start, s["start_frame"]))


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    from t2v.world import WorldConfig, generate_raw_videos

    root = tmp_path_factory.mktemp("curate")
    world = yaml.safe_load((REPO / "configs/tiny/world.yaml").read_text())
    world.update(num_raw_videos=16, corrupt_files=2, seed=0)
    world.update({f"rate_{d}": 0.1 for d in DEFECTS})
    generate_raw_videos(WorldConfig(**world), root / "raw")
    cfg = load_curate_config(REPO / "configs/tiny/curate.yaml")
    out = root / "out"
    summaries = [curate_shard(root / "raw", out, cfg, shard_index=i, num_shards=2) for i in range(2)]
    merged = merge_manifests(out, summaries)
    meta = {v["video_id"]: v for v in _read_jsonl(root / "raw" / "metadata.jsonl")}
    return {
        "raw": root / "raw",
        "out": out,
        "cfg": cfg,
        "summaries": summaries,
        "merged": merged,
        "meta": meta,
    }


def test_shards_are_readable_webdataset(curated):
    import webdataset as wds

    from t2v.video import read_video

    out = curated["out"]
    tars = sorted((out / "shards").glob("*.tar"))
    assert tars, "no shards written"
    assert {t.name for t in tars} == {
        Path(s).name for s in sum((s["shards"] for s in curated["summaries"]), [])
    }
    assert all(t.name.startswith(("clips-000-", "clips-001-")) for t in tars)
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False, empty_check=False))
    assert len(samples) == sum(s["kept"] for s in curated["summaries"])
    sample = samples[0]
    assert {"mp4", "json", "txt"} <= set(sample)
    meta = json.loads(sample["json"])
    frames, fps = read_video(sample["mp4"])
    assert frames.shape == (meta["num_frames"], 64, 64, 3)
    assert meta["num_frames"] >= curated["cfg"].clip_min_frames
    assert round(fps) == meta["fps"] == 25
    assert sample["txt"].decode() == meta["caption"]
    assert set(meta["scores"]) >= {
        "brightness",
        "sharpness",
        "motion",
        "border_fraction",
        "subtitle",
        "watermark",
    }

    # The training index (kept.jsonl) selects a subset of the shard samples.
    keep = kept_filter(out)
    selected = [s for s in samples if keep(s)]
    kept = _read_jsonl(out / "kept.jsonl")
    assert len(selected) == len(kept) == curated["merged"]["kept"] > 0
    assert all((out / k["shard"]).exists() for k in kept)


def test_manifest_and_outputs(curated):
    import pyarrow.parquet as pq

    out = curated["out"]
    records = _read_jsonl(out / "manifest.jsonl")
    assert pq.read_table(out / "manifest.parquet").num_rows == len(records)
    clips = [r for r in records if r["start_frame"] is not None and "too_short" not in r["drop_reasons"]]
    assert len(clips) == curated["merged"]["clips"] > 20
    for r in clips:
        assert r["keep"] == (not r["drop_reasons"])
        assert set(r["scores"]) >= {"brightness", "sharpness", "laplacian_var", "motion", "saturation"}
        assert r["caption"]
    html = (out / "report.html").read_text()
    assert "precision" in html and "black_borders" in html
    # Histograms with thresholds, example thumbnails per reason, and the cost of each step.
    assert html.count("data:image/png;base64,") >= 6 and "dark_max_luma = " in html
    assert "<h3>kept (" in html and "<h3>dark (" in html and html.count("data:image/jpeg;base64,") >= 6
    assert "<h2>Costs</h2>" in html and "motion" in html
    assert set(curated["merged"]["step_seconds"]) >= {"decode", "scenes", "motion", "encode", "hashes"}


def test_corrupt_files_recorded_with_reason(curated):
    records = _read_jsonl(curated["out"] / "manifest.jsonl")
    corrupt = [v for v in curated["meta"].values() if v["corrupt"]]
    assert len(corrupt) == 2
    for video in corrupt:
        rec = [r for r in records if r["video_id"] == video["video_id"]]
        assert len(rec) == 1 and rec[0]["drop_reasons"] == ["corrupt"] and not rec[0]["keep"]
        assert rec[0]["error"] and "\n" not in rec[0]["error"]
    readable = {r["video_id"] for r in records if r["start_frame"] is not None}
    assert readable == {v for v, m in curated["meta"].items() if not m["corrupt"]}
    assert curated["merged"]["corrupt"] == 2


def test_scene_cuts_match_planted_boundaries(curated):
    scenes = []
    for p in sorted(curated["out"].glob("scenes-*.jsonl")):
        scenes.extend(_read_jsonl(p))
    found = planted = matched = 0
    for s in scenes:
        truth = [sc["start_frame"] for sc in curated["meta"][s["video_id"]]["scenes"][1:]]
        planted += len(truth)
        found += len(s["cuts"])
        matched += sum(any(abs(c - t) <= 2 for c in s["cuts"]) for t in truth)
    assert planted > 20
    assert matched / planted >= 0.9, (matched, planted)
    assert matched / found >= 0.9, (matched, found)


def _precision_recall(records: list[dict], meta: dict) -> dict[str, tuple[float, float, int]]:
    """Independent of components.curate.report: planted defects of the scene each clip overlaps most."""
    counts = {d: [0, 0, 0] for d in DEFECTS}
    for r in records:
        if r["start_frame"] is None or "too_short" in r["drop_reasons"]:
            continue
        planted = set(_truth_scene(meta[r["video_id"]], r["start_frame"], r["end_frame"])["defects"])
        for d in DEFECTS:
            flagged = d in r["drop_reasons"]
            counts[d][0] += flagged and d in planted
            counts[d][1] += flagged and d not in planted
            counts[d][2] += (not flagged) and d in planted
    return {d: (tp / max(tp + fp, 1), tp / max(tp + fn, 1), tp + fn) for d, (tp, fp, fn) in counts.items()}


def test_filters_catch_planted_defects(curated):
    records = _read_jsonl(curated["out"] / "manifest.jsonl")
    pr = _precision_recall(records, curated["meta"])
    for d in DEFECTS:
        precision, recall, support = pr[d]
        assert support >= 3, f"{d}: only {support} planted clips"
        floor = 0.8 if d in ("dark", "blurred", "static", "too_fast") else 0.6
        assert precision >= floor and recall >= floor, f"{d}: precision {precision:.2f} recall {recall:.2f}"
    # The merge's own evaluation agrees with the independent count.
    ev = curated["merged"]["evaluation"]["filters"]
    for d in DEFECTS:
        assert ev[d]["recall"] == pytest.approx(pr[d][1], abs=1e-3)
        assert ev[d]["precision"] == pytest.approx(pr[d][0], abs=1e-3)
    # Cross-shard near-duplicates are found: at least one duplicate's source lies in the other shard.
    shard_of = {}
    for p in curated["out"].glob("manifest-[0-9][0-9][0-9].jsonl"):
        shard_of.update({r["clip_id"]: p.name for r in _read_jsonl(p)})
    cross = [r for r in records if r.get("duplicate_of") and shard_of[r["duplicate_of"]] != shard_of[r["clip_id"]]]
    assert cross


def test_kept_clips_have_their_scene_caption(curated):
    records = _read_jsonl(curated["out"] / "manifest.jsonl")
    kept = [r for r in records if r["keep"]]
    assert kept
    for r in kept:
        video = curated["meta"][r["video_id"]]
        scene = _truth_scene(video, r["start_frame"], r["end_frame"])
        assert r["caption"] == scene["caption"]
        assert r["title"] == video["title"]
        assert scene["start_frame"] <= r["start_frame"] and r["end_frame"] <= scene["end_frame"]
        assert not scene["defects"]  # nothing planted slipped through (precision of the kept set)
    index = {k["clip_id"]: k for k in _read_jsonl(curated["out"] / "kept.jsonl")}
    assert set(index) == {r["clip_id"] for r in kept}
    assert all(index[r["clip_id"]]["caption"] == r["caption"] for r in kept)


def _tar_differences(first: bytes, again: bytes) -> list[str]:
    """What differs between two tars, member by member: names, header fields, payload bytes."""
    with tarfile.open(fileobj=io.BytesIO(first)) as a, tarfile.open(fileobj=io.BytesIO(again)) as b:
        ma, mb = a.getmembers(), b.getmembers()
        out = [] if [m.name for m in ma] == [m.name for m in mb] else ["member names/order differ"]
        for x, y in zip(ma, mb):
            fields = ("name", "size", "mtime", "mode", "uid", "gid", "uname", "gname", "type", "pax_headers")
            hx, hy = ({f: getattr(m, f) for f in fields} for m in (x, y))
            if hx != hy:
                out.append(f"{x.name}: header {hx} != {hy}")
            px, py = a.extractfile(x).read(), b.extractfile(y).read()
            if px != py:
                at = next((i for i, (u, v) in enumerate(zip(px, py)) if u != v), min(len(px), len(py)))
                out.append(f"{x.name}: payload differs from byte {at} ({len(px)} vs {len(py)} bytes)")
    return out or ["tar framing differs"]


def test_rerun_is_idempotent(curated):
    """A recomputed shard is byte-for-byte the shard the first run wrote (tars and manifest)."""
    out, raw, cfg = curated["out"], curated["raw"], curated["cfg"]
    before = {p.name: p.read_bytes() for p in out.glob("manifest*.jsonl")}
    shard0 = {p.name: p.read_bytes() for p in (out / "shards").glob("clips-000-*.tar")}
    first = {p: p.read_bytes() for p in sorted((out / "shards").glob("clips-001-*.tar"))}
    inodes = {p: p.stat().st_ino for p in first}
    with tarfile.open(next(iter(first))) as tar:  # the comparison below is not vacuous
        assert any(n.endswith(".mp4") for n in tar.getnames())
    again = curate_shard(raw, out, cfg, shard_index=0, num_shards=2)
    assert again.get("skipped") is True  # the done marker matches: no work
    redone = curate_shard(raw, out, cfg, shard_index=1, num_shards=2, force=True)
    assert not redone.get("skipped")
    merge_manifests(out)
    after = {p.name: p.read_bytes() for p in out.glob("manifest*.jsonl")}
    assert after == before
    assert sorted((out / "shards").glob("clips-001-*.tar")) == list(first)
    for path, data in first.items():
        assert path.stat().st_ino != inodes[path], f"{path.name} was not rewritten"
        recomputed = path.read_bytes()
        assert recomputed == data, (
            f"{path.name} recomputed with other bytes: {_tar_differences(data, recomputed)}"
        )
    assert {p.name: p.read_bytes() for p in (out / "shards").glob("clips-000-*.tar")} == shard0
    assert not list((out / "shards").glob(".tmp*"))


def test_shard_tars_depend_on_their_samples_only(tmp_path):
    """Clip and latent shards: the same samples give the same tar bytes, whenever they are written."""
    import webdataset as wds

    from t2v.shards import write_shards

    samples = [
        {"__key__": f"clip-{i}", "txt": f"caption {i}", "mp4": bytes([i]) * (700 + i), "json": b"{}"}
        for i in range(3)
    ]
    write_tar(tmp_path / "a.tar", samples)
    time.sleep(1.1)  # the clock moves on; the bytes must not
    write_tar(tmp_path / "b.tar", [dict(s) for s in samples])
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [f"clip-{i}.{e}" for i in range(3) for e in ("json", "mp4", "txt")]
        assert all(m.mtime == 0 and m.isreg() for m in members)
    read = list(wds.WebDataset(str(tmp_path / "a.tar"), shardshuffle=False, empty_check=False))
    assert [r["__key__"] for r in read] == ["clip-0", "clip-1", "clip-2"]
    assert read[1]["mp4"] == samples[1]["mp4"] and read[2]["txt"] == b"caption 2"
    first = write_shards([dict(s) for s in samples], tmp_path / "one", "latents", 2)
    time.sleep(1.1)
    second = write_shards([dict(s) for s in samples], tmp_path / "two", "latents", 2)
    assert [p.name for p in first] == ["latents-00000.tar", "latents-00001.tar"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_bad_config_names_the_field(tmp_path):
    with pytest.raises(ValidationError, match="motion_min"):
        CurateConfig(motion_min=-1.0)
    with pytest.raises(ValidationError, match="clip_max_frames"):
        CurateConfig(clip_max_frames=1)
    with pytest.raises(ValidationError, match="clip_min_frames"):
        CurateConfig(clip_min_frames=50, clip_max_frames=20)
    with pytest.raises(ValidationError, match="dedup_threshold"):
        CurateConfig(dedup_threshold=3)  # unknown field
    bad = yaml.safe_load((REPO / "configs/tiny/curate.yaml").read_text())
    bad["filters"]["dark_max_luma"] = 300
    path = tmp_path / "curate.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValidationError, match="dark_max_luma"):
        load_curate_config(path)
    # Both profiles' files are valid.
    for profile in ("tiny", "step-video-t2v-30b"):
        load_curate_config(REPO / "configs" / profile / "curate.yaml")


def test_scores_are_pure_functions_of_frames():
    rng = np.random.default_rng(0)
    frames = np.full((20, 48, 64, 3), 120, np.uint8)
    for t in range(20):  # a white square moving right, 1 px per frame
        frames[t, 16:28, 10 + t : 22 + t] = 240
    frames = np.clip(frames + rng.normal(0, 2, frames.shape), 0, 255).astype(np.uint8)
    cfg = CurateConfig()
    a = filters.score_clip(frames, cfg)
    assert a == filters.score_clip(frames.copy(), cfg)
    assert filters.decide(a, cfg) == []
    still = np.repeat(frames[:1], 20, axis=0)
    assert "static" in filters.decide(filters.score_clip(still, cfg), cfg)
    boxed = frames.copy()
    boxed[:, :6] = 0
    boxed[:, -6:] = 0
    assert filters.border_fraction(boxed) == pytest.approx(12 / 48)
    assert "black_borders" in filters.decide(filters.score_clip(boxed, cfg), cfg)
    assert "dark" in filters.decide(filters.score_clip((frames * 0.1).astype(np.uint8), cfg), cfg)


def _ramp_card(width: int, height: int) -> np.ndarray:
    """Three stripes, each a linear colour ramp along x (a test card like FFmpeg's rgbtestsrc): smooth
    shading, where brighter and shifted look alike."""
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    card = np.zeros((height, width, 3), np.float32)
    for k in range(3):
        card[k * height // 3 : (k + 1) * height // 3, :, k] = ramp
    return card.astype(np.uint8)


def test_a_fade_over_a_still_shot_is_not_motion():
    """A fade to black over a still shot of smooth shading (where a ramp made darker looks like the ramp
    moved): the second frame of each pair is relit to the first's before the flow is measured."""
    cfg = CurateConfig()
    still = np.repeat(_ramp_card(3 * 96, 48)[None, :, 40:136], 30, axis=0)
    fading = still.copy()
    fading[-8:] = (fading[-8:] * np.linspace(1.0, 0.0, 8, dtype=np.float32)[:, None, None, None]).astype(np.uint8)
    assert filters.motion(still, 8)[0] < 0.01
    assert filters.motion(fading, 8)[0] < 0.05, filters.motion(fading, 8)  # 0.60 % of the width a frame before
    assert "static" in filters.decide(filters.score_clip(fading, cfg), cfg)


def test_a_featureless_pan_is_not_static_and_a_frozen_featureless_picture_is():
    """A slow pan over smooth shading with no edge (a sky, a defocused wall; mandelbrot zoomed into a
    smooth region): the flow has no texture to measure and reads ~0, but the frames change; it is
    `blurred` (featureless), not `static`. Frozen, the same picture is both."""
    import cv2

    cfg = CurateConfig()
    field = cv2.GaussianBlur(np.random.default_rng(0).normal(0, 1, (64, 400)).astype(np.float32), (0, 0), 40)
    field = (field - field.min()) / (field.max() - field.min())
    big = np.stack([field * 200 + 20, field[::-1] * 180 + 40, 120 + field * 60], -1).astype(np.float32)
    pan = np.stack([
        cv2.warpAffine(big, np.float32([[1, 0, -0.25 * t], [0, 1, 0]]), (96, 64), flags=cv2.INTER_LINEAR)
        for t in range(24)
    ]).round().astype(np.uint8)
    scores = filters.score_clip(pan, cfg)
    assert scores["motion"] < cfg.motion_min and scores["frame_diff"] > filters.STILL_FRAME_DIFF, scores  # unseen by the flow
    assert filters.decide(scores, cfg) == ["blurred"], scores
    frozen = filters.score_clip(np.repeat(pan[:1], 24, axis=0), cfg)
    assert filters.decide(frozen, cfg) == ["blurred", "static"], frozen


def _transitions(frames: np.ndarray, seconds: float = 1.5) -> list[tuple[int, int]]:
    finder = transitions.TransitionFinder(round(seconds * 25) + 4)
    found = [span for f in filters.resize_frames(frames, 128) for span in finder.push(f)]
    return found + finder.finish()


def test_dissolves_are_transitions_and_motion_light_and_fades_are_not():
    """A cross-dissolve's frames are mixes of the two shots; a pan, a zoom, a soft object moving and light
    coming up also change every frame a little, and are no transition."""
    import cv2

    from tests.fixtures.curate_external import _pan
    from tests.fixtures.curate_media import lavfi_frames

    shot = lavfi_frames("testsrc2", (160, 96), 25, 2.0)
    zoom = lavfi_frames("mandelbrot", (160, 96), 25, 2.0)
    for n in (6, 15, 30):
        w = np.linspace(0, 1, n + 2)[1:-1, None, None, None]
        mixed = (shot[-n:] * (1 - w) + zoom[:n] * w).round().astype(np.uint8)
        (span,) = _transitions(np.concatenate([shot[:-n], mixed, zoom[n:]]))
        assert abs(span[0] - (50 - n)) <= 3 and abs(span[1] - 50) <= 3, (n, span)
    assert _transitions(np.concatenate([shot, zoom])) == []  # a hard cut is the cut detector's
    big = lavfi_frames("mandelbrot", (480, 96), 25, 3.0)
    assert _transitions(_pan(big, 160, 2.0, 0)) == []  # a pan
    assert _transitions(zoom) == []  # a zoom into smooth shading (its ends are one view)
    bars = np.stack([cv2.GaussianBlur(f, (0, 0), 8) for f in lavfi_frames("smptehdbars", (480, 96), 25, 3.0)])
    assert _transitions(_pan(bars, 160, 2.0, 0)) == []  # a soft picture panned: as detailed as ever
    disc = np.full((60, 96, 160, 3), 100, np.uint8)
    for i, f in enumerate(disc):
        cv2.circle(f, (20 + 2 * i, 48), 36, (240, 200, 60), -1)
    assert _transitions(np.stack([cv2.GaussianBlur(f, (0, 0), 10) for f in disc])) == []  # soft object moving
    light = np.linspace(0.4, 1.0, 40, dtype=np.float32)[:, None, None, None]
    assert _transitions((shot[:40] * light).astype(np.uint8)) == []  # light coming up
    black = np.linspace(1, 0, 12, dtype=np.float32)[:, None, None, None]
    fade = np.concatenate([shot[:30], (shot[30:42] * black).astype(np.uint8), (zoom[:12] * black[::-1]).astype(np.uint8), zoom[12:]])
    # Through black: the cut check's fade. A window from the fade-out's dim end reads the fade-in as a
    # dissolve from a dim picture; what is found stays within the fading frames.
    assert all(30 <= first and end <= 54 for first, end in _transitions(fade)), _transitions(fade)


def test_a_transition_is_a_steady_mix_of_two_different_pictures():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 255, 576).astype(np.float32), rng.uniform(0, 255, 576).astype(np.float32)

    def window(weights, off=None):
        thumbs = np.stack([(1 - w) * a + w * b for w in weights])
        if off is not None:  # a picture away from the line between the two
            thumbs[len(weights) // 2] += off
        return thumbs

    steady = [0, 0, 0.2, 0.4, 0.6, 0.8, 1, 1]
    assert transitions.blend_transition(window(steady)) == (2, 5)
    assert transitions.blend_transition(window([0, 0, 0.05, 0.15, 0.25, 0.85, 0.95, 1, 1])) is None  # a jump: a cut
    assert transitions.blend_transition(window([0, 0, 0.2, 0.4, 1, 1])) is None  # too short to tell
    assert transitions.blend_transition(window([0, 0, 0.4, 0.6, 0.95, 1, 1])) is None  # two mixed pictures only
    noise = rng.normal(0, 1, 576).astype(np.float32)
    noise -= (noise @ (b - a)) / ((b - a) @ (b - a)) * (b - a)  # at right angles to the change
    far = noise / np.linalg.norm(noise) * 0.5 * np.linalg.norm(b - a)
    assert transitions.blend_transition(window(steady, far)) is None  # a picture that is no mix of the two
    assert transitions.blend_transition(window(steady, 0.5 * far)) == (2, 5)
    relit = np.stack([a * (1 + 0.5 * w) + 5 for w in steady])  # one picture made brighter
    assert transitions.blend_transition(relit) is None
    flat = np.stack([(1 - w) * a + w * np.full_like(a, 20) for w in steady])  # a fade to a flat grey
    assert transitions.blend_transition(flat) is None


def test_a_flash_in_a_slow_pan_is_not_fast_motion(tmp_path):
    """Two white frames (a camera flash) in a slow pan over a test card with little texture, through
    x264 and back: pairs across the flash are left out, so the motion is the pan's, whatever frames the
    clip's pairs fall on (before, 6-7x the pan's at some clip lengths)."""
    import av

    from tests.fixtures.curate_external import _pan
    from tests.fixtures.curate_media import lavfi_frames, write_video

    card = lavfi_frames("yuvtestsrc", (480, 288), 25, 1.7)[:40, 150:246]  # the chroma stripes only
    pan = _pan(card, 160, 1.2, 100)
    flashed = pan.copy()
    flashed[20:22] = 255

    def by_length(frames: np.ndarray) -> list[float]:
        write_video(tmp_path / "clip.mp4", frames)
        with av.open(str(tmp_path / "clip.mp4")) as c:
            decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        return [filters.motion(filters.resize_frames(decoded[:n], 128), 8)[0] for n in range(26, 41)]

    plain, lit = by_length(pan), by_length(flashed)
    assert min(lit) > 0.2, lit  # the pan is seen (0.75 % of the width a frame, measured low)
    assert max(lit) < 2.0 * max(plain), (plain, lit)


@pytest.mark.parametrize("exact_max", [20_000, 50])  # a flat index, and an IVF index
def test_dedup_index_finds_planted_copies(exact_max):
    from components.curate.dedup import find_duplicates

    rng = np.random.default_rng(1)
    n = 2000
    hashes = rng.random((n, 5, 64)) < 0.5
    thumbs = rng.integers(-60, 60, (n, 3, 8, 8, 3)).astype(np.int8)
    src = np.arange(0, n - 1, 50)
    hashes[src + 1] = hashes[src] ^ (rng.random((len(src), 5, 64)) < 0.08)  # ~5 bits flipped per hash
    thumbs[src + 1] = np.clip(thumbs[src].astype(int) + rng.integers(-1, 2, thumbs[src].shape), -128, 127)
    found = find_duplicates(list(zip(hashes, thumbs, strict=True)), CurateConfig(dedup_exact_max=exact_max))
    hits = [i for i, f in enumerate(found) if f is not None]
    assert hits == (src + 1).tolist()
    assert all(found[i][0] == i - 1 for i in hits)


def _ramp_pan(speed: float, start: int, frames: int = 36, w: int = 96, h: int = 64) -> np.ndarray:
    """A window panning over a deterministic picture of smooth horizontal colour ramps."""
    x = np.arange(4 * w, dtype=np.float32)
    ramp = np.stack([(x * 0.6) % 256, (x * 0.35 + 40) % 256, 255 - (x * 0.5) % 256], axis=-1)
    big = np.broadcast_to(ramp[None], (h, 4 * w, 3))
    return np.stack([big[:, int(start + i * speed) : int(start + i * speed) + w] for i in range(frames)]).astype(
        np.uint8
    )


def test_dedup_needs_the_sequence_to_agree_and_allows_a_boundary_offset():
    from components.curate import filters
    from components.curate.dedup import find_duplicates

    cfg = CurateConfig()
    shot = _ramp_pan(1.0, 40, frames=60)  # a pan of a pixel a frame (the offset moves the view 5 px)
    original, copy = shot[:36], np.clip(shot[5:41].astype(np.int16) + 3, 0, 255).astype(np.uint8)  # 5 frames off
    back = _ramp_pan(-1.0, 110)  # the same picture panned the other way: single frames match the original's
    sigs = [filters.clip_signature(c, cfg) for c in (original, back, copy)]
    assert filters.hash_distance(sigs[1][0], sigs[0][0]) <= cfg.dedup_max_hamming  # frame by frame alike
    found = find_duplicates(sigs, cfg)
    assert found[0] is None and found[1] is None, found  # the other pan is no copy
    assert found[2] is not None and found[2][0] == 0, found  # the re-used shot, cut 5 frames later, is


def test_cluster_cap_balances_concepts():
    from components.curate.dedup import cluster_cap

    rng = np.random.default_rng(0)
    records = []
    for i in range(60):  # three looks: 40, 15 and 5 clips
        look = 0 if i < 40 else 1 if i < 55 else 2
        thumbs = np.full((3, 8, 8, 3), (-50, 0, 50)[look], np.int8) + rng.integers(-2, 3, (3, 8, 8, 3)).astype(np.int8)
        records.append({"clip_id": f"c{i:02d}", "keep": True, "drop_reasons": [], "scores": {"sharpness": float(i)},
                        "thumbs": filters.thumbnails_to_hex(thumbs)})
    stats = cluster_cap(records, CurateConfig(balance_clusters=3, balance_cluster_cap=10))
    assert sorted(stats["sizes_before"].values()) == [5, 15, 40]
    assert sorted(stats["sizes_after"].values()) == [5, 10, 10]
    assert sum(r["keep"] for r in records) == 25
    capped = [r for r in records if "cluster_cap" in r["drop_reasons"]]
    assert all(int(r["clip_id"][1:]) < 45 for r in capped)  # the least sharp of the big looks go


def test_blur_is_judged_only_where_there_is_contrast():
    """A blurred bright pattern is blurred; the same pattern at a tenth of its contrast (a dark, flat
    picture: no edge to judge) is not called blurred, whatever its edge score, unless the gate is off."""
    import cv2

    yy, xx = np.mgrid[0:64, 0:128]
    board = (((yy // 16) + (xx // 16)) % 2 * 200 + 30).astype(np.float32)
    soft = cv2.GaussianBlur(board, (0, 0), 5.0)
    # a window drifting over it, 1 px a frame, so that nothing else (static) is what decides
    clip = np.stack([np.stack([soft[:, t : t + 96]] * 3, axis=-1) for t in range(20)])
    cfg = CurateConfig()
    bright = filters.score_clip(clip.astype(np.uint8), cfg)
    assert bright["contrast"] >= cfg.blur_min_contrast and "blurred" in filters.decide(bright, cfg)
    flat = filters.score_clip((clip * 0.1).astype(np.uint8), cfg)
    assert flat["contrast"] < cfg.blur_min_contrast and flat["sharpness"] < cfg.blur_min_sharpness
    assert "blurred" not in filters.decide(flat, cfg)
    assert "blurred" in filters.decide(flat, cfg.model_copy(update={"blur_min_contrast": 0.0}))
