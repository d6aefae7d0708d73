"""The curate stage on inputs the world generator did not make: every kind of bad input recorded with a
one-line reason while the stage finishes; tables in JSONL, CSV and parquet; stable-hash sharding;
variable frame rate, display rotation, 10-bit HEVC with an audio track; streaming == whole-video cuts."""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from components.curate import inputs
from components.curate.stage import curate_shard, detect_scenes, merge_manifests, split_clips
from t2v import storage
from t2v.config import CurateConfig
from t2v.video import VideoDecodeError, VideoReader, Yuv420Clip, frame_rates, read_video, to_rgb
from tests.fixtures.curate_media import (
    add_spherical_metadata,
    lavfi_frames,
    moving_pattern,
    plant_bad_inputs,
    set_display_rotation,
    write_hdr_video,
    write_size_changing_video,
    write_table,
    write_video,
)

CFG = dict(clip_min_frames=8, clip_max_frames=16, scene_min_len=4, output_height=64, output_width=96, output_fps=25)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _stream_clips(path: Path, cfg: CurateConfig) -> list[tuple]:
    """``(start, analysis frames, output clip)`` of every clip ``stream_video`` gives for ``path``."""
    from components.curate.video_pass import Timers, stream_video

    clips: list = []

    def keep(scene, start, end, small, out, ok):
        if ok:
            clips.append((start, small, out))

    with VideoReader(path) as reader:
        stream_video(reader, cfg, 25, keep, Timers())
    return clips


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    rows = plant_bad_inputs(root / "raw")
    rows.append({**rows[-1], "video_id": "good-again"})  # a duplicate URI
    rows[-1]["expect"] = "duplicate_uri"
    write_table(root / "raw" / "metadata.jsonl", rows, bad_line_after=3)
    cfg = CurateConfig(**CFG)
    out = root / "out"
    summaries = [curate_shard(root / "raw", out, cfg, shard_index=i, num_shards=2) for i in range(2)]
    merged = merge_manifests(out, summaries)
    return {"rows": rows, "out": out, "merged": merged, "summaries": summaries}


def test_every_bad_input_is_one_record_with_a_reason(bad):
    records = _jsonl(bad["out"] / "manifest.jsonl")
    by_id: dict[str, list[dict]] = {}
    for r in records:
        by_id.setdefault(r["video_id"], []).append(r)
    # One line more than the rows (the broken line), and every line is in the manifest.
    assert bad["merged"]["videos"] == len(bad["rows"]) + 1
    assert {r["video_index"] for r in records} == set(range(len(bad["rows"]) + 1))
    for row in bad["rows"]:
        vid = row["video_id"] if row["expect"] != "duplicate_uri" else None
        if row["expect"] == "duplicate_uri":
            dup = [r for r in records if r["drop_reasons"] == ["duplicate_uri"]]
            assert len(dup) == 1 and "duplicate of row" in dup[0]["error"]
            continue
        got = by_id[vid]
        if row["expect"] == "ok":
            assert any(r["keep"] for r in got) and all(r["start_frame"] is not None for r in got)
            continue
        assert len(got) == 1, (vid, got)
        rec = got[0]
        assert rec["drop_reasons"] == [row["expect"]], (vid, rec["error"])
        assert rec["error"] and "\n" not in rec["error"] and not rec["keep"]
    broken = [r for r in records if r["drop_reasons"] == ["bad_metadata"]]
    assert len(broken) == 1 and "line 4" in broken[0]["error"] and "JSON" in broken[0]["error"]
    truncated = by_id["truncated"][0]["error"]
    assert "truncated" in truncated
    assert bad["merged"]["rejected_by_reason"]["not_video"] == 3
    assert "cover picture" in by_id["song"][0]["error"]
    assert bad["merged"]["kept"] >= 1


def test_tables_in_three_formats_shard_the_same(tmp_path):
    rows = [{"uri": f"s3://bucket/v/{i:05d}.mp4", "title": f"video {i}", "license": "cc-by"} for i in range(200)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["uri", "title", "license"])
        w.writeheader()
        w.writerows(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet", row_group_size=50)
    shards = {}
    for ext in ("jsonl", "csv", "parquet"):
        table = inputs.resolve_table(tmp_path / f"t.{ext}")
        parts = [inputs.shard_rows(table, i, 4) for i in range(4)]
        assert sorted(r.index for p in parts for r in p) == list(range(200))  # each row in one shard
        assert all(r.meta["license"] == "cc-by" and r.error is None for p in parts for r in p)
        shards[ext] = [[r.uri for r in p] for p in parts]
        assert min(len(p) for p in parts) > 25  # the hash spreads rows
    assert shards["jsonl"] == shards["csv"] == shards["parquet"]
    # Stable: a shard's rows depend on the URIs, not on the table's order.
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    again = [sorted(r.uri for r in inputs.shard_rows(inputs.resolve_table(tmp_path / "r.jsonl"), i, 4)) for i in range(4)]
    assert again == [sorted(p) for p in shards["jsonl"]]


def test_a_table_moved_with_its_videos_keeps_its_shards_and_ids(tmp_path):
    """Rows naming videos beside the table shard by their path relative to it: copying the folder
    elsewhere (another machine, a test's temporary directory) changes no shard and no video id, while a
    video outside the table's folder is keyed by its whole URI."""
    rows = [{"file": f"clips/{i:03d}.mp4"} for i in range(60)] + [{"uri": "s3://other/x.mp4"}]
    layouts = {}
    for name in ("a", "somewhere/much/deeper"):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        (folder / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        table = inputs.resolve_table(folder / "t.jsonl")
        parts = [inputs.shard_rows(table, i, 3) for i in range(3)]
        assert all(parts)
        layouts[name] = [[(r.index, r.video_id) for r in p] for p in parts]
        assert parts[0][0].uri.startswith(storage.to_uri(str(folder)))  # URIs stay absolute
    assert layouts["a"] == layouts["somewhere/much/deeper"]
    base = storage.to_uri(str(tmp_path / "a"))
    assert inputs.location_key(f"{base}/clips/001.mp4", base) == "clips/001.mp4"
    assert inputs.location_key("s3://other/x.mp4", base) == "s3://other/x.mp4"


def test_variable_frame_rate_plays_at_the_right_speed(tmp_path):
    frames = moving_pattern(48)
    times = [Fraction(i, 24) for i in range(24)] + [1 + Fraction(i, 60) for i in range(24)]
    write_video(tmp_path / "vfr.mp4", frames, times=times)
    with VideoReader(tmp_path / "vfr.mp4") as reader:
        out = list(reader.frames(fps=60))
    # 1 s at 24 fps then 0.4 s at 60 fps: 84 frames at 60 fps, each source picture held for its duration.
    assert len(out) == 84
    dec, _ = read_video(tmp_path / "vfr.mp4")
    ref = [dec[min(int((k + 0.5) / 60 * 24), 23)] if k < 60 else dec[24 + (k - 60)] for k in range(84)]
    assert all(np.array_equal(a, b) for a, b in zip(out, ref, strict=True))
    # The stage, left to choose (output_fps 0), writes this variable-rate video at 60 fps, not its average.
    (tmp_path / "t.jsonl").write_text('{"file": "vfr.mp4"}\n')
    cfg = CurateConfig(**{**CFG, "output_fps": 0, "clip_max_frames": 84, "clip_min_frames": 60,
                          "scene_trim_frames": 0, "motion_max": 1000.0, "blur_min_sharpness": 0.0})
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", cfg)
    clips = [r for r in _jsonl(tmp_path / "out" / "manifest-000.jsonl") if r["start_frame"] is not None]
    assert clips and all(r["fps"] == 60 for r in clips), clips
    assert sum(r["num_frames"] for r in clips) == 84


def test_an_mpeg_program_stream_on_a_field_clock_keeps_its_own_rate(tmp_path):
    # MPEG-1 in a program stream (.mpg): 25 pictures a second whose base rate reads 50 (the codec counts
    # two ticks a frame). Their pictures step evenly at the average rate: clips at 25 fps, each
    # picture once (they were written at 50 fps, every picture twice).
    with av.open(str(tmp_path / "a.mpg"), "w") as c:  # (MPEG-1/2 take only their standard rates)
        st = c.add_stream("mpeg1video", rate=25)
        st.width, st.height, st.pix_fmt = 96, 64, "yuv420p"
        for frame in moving_pattern(50):
            c.mux(st.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")))
        c.mux(st.encode())
    with VideoReader(tmp_path / "a.mpg") as reader:
        avg, base = frame_rates(reader._stream)
        assert (round(avg), round(base)) == (25, 50) and reader.steps_at_average_rate()
    (tmp_path / "t.jsonl").write_text('{"file": "a.mpg"}\n')
    cfg = CurateConfig(**{**CFG, "output_fps": 0, "clip_max_frames": 50, "clip_min_frames": 20,
                          "scene_trim_frames": 0, "motion_max": 1000.0, "blur_min_sharpness": 0.0})
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", cfg)
    clips = [r for r in _jsonl(tmp_path / "out" / "manifest-000.jsonl") if "fps" in r]
    assert clips and all(r["fps"] == 25 for r in clips), clips
    assert max(r["end_frame"] for r in clips) <= 50
    # and a variable-rate stream is not taken for one: its steps differ
    times = [Fraction(i, 24) for i in range(24)] + [1 + Fraction(i, 60) for i in range(24)]
    write_video(tmp_path / "vfr.mp4", moving_pattern(48), times=times)
    with VideoReader(tmp_path / "vfr.mp4") as reader:
        assert not reader.steps_at_average_rate()


def test_timestamp_jumps_in_a_transport_stream_are_bridged(tmp_path):
    # Two MPEG-TS recordings concatenated (as HLS segments are, or a broadcast recorded across a clock
    # reset): the second's clock starts again, and its pictures used to be dropped as out of order.
    # A clock that jumps 100 s ahead used to hold the last picture for 100 s (2500 copies).
    a = lavfi_frames("testsrc2", (96, 64), 25, 2.0)
    b = lavfi_frames("mandelbrot", (96, 64), 25, 2.0)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(write_video(tmp_path / "a.ts", a).read_bytes() + write_video(tmp_path / "b.ts", b).read_bytes())
    times = [Fraction(i, 25) for i in range(50)] + [100 + Fraction(i, 25) for i in range(50)]
    write_video(tmp_path / "jump.ts", np.concatenate([a, b]), times=times)
    for name in ("joined.ts", "jump.ts"):
        with VideoReader(tmp_path / name) as reader:
            got = np.stack(list(reader.frames(fps=25)))
            assert reader.timestamp_jumps == 1, name
        assert len(got) == 100, (name, len(got))
        picture = np.concatenate([a, b]).astype(int)
        for k in (10, 49, 50, 99):  # each picture where it belongs (testsrc2 then mandelbrot)
            err = np.abs(got[k].astype(int) - picture).mean(axis=(1, 2, 3))
            assert abs(int(err.argmin()) - k) <= 1 and err.min() < 12, (name, k, err.argmin(), err.min())
    (tmp_path / "t.jsonl").write_text('{"file": "joined.ts"}\n{"file": "jump.ts"}\n')
    summary = curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**CFG))
    assert summary["rejected"] == 0, summary
    scenes = _jsonl(tmp_path / "out" / "scenes-000.jsonl")
    assert [s["num_frames"] for s in scenes] == [100, 100]
    assert all(s["source"]["timestamp_jumps"] == 1 for s in scenes)
    # Where timestamps may not jump (mp4), a gap is a picture shown for that long, as a screen
    # recording holds one: 12 s of it.
    times = [Fraction(i, 25) for i in range(25)] + [13 + Fraction(i, 25) for i in range(25)]
    write_video(tmp_path / "pause.mp4", np.concatenate([a[:25], b[:25]]), times=times)
    with VideoReader(tmp_path / "pause.mp4") as reader:
        assert sum(1 for _ in reader.frames(fps=25)) == 25 + 12 * 25 + 25 and reader.timestamp_jumps == 0


def test_a_recording_joined_mid_stream_is_not_truncated(tmp_path):
    # A transport stream cut at an arbitrary byte (a capture started mid-broadcast): the pictures before
    # the first keyframe cannot be decoded, which used to read as a file 1.4 s short of its duration
    # ("truncated: decoded 100 frames (4.00 s) of 5.40 s declared") and reject it.
    frames = np.concatenate([lavfi_frames("mandelbrot", (192, 128), 25, 4.0), lavfi_frames("testsrc2", (192, 128), 25, 4.0)])
    data = write_video(tmp_path / "whole.ts", frames).read_bytes()
    cut = int(len(data) * 0.37) // 188 * 188 + 57  # inside a TS packet, inside the first GOP
    (tmp_path / "joined.ts").write_bytes(data[cut:])
    with VideoReader(tmp_path / "joined.ts") as reader:
        got = list(reader.frames(fps=25))
        declared = reader.info.duration_s
    assert declared > len(got) / 25 + 1.0  # the leading pictures are missing ...
    assert len(got) == 100  # ... and from the keyframe at 4 s, every picture is there
    # (the decoded pictures are testsrc2's second half)
    assert np.abs(got[-1].astype(int) - frames[-1]).mean() < 12


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])
def test_damage_inside_a_video_loses_its_clips_not_the_video(tmp_path, suffix):
    # 2 KB of noise over the middle of a recording (bit errors, a bad sector): the decoder rejects a
    # packet or conceals a frame. The video used to be rejected whole ("decoding stopped after 91
    # frames" in the mp4); now the damage is skipped, the clips showing pictures predicted from it are
    # dropped as "damaged", and the clean clips on either side are kept.
    frames = np.concatenate([lavfi_frames("mandelbrot", (192, 128), 25, 4.0), lavfi_frames("testsrc2", (192, 128), 25, 4.0)])
    data = bytearray(write_video(tmp_path / f"clean{suffix}", frames).read_bytes())
    at = int(len(data) * 0.3)
    data[at : at + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    (tmp_path / f"damaged{suffix}").write_bytes(bytes(data))
    with VideoReader(tmp_path / f"damaged{suffix}") as reader:
        got = list(reader.frames(fps=25))
        assert reader.damaged_packets + reader.damaged_frames > 0
        ranges = [tuple(r) for r in reader.damaged_ranges]
    assert len(got) == len(frames) and ranges and all(0 < a < b <= len(frames) for a, b in ranges), ranges
    cfg = CurateConfig(**CFG)
    runs = {}
    for name in ("clean", "damaged"):
        (tmp_path / f"{name}.jsonl").write_text(f'{{"file": "{name}{suffix}"}}\n')
        summary = curate_shard(tmp_path / f"{name}.jsonl", tmp_path / name, cfg)
        assert summary["rejected"] == 0, summary
        runs[name] = [r for r in _jsonl(tmp_path / name / "manifest-000.jsonl") if r["start_frame"] is not None]
    records = runs["damaged"]
    damaged = [r for r in records if r["drop_reasons"] == ["damaged"]]
    assert damaged and all(any(a < r["end_frame"] and r["start_frame"] < b for a, b in ranges) for r in damaged)
    for r in records:  # no other clip touches the damage
        if r not in damaged:
            assert all(r["end_frame"] <= a or r["start_frame"] >= b for a, b in ranges), (r, ranges)

    def decided(rs, upto):
        return [(r["start_frame"], r["end_frame"], r["keep"], tuple(r["drop_reasons"])) for r in rs if r["end_frame"] <= upto]

    # the clips before the damage are those of the undamaged file, decided alike, and some are kept
    upto = ranges[0][0] - cfg.scene_trim_frames
    before, clean = decided(records, upto), decided(runs["clean"], upto)
    assert set(clean) <= set(before) and any(k for _, _, k, _ in clean), (clean, before)
    (scene,) = _jsonl(tmp_path / "damaged" / "scenes-000.jsonl")
    assert scene["source"]["damaged_packets"] + scene["source"]["damaged_frames"] > 0


@pytest.mark.parametrize("suffix,header_declares_duration", [
    (".mkv", True), (".flv", True), (".nut", False), (".avi", True), (".mov", True),
])
def test_containers_whose_audio_runs_on_or_that_lack_presentation_times(tmp_path, suffix, header_declares_duration):
    # 2 s of video with 3.5 s of audio: the file's duration is the audio's, the video is complete (it
    # was "truncated" in Matroska, where the header's duration spans every track). 256 px wide, x264
    # codes B-frames, which AVI stores without presentation times: every frame, in order.
    frames = np.stack([np.full((48, 256, 3), 4 * i, np.uint8) for i in range(50)])
    frames[:, :, :32] = 255 - frames[:, :, :32]
    path = write_video(tmp_path / f"long_audio{suffix}", frames, audio=3.5)
    with VideoReader(path) as reader:
        got = list(reader.frames())
    assert len(got) == 50
    assert [int(round(f[:, 64:].mean() / 4)) for f in got] == list(range(50))
    # Cut to a third, the file is still found truncated: every track ends early (NUT keeps its duration
    # in the index at the end, like a stream without one: what is left of it is all that is known).
    if not header_declares_duration:
        return
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoDecodeError) as err:
        with VideoReader(cut) as reader:
            list(reader.frames())
    assert err.value.kind == "corrupt", err.value


def test_rotation_ten_bit_and_audio(tmp_path):
    frames = lavfi_frames("testsrc2", (96, 64), 25, 0.4)
    write_video(tmp_path / "rot.mp4", frames)
    set_display_rotation(tmp_path / "rot.mp4", 90)
    with VideoReader(tmp_path / "rot.mp4") as reader:
        first = next(iter(reader.frames()))
    assert first.shape == (96, 64, 3)  # shown portrait
    clockwise = np.rot90(frames[0], k=-1).astype(int)
    assert np.abs(first.astype(int) - clockwise).mean() < np.abs(first.astype(int) - np.rot90(frames[0]).astype(int)).mean() / 4
    write_video(tmp_path / "h10.mp4", frames, codec="libx265", pix_fmt="yuv420p10le", audio=True)
    with VideoReader(tmp_path / "h10.mp4") as reader:
        got = np.stack(list(reader.frames()))
        assert reader.info.bit_depth == 10 and reader.info.audio_streams == 1
    assert got.shape == frames.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - frames.astype(int)).mean() < 15


def test_streaming_cuts_and_clips_equal_whole_video(tmp_path):
    parts = [lavfi_frames(src, (96, 64), 25, 1.6) for src in ("testsrc2", "mandelbrot", "smptehdbars")]
    frames = np.concatenate([parts[0], parts[1][:13], parts[2], parts[0][::-1]])
    write_video(tmp_path / "cuts.mp4", frames)
    cfg = CurateConfig(**{**CFG, "output_height": 0, "output_width": 0})
    whole, fps = read_video(tmp_path / "cuts.mp4")
    cuts = detect_scenes(whole, fps, cfg)
    assert cuts == [40, 53, 93]  # the planted cuts, exactly
    expected = [(s, e) for _, s, e, is_clip in split_clips(len(whole), cuts, cfg, with_short=True) if is_clip]
    from components.curate.video_pass import Timers, stream_video

    got = []
    with VideoReader(tmp_path / "cuts.mp4") as reader:
        num, found = stream_video(
            reader, cfg, 25, lambda sc, s, e, small, out, ok: ok and got.append((s, e, out)), Timers()
        )
    assert (num, sorted(found)) == (len(whole), cuts)
    assert [(s, e) for s, e, _ in got] == expected
    # The output frames are the decoded frames themselves, kept as yuv420p (what the encoder takes).
    import av

    with av.open(str(tmp_path / "cuts.mp4")) as container:
        planes = [f.to_ndarray() for f in container.decode(container.streams.video[0])]
    assert all(isinstance(out, Yuv420Clip) for _, _, out in got)
    assert all(np.array_equal(np.stack(out.frames), np.stack(planes[s:e])) for s, e, out in got)
    # ... and read as RGB they are those pictures (up to swscale's chroma siting: the decoder's H.264 frames
    # are left-sited, re-wrapped planes centre-sited, which moves colour edges by half a chroma sample).
    assert all(np.abs(np.asarray(out).astype(int) - whole[s:e]).mean() < 6 for s, e, out in got)


def _dissolve(a: np.ndarray, b: np.ndarray, frames: int) -> np.ndarray:
    """``a`` then ``b``, the last ``frames`` of ``a`` mixed into the first of ``b`` (a cross-dissolve)."""
    w = np.linspace(0, 1, frames + 2)[1:-1, None, None, None]
    mixed = a[-frames:].astype(np.float32) * (1 - w) + b[:frames].astype(np.float32) * w
    return np.concatenate([a[:-frames], mixed.round().astype(np.uint8), b[frames:]])


def test_a_dissolve_between_shots_is_a_transition_not_part_of_a_clip(tmp_path):
    # Edited video joins shots by dissolves as often as by cuts: no two neighbouring frames differ by a
    # cut's change, so ContentDetector sees nothing (or a cut in the middle), and a clip showed one shot
    # melting into the next. The mixed frames are a scene of their own now, recorded as transition.
    src = {n: lavfi_frames(n, (96, 64), 25, 2.4) for n in ("testsrc2", "smptehdbars", "mandelbrot")}
    frames = _dissolve(_dissolve(src["testsrc2"], src["smptehdbars"], 12), src["mandelbrot"], 20)
    mixed = [(60 - 12, 60), (120 - 12 - 20, 120 - 12)]  # the planted mixed frames, [first, end)
    write_video(tmp_path / "dissolves.mp4", frames)
    cfg = CurateConfig(**{**CFG, "output_height": 0, "output_width": 0})
    whole, fps = read_video(tmp_path / "dissolves.mp4")
    cuts, spans = detect_scenes(whole, fps, cfg, with_transitions=True)
    assert len(spans) == 2, spans
    for (first, end), (f0, e0) in zip(spans, mixed, strict=True):
        assert abs(first - f0) <= 2 and abs(end - e0) <= 2, (spans, mixed)
    assert cuts == sorted(x for span in spans for x in span)
    expected = [(s, e) for _, s, e, ok in split_clips(len(whole), cuts, cfg, with_short=True, transitions=spans) if ok]
    assert not any(s < e0 and f0 < e for s, e in expected for f0, e0 in mixed)  # no clip shows a mixed frame
    from components.curate.video_pass import Timers, stream_video

    got, seen = [], []
    with VideoReader(tmp_path / "dissolves.mp4") as reader:
        _, found = stream_video(reader, cfg, 25, lambda sc, s, e, small, out, ok: ok and got.append((s, e)),
                                Timers(), on_transition=lambda sc, s, e: seen.append((s, e)))
    assert (sorted(found), seen, got) == (cuts, spans, expected)
    # Off, the clips run through them: a clip that begins in one shot and ends in the next.
    off = CurateConfig(**{**CFG, "output_height": 0, "output_width": 0, "scene_transition_max_seconds": 0})
    plain = detect_scenes(whole, fps, off)
    clips = split_clips(len(whole), plain, off)
    assert any(s < e0 and f0 < e for _, s, e in clips for f0, e0 in mixed)
    # The stage records each as one transition record, and the scenes file lists them.
    (tmp_path / "t.jsonl").write_text('{"file": "dissolves.mp4", "video_id": "d"}\n')
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", cfg)
    records = _jsonl(tmp_path / "out" / "manifest-000.jsonl")
    assert [(r["start_frame"], r["end_frame"]) for r in records if r["drop_reasons"] == ["transition"]] == spans
    (scene,) = _jsonl(tmp_path / "out" / "scenes-000.jsonl")
    assert [tuple(x) for x in scene["transitions"]] == spans and scene["cuts"] == cuts


def _disc_scene(width: int, height: int, frames: int, start: int) -> np.ndarray:
    """A white disc on grey moving right, drawn in proportion to the picture's height (centred framing)."""
    import cv2

    out = np.full((frames, height, width, 3), 90, np.uint8)
    for i in range(frames):
        cx = width / 2 + (start + i - 45) * height / 108
        cv2.circle(out[i], (round(cx), height // 2), round(height * 0.3), (250, 250, 250), -1, cv2.LINE_AA)
    return out


def _disc_aspect(rgb: np.ndarray) -> float:
    ys, xs = np.nonzero(rgb[..., 0] > 170)
    return (xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1)


def test_a_stream_that_changes_size_keeps_each_pictures_aspect(tmp_path):
    # 30 frames at 16:9, then the same scene re-framed at 4:3, then at twice that resolution.
    segments = [_disc_scene(192, 108, 30, 0), _disc_scene(144, 108, 30, 30), _disc_scene(288, 216, 30, 60)]
    path = write_size_changing_video(tmp_path / "resized.mkv", segments)
    from components.curate.video_pass import Timers, stream_video

    for out_size in ((64, 96), (0, 0)):  # a configured output size, and the source's own (the first frame's)
        cfg = CurateConfig(**{**CFG, "output_height": out_size[0], "output_width": out_size[1]})
        got = []
        with VideoReader(path) as reader:
            num, cuts = stream_video(
                reader, cfg, 25, lambda sc, s, e, small, out, ok, got=got: ok and got.append((s, e, small, out)),
                Timers(),
            )
        # The change of aspect ratio is a cut (the framing jumps); the change of resolution alone is not.
        assert (num, cuts) == (90, [30]), (out_size, cuts)
        assert got and all(e <= 30 - cfg.scene_trim_frames or s >= 30 + cfg.scene_trim_frames for s, e, _, _ in got)
        th, tw = out_size if out_size[0] else (108, 192)
        for s, _, small, out in got:
            assert out.shape[1:3] == (th, tw) and small.shape[1:3] == got[0][2].shape[1:3]
            # every picture keeps its own aspect ratio: the disc stays round, in the clip and in analysis
            assert abs(_disc_aspect(np.asarray(out)[0]) - 1.0) < 0.08, (out_size, s, _disc_aspect(np.asarray(out)[0]))
            assert abs(_disc_aspect(small[0]) - 1.0) < 0.12, (out_size, s, _disc_aspect(small[0]))
        # across the change of resolution (frame 60) the clip goes on without a jump in size or place
        across = [(s, out) for s, e, _, out in got if s < 60 < e]
        assert across, [(s, e) for s, e, _, _ in got]
        s, out = across[0]
        before, after = np.asarray(out)[59 - s].astype(int), np.asarray(out)[60 - s].astype(int)
        assert np.abs(after - before).mean() < 3


def test_non_square_pixels_are_shown_at_their_display_aspect(tmp_path):
    # An anamorphic stream: a 16:9 picture (192x108 shown) coded squeezed to 144x108 with 4:3 pixels, as a
    # PAL DVD or an HDV camera stores it. Read as coded, the disc would be an upright ellipse (0.75).
    shown = _disc_scene(192, 108, 40, 20)
    import cv2

    coded = np.stack([cv2.resize(f, (144, 108), interpolation=cv2.INTER_AREA) for f in shown])
    path = write_video(tmp_path / "anamorphic.mp4", coded, sample_aspect=Fraction(4, 3))
    with VideoReader(path) as reader:
        assert reader.info.sample_aspect == Fraction(4, 3)
        first = next(iter(reader.frames()))
    assert first.shape == (108, 192, 3) and abs(_disc_aspect(first) - 1.0) < 0.08, _disc_aspect(first)
    from components.curate.video_pass import Timers, stream_video

    for out_size in ((64, 96), (0, 0)):  # the configured size (a centre crop of the shown picture), and native
        cfg = CurateConfig(**{**CFG, "output_height": out_size[0], "output_width": out_size[1]})
        got: list = []

        def keep(scene, start, end, small, out, ok, got=got):
            if ok:
                got.append((small, out))

        with VideoReader(path) as reader:
            stream_video(reader, cfg, 25, keep, Timers())
        assert got
        for small, out in got:
            assert np.asarray(out).shape[1:3] == (out_size if out_size[0] else (108, 192))
            assert abs(_disc_aspect(np.asarray(out)[0]) - 1.0) < 0.08, (out_size, _disc_aspect(np.asarray(out)[0]))
            assert abs(_disc_aspect(small[0]) - 1.0) < 0.12, (out_size, _disc_aspect(small[0]))
    # The scenes file records the stream's geometry.
    (tmp_path / "t.jsonl").write_text('{"file": "anamorphic.mp4"}\n')
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**CFG))
    (scene,) = _jsonl(tmp_path / "out" / "scenes-000.jsonl")
    assert scene["source"]["sample_aspect"] == "4:3"
    assert (scene["source"]["coded_width"], scene["source"]["display_width"], scene["source"]["display_height"]) == (144, 192, 108)


def test_the_video_is_read_not_a_preview_stream_before_it(tmp_path):
    # A file whose first video stream is a one-picture poster (a small MJPEG track) and whose second is
    # the video: the video is what is curated (it used to be the poster: one frame, too short).
    frames = lavfi_frames("testsrc2", (96, 64), 25, 1.6)
    poster = np.full((32, 48, 3), 200, np.uint8)
    path = write_video(tmp_path / "poster.mkv", frames, preview_first=poster)
    import av

    with av.open(str(path)) as c:
        assert [s.codec_context.name for s in c.streams.video] == ["mjpeg", "h264"]
    with VideoReader(path) as reader:
        assert (reader.info.codec, reader.info.width, reader.info.video_streams) == ("h264", 96, 2)
        assert len(list(reader.frames())) == len(frames)
    assert read_video(path)[0].shape == frames.shape
    (tmp_path / "t.jsonl").write_text('{"file": "poster.mkv"}\n')
    summary = curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**CFG))
    assert summary["rejected"] == 0 and summary["clips"] >= 2, summary


def _comb(rgb: np.ndarray) -> float:
    """Mean distance of each row from the average of its neighbours: woven fields of a moving picture
    (combing) make it large, a progressive picture of smooth content keeps it near zero."""
    y = rgb.astype(np.float32).mean(-1)
    return float(np.abs(y[1:-1] - (y[:-2] + y[2:]) / 2).mean())


def test_interlaced_video_is_deinterlaced_and_progressive_video_is_untouched(tmp_path):
    # A bar moving 5 px per frame, coded interlaced (each frame: the top field at t, the bottom at t+1/2),
    # and shown rotated: the reader gives progressive, upright pictures, one per frame, at the frame times.
    def scene(t: float) -> np.ndarray:
        a = np.full((96, 128, 3), 40, np.uint8)
        x = int(10 + 5 * t)
        a[:, x : x + 16] = 230
        return a

    woven = []
    for i in range(20):
        frame = scene(i).copy()
        frame[1::2] = scene(i + 0.5)[1::2]
        woven.append(frame)
    path = write_video(tmp_path / "tv.mp4", np.stack(woven), interlaced=True)
    import av

    with av.open(str(path)) as c:
        raw = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert min(_comb(f) for f in raw) > 2.0  # the decoder gives the woven fields
    set_display_rotation(path, 90)
    with VideoReader(path) as reader:
        frames = list(reader.frames())
        assert reader.interlaced_frames == 20
    assert len(frames) == 20 and frames[0].shape == (128, 96, 3)
    assert max(_comb(np.rot90(f)) for f in frames) < 0.5, [_comb(f) for f in frames]
    for i, f in enumerate(frames):  # one field's instant, whole: the bar is where it was at t or t + 1/2
        err = min(np.abs(np.rot90(f).astype(int) - scene(t).astype(int)).mean() for t in (i, i + 0.5))
        assert err < 3.0, (i, err)
    (tmp_path / "t.jsonl").write_text('{"file": "tv.mp4"}\n')
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**CFG))
    (record,) = _jsonl(tmp_path / "out" / "scenes-000.jsonl")
    assert record["source"]["interlaced_frames"] == 20
    # A progressive stream does not go through the filter: the same pixels as a plain decode.
    frames = lavfi_frames("testsrc2", (96, 64), 25, 0.8)
    path = write_video(tmp_path / "p.mp4", frames)
    with av.open(str(path)) as c:
        raw = [to_rgb(f, 0, f.width, f.height) for f in c.decode(video=0)]
    with VideoReader(path) as reader:
        got = list(reader.frames())
        assert reader.interlaced_frames == 0
    assert len(got) == len(raw) and all(np.array_equal(a, b) for a, b in zip(got, raw))


@pytest.mark.parametrize("codec,pix_fmt", [("libx264", "yuvj420p"), ("libx265", "yuv420p10le")])
def test_full_range_video_keeps_its_blacks_and_whites(tmp_path, codec, pix_fmt):
    # Phones, webcams and MJPEG code YUV over the full 0-255 range; the clips are limited-range yuv420p.
    # A ramp from 0 to 255 with near-black and near-white patches comes back as it went in, not with its
    # contrast stretched by 255/219 (shadows and highlights clipped), in the analysis frames and the clip.
    ramp = np.tile(np.linspace(0, 255, 96).astype(np.uint8)[None, :, None], (64, 1, 3))
    ramp[:16, :24], ramp[:16, 72:] = 10, 245
    frames = np.stack([np.roll(ramp, i, axis=0) for i in range(20)])
    path = write_video(tmp_path / "full.mkv", frames, codec=codec, pix_fmt=pix_fmt, full_range=True)
    import av

    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.color_range == 2  # JPEG (full) range, as phones tag it
    from components.curate.video_pass import encode_clip

    cfg = CurateConfig(**{**CFG, "output_height": 0, "output_width": 0})
    clips = _stream_clips(path, cfg)
    assert clips
    for start, small, out in clips:
        truth = frames[start : start + len(out)].astype(int)
        for got in (np.asarray(out), read_video(encode_clip(out, 25, cfg))[0]):
            assert np.abs(got.astype(int) - truth).mean() < 3.0, np.abs(got.astype(int) - truth).mean()
            assert abs(int(got[0, 0, 30:40].mean()) - int(truth[0, 0, 30:40].mean())) <= 4  # a dark patch
        assert np.abs(small.astype(int) - truth[: len(small)]).mean() < 3.0


@pytest.mark.parametrize("transfer", ["pq", "hlg"])
def test_hdr_video_is_tone_mapped_to_sdr(tmp_path, transfer):
    # An HDR master (10-bit HEVC, BT.2020, PQ as HDR10 or HLG as phones record) of an SDR picture shown at
    # HDR reference white (203 nits): the clips and analysis frames are that SDR picture again, not the
    # grey, washed-out one a plain conversion of the HDR signal gives.
    import av

    from components.curate.video_pass import encode_clip
    from t2v.video import hdr_peak_nits

    yy, xx = np.mgrid[0:96, 0:128] / 96.0
    truth = np.stack([  # smooth colours over the whole range, drifting (FFmpeg's gradients is not seeded)
        np.stack([128 + 118 * np.sin(2.1 * xx + 0.7 * yy + 0.15 * t + phase) for phase in (0.0, 2.0, 4.0)], -1)
        for t in range(30)
    ]).round().astype(np.uint8)
    path = write_hdr_video(tmp_path / f"{transfer}.mkv", truth, transfer)
    with av.open(str(path)) as c:
        naive = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    naive_err = np.abs(naive.astype(int) - truth[: len(naive)]).mean()  # the HDR signal read as SDR
    with VideoReader(path) as reader:
        assert reader.info.transfer == transfer
        got = np.stack(list(reader.frames()))
    diff = np.abs(got.astype(int) - truth[: len(got)])
    # Exact up to the knee (linear light 0.75 of white: 226 of 255), highlights above it rolled off.
    below_knee = truth[: len(got)].max(-1) < 216
    err, err_below_knee = diff.mean(), diff[below_knee].mean()
    assert len(got) == len(truth) and err_below_knee < 3.0 and err < 4.0 and naive_err > 8 * err, (err, err_below_knee, naive_err)
    cfg = CurateConfig(**{**CFG, "output_height": 0, "output_width": 0})
    clips = _stream_clips(path, cfg)
    assert clips
    for start, small, out in clips:
        want = truth[start : start + len(out)].astype(int)
        for frames in (np.asarray(out), read_video(encode_clip(out, 25, cfg))[0], small):
            assert np.abs(frames.astype(int) - want[: len(frames)]).mean() < err + 1.0
    (tmp_path / "t.jsonl").write_text(f'{{"file": "{transfer}.mkv"}}\n')
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**CFG))
    (record,) = _jsonl(tmp_path / "out" / "scenes-000.jsonl")
    assert record["source"]["transfer"] == transfer
    # Highlights (the same picture at 3x reference white) are rolled off, not clipped: brighter, and still
    # graded where the picture is.
    bright_path = write_hdr_video(tmp_path / "bright.mkv", truth[:5], transfer, white_nits=3 * 203, max_cll=1000)
    with VideoReader(bright_path) as reader:
        bright = next(iter(reader.frames())).astype(int)
    assert bright.mean() > got[0].mean() + 10
    assert (bright.max(-1) >= 254).mean() < 0.02
    peak, lit = bright.max(-1), truth[0].max(-1)  # the brightest channel, which the roll-off follows
    keeps_grades = np.corrcoef(peak[lit > 160], lit[lit > 160])[0, 1]
    assert keeps_grades > 0.9, keeps_grades
    if transfer == "pq":  # HDR10 metadata: the master's brightest light (MaxCLL) is SDR white
        with av.open(str(bright_path)) as c:
            assert hdr_peak_nits(next(c.decode(video=0))) == 1000.0


def test_animated_gif_is_a_video_and_a_png_is_not(tmp_path):
    from t2v.video import VideoDecodeError, write_gif

    frames = lavfi_frames("testsrc2", (64, 48), 10, 1.0)
    write_gif(tmp_path / "anim.gif", frames, fps=10)
    with VideoReader(tmp_path / "anim.gif") as reader:
        assert len(list(reader.frames(fps=10))) == len(frames)
    from PIL import Image

    Image.fromarray(frames[0]).save(tmp_path / "still.png")
    with pytest.raises(VideoDecodeError) as err:
        VideoReader(tmp_path / "still.png")
    assert err.value.kind == "not_video" and "image" in str(err.value)


def test_a_long_video_shows_its_progress(tmp_path, monkeypatch, caplog):
    # One video can take many minutes (an hour of 1080p): the stage says how far it is within it.
    import logging

    from components.curate import video_pass

    frames = lavfi_frames("testsrc2", (96, 64), 25, 2.0)
    path = write_video(tmp_path / "long.mp4", frames)
    monkeypatch.setattr(video_pass, "PROGRESS_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="components.curate.video_pass"), VideoReader(path) as reader:
        video_pass.stream_video(reader, CurateConfig(**CFG), 25, lambda *a: None, video_pass.Timers())
    lines = [r.getMessage() for r in caplog.records if "long.mp4: frames" in r.getMessage()]
    assert lines and all("eta" in x and "/50 (" in x for x in lines), lines[:3]
    assert "clips=" in lines[-1]


def _boxed(content: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``content`` frames centred on black of ``size`` (h, w): letterboxed or pillarboxed."""
    t, h, w, _ = content.shape
    out = np.zeros((t, *size, 3), np.uint8)
    y0, x0 = (size[0] - h) // 2, (size[1] - w) // 2
    out[:, y0 : y0 + h, x0 : x0 + w] = content
    return out


@pytest.mark.parametrize("content_size", [(80, 192), (108, 144)], ids=["letterbox", "pillarbox"])
def test_black_bars_are_cropped_when_asked(tmp_path, content_size):
    # A 2.4:1 film in a 16:9 frame (bars above and below), and 4:3 footage in one (bars at the sides).
    # Without the crop its clips are dropped as black_borders; with it they are the picture inside.
    import cv2

    content = lavfi_frames("testsrc2", content_size[::-1], 25, 3.2)
    write_video(tmp_path / "boxed.mp4", _boxed(content, (108, 192)))
    (tmp_path / "t.jsonl").write_text('{"file": "boxed.mp4"}\n')
    results = {}
    for crop in (False, True):
        cfg = CurateConfig(**{**CFG, "crop_black_bars": crop, "watermark_threshold": 1.0, "motion_max": 1000.0})
        curate_shard(tmp_path / "t.jsonl", tmp_path / f"out{crop}", cfg)
        clips = [r for r in _jsonl(tmp_path / f"out{crop}" / "manifest-000.jsonl") if r["num_frames"] >= 8]
        (scene,) = _jsonl(tmp_path / f"out{crop}" / "scenes-000.jsonl")
        results[crop] = (clips, scene)
    assert all("black_borders" in r["drop_reasons"] for r in results[False][0])
    clips, scene = results[True]
    assert clips and not any("black_borders" in r["drop_reasons"] for r in clips), clips
    top, bottom, left, right = scene["source"]["black_bars"]
    want = (1 - content_size[0] / 108) / 2, (1 - content_size[1] / 192) / 2
    assert abs(top - want[0]) < 0.02 and abs(bottom - want[0]) < 0.02, scene["source"]["black_bars"]
    assert abs(left - want[1]) < 0.02 and abs(right - want[1]) < 0.02, scene["source"]["black_bars"]
    # the clips are the inside picture, scaled to cover 96x64 and centre-cropped: no bar left
    import tarfile

    (shard,) = sorted((tmp_path / "outTrue" / "shards").glob("*.tar"))
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".mp4"))
        got, _ = read_video(tar.extractfile(member).read())
    h, w = content_size
    scale = max(64 / h, 96 / w)
    sized = [cv2.resize(f, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) for f in content]
    y0, x0 = (sized[0].shape[0] - 64) // 2, (sized[0].shape[1] - 96) // 2
    expected = np.stack([f[y0 : y0 + 64, x0 : x0 + 96] for f in sized]).astype(int)
    boxed = _boxed(content, (108, 192))  # what the bars would leave: the whole frame scaled to cover
    s2 = max(64 / 108, 96 / 192)
    whole = [cv2.resize(f, (round(192 * s2), round(108 * s2)), interpolation=cv2.INTER_AREA) for f in boxed]
    y1, x1 = (whole[0].shape[0] - 64) // 2, (whole[0].shape[1] - 96) // 2
    uncropped = np.stack([f[y1 : y1 + 64, x1 : x1 + 96] for f in whole]).astype(int)
    errs = [np.abs(got[0].astype(int) - e).mean() for e in expected]
    k = int(np.argmin(errs))  # the clip's first frame in the content
    assert errs[k] < 0.6 * np.abs(got[0].astype(int) - uncropped[k]).mean(), (errs[k], np.abs(got[0].astype(int) - uncropped[k]).mean())
    assert got[:, :2].max() > 60 and got[:, -2:].max() > 60 and got[:, :, :2].max() > 60  # picture at every edge


def test_dark_footage_and_one_sided_dark_skies_are_not_cropped(tmp_path):
    from components.curate.filters import black_bars

    pictures = lavfi_frames("testsrc2", (192, 108), 25, 0.4)
    sky = pictures.copy()
    sky[:, :40] = 0  # a night sky above a lit street: black on one side only
    assert black_bars(sky) == (0.0, 0.0, 0.0, 0.0)
    dim = (pictures // 12).astype(np.uint8)  # a dark scene, no bars
    assert black_bars(dim) == (0.0, 0.0, 0.0, 0.0)
    assert black_bars(pictures) == (0.0, 0.0, 0.0, 0.0)
    boxed = _boxed(pictures[:, 14:94], (108, 192))
    top, bottom, left, right = black_bars(boxed)
    assert abs(top - 14 / 108) < 0.02 and abs(bottom - 14 / 108) < 0.02 and left == right == 0.0


def test_a_stream_of_noise_is_rejected_not_skipped_through(tmp_path):
    # Every sample of an mp4 overwritten with noise (its index intact): no packet decodes. Damage is
    # skipped, but a stream where nothing decodes is rejected after a few packets, not read to its end.
    data = bytearray(write_video(tmp_path / "v.mp4", lavfi_frames("testsrc2", (192, 128), 25, 8.0), faststart=True).read_bytes())
    start = data.find(b"mdat") + 4 + 64
    data[start:] = np.random.default_rng(1).integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    (tmp_path / "noise.mp4").write_bytes(bytes(data))
    with pytest.raises(VideoDecodeError) as err, VideoReader(tmp_path / "noise.mp4") as reader:
        list(reader.frames())
    assert "cannot decode" in str(err.value) and err.value.kind == "corrupt"
    assert reader.damaged_packets == VideoReader.UNDECODABLE_PACKETS


def test_portrait_video_keeps_its_orientation_when_asked(tmp_path):
    # A phone's portrait video: coded 192x108 with a 90-degree display rotation, shown 108 wide and 192
    # tall. For a landscape output size it gives a crop of its middle third, or, with
    # output_keep_orientation, portrait clips of the whole picture.
    import cv2

    frames = lavfi_frames("testsrc2", (192, 108), 25, 1.6)
    path = write_video(tmp_path / "phone.mp4", frames)
    set_display_rotation(path, 90)
    shown = np.stack([np.rot90(f, k=-1) for f in frames])  # turned clockwise: [T, 192, 108, 3]
    (tmp_path / "t.jsonl").write_text('{"file": "phone.mp4"}\n')
    sizes = {}
    for keep in (False, True):
        cfg = CurateConfig(**{**CFG, "output_keep_orientation": keep, "watermark_threshold": 1.0, "motion_max": 1000.0})
        start, _, out = _stream_clips(path, cfg)[0]
        out = np.asarray(out)
        sizes[keep] = out.shape[1:3]
        if keep:  # the whole shown picture, scaled to 64 wide (it is 0.5625 as wide as tall: 96 x 64 crops 10 rows)
            def fit(picture):
                scaled = cv2.resize(picture, (64, round(192 * 64 / 108)), interpolation=cv2.INTER_AREA)
                y0 = (scaled.shape[0] - 96) // 2
                return scaled[y0 : y0 + 96].astype(int)

            err = np.abs(out[0].astype(int) - fit(shown[start])).mean()
            upside_down = np.abs(out[0].astype(int) - fit(np.rot90(frames[start]))).mean()  # turned the other way
            assert err < 0.5 * upside_down, (err, upside_down)
    assert sizes == {False: (64, 96), True: (96, 64)}


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_files_own_title_is_its_original_title_where_the_table_has_none(tmp_path, suffix):
    # A phone's, an editor's or yt-dlp's file carries its title (and a description) in its tags: the
    # report's "original title" caption, where the table gives none. A title in the table wins.
    frames = lavfi_frames("testsrc2", (96, 64), 25, 1.6)
    tags = {"title": "Harbour at dusk", "comment": "Boats  coming in\nat six"}
    write_video(tmp_path / f"v{suffix}", frames, metadata=tags)
    with VideoReader(tmp_path / f"v{suffix}") as reader:
        assert (reader.info.title, reader.info.description) == ("Harbour at dusk", "Boats coming in at six")
    (tmp_path / f"w{suffix}").write_bytes((tmp_path / f"v{suffix}").read_bytes())
    (tmp_path / "t.jsonl").write_text(f'{{"file": "v{suffix}"}}\n{{"file": "w{suffix}", "video_id": "titled", "title": "From the table"}}\n')
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**CFG))
    clips = [r for r in _jsonl(tmp_path / "out" / "manifest-000.jsonl") if r["start_frame"] is not None]
    titles = {(r["video_id"] == "titled", r["title"]) for r in clips}
    assert titles == {(False, "Harbour at dusk"), (True, "From the table")}, titles


def _sprite_over_transparency(frames: int, size: tuple[int, int], binary: bool) -> np.ndarray:
    """RGBA frames, straight alpha: a red disc with a white square in it moving over transparency, whose
    hidden colour is green (what an editor or keyer leaves there), under a band that is half
    transparent blue (``binary``: opaque instead, for GIF's one transparent index)."""
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((frames, h, w, 4), np.uint8)
    out[..., 1] = 255  # hidden under alpha 0
    for t in range(frames):
        cx = w // 4 + 2 * t
        disc = (yy - h // 2) ** 2 + (xx - cx) ** 2 < (h // 4) ** 2
        out[t][disc] = (200, 40, 40, 255)
        out[t][(abs(yy - h // 2) < h // 12) & (abs(xx - cx) < h // 12)] = (255, 255, 255, 255)
    out[:, : h // 8] = (40, 80, 255, 255 if binary else 128)
    return out


@pytest.mark.parametrize("source", ["prores4444", "qtrle", "png-in-mov", "ffv1", "vp9-webm", "apng", "utvideo", "gif"])
def test_transparent_parts_are_shown_over_the_background(tmp_path, source):
    # Footage made to be laid over other footage (VFX elements, titles, stickers) carries an alpha
    # channel; the colour under its transparent pixels is whatever the tool left there. The clips show it
    # over alpha_background, composited before scaling so the hidden colour does not bleed into edges.
    import cv2

    from tests.fixtures.curate_media import ALPHA_SOURCES, write_alpha_video

    rgba = _sprite_over_transparency(40, (128, 192), binary=source == "gif")
    suffix = ALPHA_SOURCES[source][0] if source != "gif" else ".gif"
    path = write_alpha_video(tmp_path / f"element{suffix}", rgba, source)
    with VideoReader(path) as reader:
        assert reader.info.alpha, reader.info
    cfg = dict(CFG, watermark_threshold=1.0, motion_max=1000.0, subtitle_threshold=1.0)
    for background in ((0, 0, 0), (255, 255, 255)) if source == "png-in-mov" else ((0, 0, 0),):
        start, small, out = _stream_clips(path, CurateConfig(**cfg, alpha_background=background))[0]
        out = np.asarray(out).astype(int)
        a = rgba[..., 3:].astype(int)
        shown = (rgba[..., :3] * a + np.asarray(background) * (255 - a) + 127) // 255
        as_coded = rgba[..., :3]  # the alpha dropped, as before

        def scaled(pictures):
            return np.stack([cv2.resize(p.astype(np.uint8), (96, 64), interpolation=cv2.INTER_AREA) for p in pictures]).astype(int)

        want, coded = scaled(shown[start : start + len(out)]), scaled(as_coded[start : start + len(out)])
        err, err_coded = np.abs(out - want).mean(), np.abs(out - coded).mean()
        assert err < 3.0 and err < 0.1 * err_coded, (source, background, err, err_coded)
        # No green at the edges (scaled first, then composited: up to 73). A 4:2:0 source (FFV1, VP9
        # yuva420p) carries it in its own chroma there: its encoder averaged the hidden colour in.
        if background == (0, 0, 0) and not ALPHA_SOURCES.get(source, ("", "", "", "rgba"))[3].endswith("420p"):
            leak = out[..., 1][want[..., 1] <= 40]
            assert leak.max() <= 44, (source, leak.max())
        corner = out[:, 40:, -6:].reshape(-1, 3)  # transparent throughout: the background
        assert np.abs(corner - np.asarray(background)).max() <= 3, (source, background, corner.min(0), corner.max(0))
        assert np.abs(np.asarray(small[0])[-4:, -4:].astype(int) - np.asarray(background)).max() <= 3  # analysis frames too
    if source == "qtrle":  # the scenes file says the source could be transparent
        (tmp_path / "t.jsonl").write_text(f'{{"file": "{path.name}"}}\n')
        curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**cfg, crop_black_bars=True))
        (scene,) = _jsonl(tmp_path / "out" / "scenes-000.jsonl")
        assert scene["source"]["alpha"] is True and scene["source"]["pix_fmt"] == "argb", scene["source"]


def test_a_raw_dv_capture_keeps_its_frame_rate(tmp_path):
    # A camcorder's raw DV (what a FireWire capture writes) declares an average rate of 60000 fps, the
    # rate of its time base: read as the frame rate, it gave 2400 output frames per picture, and clips
    # the encoder refuses. The rate its timestamps step at (25) is the one.
    frames = lavfi_frames("testsrc2", (720, 576), 25, 2.0)
    path = write_video(tmp_path / "capture.dv", frames, codec="dvvideo")
    with VideoReader(path) as reader:
        assert reader.info.fps == 25.0
        assert len(list(reader.frames())) == 50
    (tmp_path / "t.jsonl").write_text('{"file": "capture.dv"}\n')
    cfg = CurateConfig(**{**CFG, "output_fps": 0, "clip_max_frames": 50, "motion_max": 1000.0, "watermark_threshold": 1.0})
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", cfg)
    clips = [r for r in _jsonl(tmp_path / "out" / "manifest-000.jsonl") if r["start_frame"] is not None]
    assert clips and all(r["fps"] == 25 for r in clips), clips
    (scene,) = _jsonl(tmp_path / "out" / "scenes-000.jsonl")
    assert scene["num_frames"] == 50 and scene["source"]["fps"] == 25.0, scene


def test_a_video_too_large_to_decode_is_recorded_not_decoded(tmp_path):
    # A picture size the pod cannot hold the decoder's buffers for (a 16K render, a header that lies) is
    # one record with the reason; nothing is decoded.
    write_video(tmp_path / "big.mp4", lavfi_frames("testsrc2", (192, 128), 25, 1.0))
    write_video(tmp_path / "fits.mp4", lavfi_frames("testsrc2", (96, 64), 25, 1.0))
    (tmp_path / "t.jsonl").write_text('{"file": "big.mp4", "video_id": "big"}\n{"file": "fits.mp4", "video_id": "fits"}\n')
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**CFG, max_source_pixels=96 * 64))
    records = _jsonl(tmp_path / "out" / "manifest-000.jsonl")
    (big,) = [r for r in records if r["video_id"] == "big"]
    assert big["drop_reasons"] == ["too_large"] and "192x128" in big["error"] and "max_source_pixels" in big["error"], big
    assert any(r["video_id"] == "fits" and r["start_frame"] is not None for r in records)
    (scene,) = _jsonl(tmp_path / "out" / "scenes-000.jsonl")  # only the video that fits was decoded
    assert scene["source"]["coded_width"] == 96


def test_a_picture_too_small_to_curate_is_recorded_and_scores_stay_numbers(tmp_path):
    # A thumbnail-sized video (an icon's animation) would be blown up into clips; its shown size counts
    # (non-square pixels: 40x24 coded at 1:2 is shown 20x24). At no limit, even a 2x2 picture curates
    # into records of finite scores, which strict JSON readers take (NaN is not JSON).
    pattern = moving_pattern(40, (96, 64))
    write_video(tmp_path / "icon.mp4", np.stack([cv2.resize(f, (12, 12), interpolation=cv2.INTER_AREA) for f in pattern]))
    write_video(tmp_path / "narrow.mp4", np.stack([cv2.resize(f, (40, 24), interpolation=cv2.INTER_AREA) for f in pattern]),
                sample_aspect=Fraction(1, 2))
    write_video(tmp_path / "dot.mp4", np.stack([cv2.resize(f, (2, 2), interpolation=cv2.INTER_AREA) for f in pattern]),
                codec="mpeg4")
    write_video(tmp_path / "fits.mp4", pattern)
    names = ("icon", "narrow", "dot", "fits")
    (tmp_path / "t.jsonl").write_text("".join(f'{{"file": "{n}.mp4", "video_id": "{n}"}}\n' for n in names))
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**CFG, min_source_side=22))
    records = _jsonl(tmp_path / "out" / "manifest-000.jsonl")
    for name, shown in (("icon", "12x12"), ("narrow", "20x24"), ("dot", "2x2")):
        (rec,) = [r for r in records if r["video_id"] == name]
        assert rec["drop_reasons"] == ["too_small"] and shown in rec["error"] and "min_source_side" in rec["error"], rec
    assert any(r["video_id"] == "fits" and r["start_frame"] is not None for r in records)

    curate_shard(tmp_path / "t.jsonl", tmp_path / "all", CurateConfig(**CFG, min_source_side=0))
    text = (tmp_path / "all" / "manifest-000.jsonl").read_text()
    records = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in the manifest")) for line in text.splitlines()]
    dots = [r for r in records if r["video_id"] == "dot" and r["scores"]]
    assert dots and all(np.isfinite(v) for r in dots for v in r["scores"].values() if isinstance(v, float))


def test_animated_webp_is_a_video_and_a_still_webp_is_not(tmp_path):
    # The web's short loops and stickers: FFmpeg decodes only a still WebP, and an animated one was
    # recorded as an image. Pillow (libwebp) decodes its frames, with their own durations and alpha.
    from PIL import Image

    frames = lavfi_frames("testsrc2", (96, 64), 25, 1.6)
    durations = [40] * 20 + [80] * 20  # 25 fps, then 12.5 fps
    rgba = np.concatenate([frames, np.full((*frames.shape[:3], 1), 255, np.uint8)], axis=-1)
    rgba[:, :, :12, 3] = 0  # a transparent strip down the left
    pictures = [Image.fromarray(f, mode="RGBA") for f in rgba]
    pictures[0].save(tmp_path / "loop.webp", save_all=True, append_images=pictures[1:], duration=durations,
                     loop=0, lossless=True)
    with VideoReader(tmp_path / "loop.webp") as reader:
        assert (reader.info.format, reader.info.alpha, reader.info.fps) == ("webp", True, 25.0)
        out = np.stack(list(reader.frames(fps=25)))
    starts = np.cumsum([0, *durations[:-1]])
    shown = [int(np.searchsorted(starts, (k + 0.5) * 40, side="right")) - 1 for k in range(len(out))]
    assert len(out) == sum(durations) // 40 == 60
    want = frames[shown].astype(int)
    want[:, :, :12] = 0  # over the black background
    assert np.abs(out.astype(int) - want).max() <= 1
    # a still WebP stays an image; a cut-off animated one is damaged, with its reason
    Image.fromarray(frames[0]).save(tmp_path / "still.webp", lossless=True)
    with pytest.raises(VideoDecodeError) as err:
        VideoReader(tmp_path / "still.webp")
    assert err.value.kind == "not_video"
    data = (tmp_path / "loop.webp").read_bytes()
    (tmp_path / "cut.webp").write_bytes(data[: len(data) // 2])
    (tmp_path / "t.jsonl").write_text('{"file": "loop.webp"}\n{"file": "cut.webp", "video_id": "cut"}\n')
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**CFG, watermark_threshold=1.0, motion_max=1000.0))
    records = _jsonl(tmp_path / "out" / "manifest-000.jsonl")
    assert any(r["video_id"] != "cut" and r["start_frame"] is not None for r in records), records
    (cut,) = [r for r in records if r["video_id"] == "cut"]
    assert cut["drop_reasons"] == ["corrupt"] and "WebP" in cut["error"], cut


def test_file_names_with_url_characters_are_found(tmp_path):
    # Downloaded videos are named after their titles: '#' (a hashtag) and '?' were read as a URL's
    # fragment and query (the name cut there: "no such file"), and a literal '%20' as an escaped space.
    names = ["vidéo à l'été #1?.mp4", "100% real [4K] (2024).mp4", "a%20b.mp4", "日本語 動画.mp4", "x;y&z=1.mp4"]
    frames = lavfi_frames("testsrc2", (96, 64), 25, 0.8)
    for name in names:
        write_video(tmp_path / name, frames)
    write_table(tmp_path / "t.jsonl", [{"file": n} for n in names])
    rows = list(inputs.iter_rows(storage.to_uri(tmp_path / "t.jsonl")))
    assert [storage.local_path(r.uri).name for r in rows] == names
    assert [inputs.location_key(r.uri, storage.to_uri(tmp_path)) for r in rows] == names  # ids as the names give them
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**CFG, watermark_threshold=1.0, motion_max=1000.0))
    records = _jsonl(tmp_path / "out" / "manifest-000.jsonl")
    assert not [r for r in records if r["start_frame"] is None], records
    assert len({r["video_id"] for r in records}) == len(names)


def test_file_uris_are_percent_encoded_paths():
    assert storage.local_path("file:///tmp/a%20b/c%23d%3F.mp4") == Path("/tmp/a b/c#d?.mp4")
    assert storage.local_path("file://localhost/tmp/x.mp4") == Path("/tmp/x.mp4")
    assert storage.local_path(storage.to_uri("/tmp/100% #1.mp4")) == Path("/tmp/100% #1.mp4")
    assert storage.file_uri_join("file:///data", "a #1.mp4") == "file:///data/a%20%231.mp4"
    assert storage.file_uri_join("s3://bucket/v", "a #1.mp4") == "s3://bucket/v/a #1.mp4"  # keys as written
    with pytest.raises(storage.StorageError, match="another host"):
        storage.local_path("file://server/share/x.mp4")


def test_360_and_stereoscopic_videos_are_recorded_and_flat_ones_curated(tmp_path):
    # A 360 camera's equirectangular or cubemap video (Spherical Video V2 metadata) and a 3D film's
    # frame-packed pictures (H.264 frame-packing SEI) are not views a text-to-video model should learn:
    # each is one record with its reason, from the metadata, before anything is scored or encoded.
    frames = moving_pattern(40)
    write_video(tmp_path / "flat.mp4", frames)
    add_spherical_metadata(write_video(tmp_path / "equi.mp4", frames))
    add_spherical_metadata(write_video(tmp_path / "cube.mp4", frames), b"cbmp")
    write_video(tmp_path / "sbs.mp4", frames, frame_packing=3)
    write_video(tmp_path / "tab.mp4", frames, frame_packing=4)
    with av.open(str(tmp_path / "mkv.mkv"), "w") as c:  # Matroska's StereoMode element, no SEI
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        st.metadata["stereo_mode"] = "left_right"
        for rgb in frames:
            for p in st.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    names = ["flat", "equi", "cube", "sbs", "tab", "mkv"]
    files = {n: f"{n}.mkv" if n == "mkv" else f"{n}.mp4" for n in names}
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"file": files[n], "video_id": n}) + "\n" for n in names))
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**CFG))
    records = _jsonl(tmp_path / "out" / "manifest-000.jsonl")
    by_video = {n: [r for r in records if r["video_id"] == n] for n in names}
    assert all(r["start_frame"] is not None for r in by_video["flat"]) and by_video["flat"]
    for name, reason, said in (("equi", "spherical", "equirectangular"), ("cube", "spherical", "cubemap"),
                               ("sbs", "stereo_3d", "side_by_side"), ("tab", "stereo_3d", "top_bottom"),
                               ("mkv", "stereo_3d", "side_by_side")):
        (rec,) = by_video[name]
        assert rec["drop_reasons"] == [reason] and said in rec["error"], rec
    assert not list((tmp_path / "out").glob("**/equi-*.mp4"))  # nothing of them spooled
    # Kept where asked (a team training on 360 video), with the layout in the scenes file.
    curate_shard(tmp_path / "t.jsonl", tmp_path / "kept", CurateConfig(**CFG, drop_spherical=False, drop_stereo_3d=False))
    scenes = {s["video_id"]: s["source"] for s in _jsonl(tmp_path / "kept" / "scenes-000.jsonl")}
    assert [(scenes[n]["projection"], scenes[n]["stereo"]) for n in names] == [
        ("", ""), ("equirectangular", ""), ("cubemap", ""), ("", "side_by_side"), ("", "top_bottom"), ("", "side_by_side")]


def test_a_video_longer_than_the_limit_is_recorded_declared_or_not(tmp_path):
    # max_video_seconds: an mp4 whose header declares 2 s is not decoded; a raw H.264 stream, which
    # declares no duration, is stopped once its decoding passes the limit. One under it is curated.
    long = lavfi_frames("testsrc2", (96, 64), 25, 2.0)
    write_video(tmp_path / "long.mp4", long)
    write_video(tmp_path / "short.mp4", long[:30])
    with av.open(str(tmp_path / "long.h264"), "w", format="h264") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 96, 64, "yuv420p"
        for rgb in long:
            for p in st.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    with VideoReader(tmp_path / "long.h264") as r:
        assert r.info.duration_s == 0.0  # the case: nothing declared
    names = ["long", "short", "raw"]
    files = {"long": "long.mp4", "short": "short.mp4", "raw": "long.h264"}
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"file": files[n], "video_id": n}) + "\n" for n in names))
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", CurateConfig(**CFG, max_video_seconds=1.5))
    records = _jsonl(tmp_path / "out" / "manifest-000.jsonl")
    (long_rec,) = [r for r in records if r["video_id"] == "long"]
    assert long_rec["drop_reasons"] == ["too_long"] and "declared" in long_rec["error"], long_rec
    (raw_rec,) = [r for r in records if r["video_id"] == "raw"]
    assert raw_rec["drop_reasons"] == ["too_long"] and "passed it" in raw_rec["error"], raw_rec
    assert any(r["video_id"] == "short" and r["start_frame"] is not None for r in records)
    scenes = [s["video_id"] for s in _jsonl(tmp_path / "out" / "scenes-000.jsonl")]
    assert scenes == ["short"]  # neither long video was curated
    # without the limit, both long ones are
    curate_shard(tmp_path / "t.jsonl", tmp_path / "all", CurateConfig(**CFG))
    assert sorted(s["video_id"] for s in _jsonl(tmp_path / "all" / "scenes-000.jsonl")) == ["long", "raw", "short"]


def test_a_truncated_download_keeps_its_clips_when_asked(tmp_path):
    # A download cut short (index at the front, the last 60 % of the bytes missing): by default the
    # video is one corrupt record; with keep_truncated its pictures are curated as if the file ended
    # where they do, and the scenes record says why.
    frames = moving_pattern(120)
    write_video(tmp_path / "full.mp4", frames, faststart=True)
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.4)])
    (tmp_path / "t.jsonl").write_text(json.dumps({"file": "cut.mp4", "video_id": "cut"}) + "\n"
                                      + json.dumps({"file": "full.mp4", "video_id": "full"}) + "\n")
    curate_shard(tmp_path / "t.jsonl", tmp_path / "strict", CurateConfig(**CFG))
    (rec,) = [r for r in _jsonl(tmp_path / "strict" / "manifest-000.jsonl") if r["video_id"] == "cut"]
    assert rec["drop_reasons"] == ["corrupt"] and "truncated" in rec["error"]
    curate_shard(tmp_path / "t.jsonl", tmp_path / "kept", CurateConfig(**CFG, keep_truncated=True))
    records = _jsonl(tmp_path / "kept" / "manifest-000.jsonl")
    cut = [r for r in records if r["video_id"] == "cut"]
    full = {r["clip_id"].split("-", 1)[1]: r for r in records if r["video_id"] == "full"}
    assert cut and all(r["start_frame"] is not None for r in cut), cut
    scenes = {s["video_id"]: s for s in _jsonl(tmp_path / "kept" / "scenes-000.jsonl")}
    assert "truncated" in scenes["cut"]["source"]["truncated"] and scenes["full"]["source"]["truncated"] == ""
    assert 0 < scenes["cut"]["num_frames"] < 120 == scenes["full"]["num_frames"]
    # its clips are those of the whole file over the same frames, except where its end makes a scene end
    last = max(r["end_frame"] for r in cut)
    assert last <= scenes["cut"]["num_frames"]
    same = [r for r in cut if r["end_frame"] < last]
    assert same, cut
    for r in same:
        twin = full[r["clip_id"].split("-", 1)[1]]
        def pixels(rec):  # (the near-duplicate distances: the two are copies of each other)
            return {k: v for k, v in rec["scores"].items() if not k.startswith("dup_")}

        assert (twin["start_frame"], twin["end_frame"], pixels(twin)) == (r["start_frame"], r["end_frame"], pixels(r))
