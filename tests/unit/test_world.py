"""The synthetic video world: config, scenes, rendering, raw videos with planted defects, the checker."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from t2v.video import VideoDecodeError, encode_mp4_bytes, probe_video, read_video
from t2v.world import (
    COLOURS,
    DEFECTS,
    ObjectSpec,
    SceneSpec,
    WorldConfig,
    colour_distance,
    generate_raw_videos,
    heldout_prompts,
    load_raw_metadata,
    render_scene,
    render_scene_record,
    sample_scene,
    score_batch,
    score_video,
    vocabulary,
)
from t2v.world.raw import plan_raw_videos
from t2v.world.render import blur

REPO = Path(__file__).resolve().parents[2]
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def _load(profile: str) -> WorldConfig:
    return WorldConfig.model_validate(yaml.safe_load((REPO / "configs" / profile / "world.yaml").read_text()))


def _down(frames: np.ndarray, size: int = 32) -> np.ndarray:
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def _centroids(frames: np.ndarray, bg: tuple[int, int, int]) -> np.ndarray:
    diff = np.abs(frames.astype(int) - np.asarray(bg)).sum(-1) > 60
    out = []
    for m in diff:
        ys, xs = np.nonzero(m)
        out.append((xs.mean(), ys.mean()) if xs.size else (np.nan, np.nan))
    return np.asarray(out)


# ------------------------------------------------------------------ config


def test_profiles_are_valid_and_30b_profile_is_bigger():
    tiny, big = _load("tiny"), _load("step-video-t2v-30b")
    assert (tiny.width, tiny.height, tiny.fps) == (64, 64, 25)
    assert big.width * big.height > tiny.width * tiny.height
    assert big.num_raw_videos > tiny.num_raw_videos
    assert big.scene_frames[1] > tiny.scene_frames[1]


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("width", 63, "width"),
        ("height", 8, "height"),
        ("fps", 0, "fps"),
        ("palette", ["red", "mauve"], "palette"),
        ("shapes", ["hexagon"], "shapes"),
        ("directions", ["sideways"], "directions"),
        ("scene_frames", (40, 20), "scene_frames"),
        ("rate_dark", 1.5, "rate_dark"),
        ("rate_static", 0.9, "rate_"),
        ("object_size", (10, 40), "object_size"),
        ("corrupt_files", 12, "corrupt_files"),
        ("backgrounds", ["white", "white"], "backgrounds"),
        ("unknown_field", 1, "unknown_field"),
    ],
)
def test_bad_config_fails_naming_the_field(field, value, needle):
    with pytest.raises(ValidationError) as info:
        WorldConfig(**{field: value})
    assert needle in str(info.value)


def test_backgrounds_need_a_contrasting_colour():
    with pytest.raises(ValidationError, match="min_contrast"):
        WorldConfig(palette=["blue"], backgrounds=["blue", "purple"], min_contrast=60)


# ------------------------------------------------------------------ scenes


def test_caption_template_and_json_roundtrip():
    spec = SceneSpec(
        objects=[ObjectSpec(shape="square", colour="red", size=12, direction="left", speed=1.0)],
        background="blue",
    )
    assert spec.caption() == "a red square moving left on a blue background"
    two = SceneSpec(
        objects=[
            ObjectSpec(shape="square", colour="red", size=12, direction="left", speed=1.0),
            ObjectSpec(
                shape="circle", colour="orange", size=10, direction="up", speed=1.0, speed_name="slowly"
            ),
        ],
        background="gray",
        caption_speed=True,
    )
    assert (
        two.caption() == "a red square moving left and an orange circle moving up slowly on a gray background"
    )
    assert spec.with_speed(0).caption() == "a red square on a blue background"
    back = SceneSpec.from_dict(json.loads(json.dumps(two.to_dict())))
    assert back == two
    with pytest.raises(ValidationError):
        ObjectSpec(shape="square", colour="mauve", size=12, direction="left", speed=1.0)


def test_sampled_scenes_use_the_vocabulary_and_contrast():
    cfg = WorldConfig()
    vocab = set(vocabulary(cfg))
    assert {"red", "square", "left", "background", "moving"} <= vocab
    rng = np.random.default_rng(0)
    for _ in range(200):
        spec = sample_scene(rng, cfg)
        assert set(spec.caption().split()) <= vocab
        assert spec.background in cfg.backgrounds
        for o in spec.objects:
            assert o.colour in cfg.palette and o.colour != spec.background
            assert colour_distance(o.colour, spec.background) >= cfg.min_contrast
    big = _load("step-video-t2v-30b")
    rng = np.random.default_rng(1)
    assert all(set(sample_scene(rng, big).caption().split()) <= set(vocabulary(big)) for _ in range(100))


def test_heldout_prompts_are_deterministic_and_apart_from_training():
    cfg = WorldConfig()
    a, b = heldout_prompts(cfg), heldout_prompts(cfg)
    assert len(a) == cfg.num_heldout_prompts and a == b
    assert len(heldout_prompts(cfg, n=5)) == 5
    assert heldout_prompts(cfg.model_copy(update={"seed": 1})) != a
    train = [
        s.spec.model_dump(exclude={"objects"}) | {"o": [o.model_dump() for o in s.spec.objects]}
        for r in plan_raw_videos(cfg)
        for s in r.scenes
    ]
    held = [s.model_dump(exclude={"objects"}) | {"o": [o.model_dump() for o in s.objects]} for s in a]
    assert held[:4] != train[:4]


# ------------------------------------------------------------------ rendering


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
@pytest.mark.parametrize("shape", ["square", "circle", "triangle"])
def test_render_moves_in_the_direction_inside_the_frame(direction, shape):
    spec = SceneSpec(
        objects=[ObjectSpec(shape=shape, colour="yellow", size=14, direction=direction, speed=1.0)],
        background="blue",
    )
    frames = render_scene(spec, 30, 64, 64, seed=3)
    assert frames.shape == (30, 64, 64, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, render_scene(spec, 30, 64, 64, seed=3))
    c = _centroids(frames, COLOURS["blue"])
    assert not np.isnan(c).any()
    dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
    move = c[-1] - c[0]
    assert move[0] * dx + move[1] * dy == pytest.approx(29.0, abs=1.5)
    assert abs(move[0] * dy) + abs(move[1] * dx) < 1.0
    # never leaves the frame: the colour of the object is present in every frame
    assert ((np.abs(frames.astype(int) - COLOURS["yellow"]).sum(-1) < 30).sum(axis=(1, 2)) > 40).all()


def test_render_clips_speed_and_static_stays_put():
    spec = SceneSpec(
        objects=[ObjectSpec(shape="circle", colour="red", size=16, direction="right", speed=5.0)],
        background="gray",
    )
    c = _centroids(render_scene(spec, 40, 64, 64, seed=0), COLOURS["gray"])
    assert c[:, 0].min() > 7 and c[:, 0].max() < 57 and np.all(np.diff(c[:, 0]) > 0)
    c = _centroids(render_scene(spec.with_speed(0), 20, 64, 64, seed=0), COLOURS["gray"])
    assert np.ptp(c, axis=0).max() < 0.5
    noisy = render_scene(spec, 10, 64, 64, seed=0, noise_std=2.0)
    assert 0.5 < np.abs(noisy.astype(int) - render_scene(spec, 10, 64, 64, seed=0).astype(int)).mean() < 3


# ------------------------------------------------------------------ raw videos


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = WorldConfig()
    out = tmp_path_factory.mktemp("world")
    t0 = time.monotonic()
    records = generate_raw_videos(cfg, out)
    elapsed = time.monotonic() - t0
    return cfg, out, records, elapsed


def test_world_files_and_metadata(world):
    cfg, out, records, elapsed = world
    assert elapsed < 20.0
    assert len(records) == cfg.num_raw_videos
    lines = (out / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == len(records)
    first = json.loads(lines[0])
    assert set(first) >= {
        "video_id",
        "file",
        "title",
        "fps",
        "num_frames",
        "width",
        "height",
        "corrupt",
        "scenes",
    }
    assert set(first["scenes"][0]) >= {
        "scene_id",
        "start_frame",
        "end_frame",
        "spec",
        "caption",
        "defects",
        "duplicate_of",
    }
    assert load_raw_metadata(out) == records
    scene_ids = set()
    for rec in records:
        assert (out / rec.file).is_file()
        assert rec.title and rec.fps == cfg.fps and (rec.width, rec.height) == (64, 64)
        assert rec.scenes[0].start_frame == 0 and rec.scenes[-1].end_frame == rec.num_frames
        for a, b in zip(rec.scenes, rec.scenes[1:], strict=False):
            assert a.end_frame == b.start_frame
            assert a.spec.background != b.spec.background  # hard, visible cuts
        for s in rec.scenes:
            assert cfg.scene_frames[0] <= s.num_frames <= cfg.scene_frames[1]
            assert s.caption == s.spec.caption()
            assert set(s.defects) <= set(DEFECTS) and len(s.defects) <= 1
            if s.duplicate_of:
                assert s.defects == ["duplicate"] and s.duplicate_of in scene_ids
            scene_ids.add(s.scene_id)
        if not rec.corrupt:
            assert probe_video(out / rec.file) == {
                "num_frames": rec.num_frames,
                "fps": 25.0,
                "width": 64,
                "height": 64,
            }
    readable = [s for r in records if not r.corrupt for s in r.scenes]
    planted = {d: sum(d in s.defects for s in readable) for d in DEFECTS}
    assert all(n >= 1 for n in planted.values()), planted
    assert sum(not s.defects for s in readable) >= len(readable) // 2
    assert sum(r.corrupt for r in records) == cfg.corrupt_files


def test_corrupt_files_fail_cleanly(world):
    _, out, records, _ = world
    for rec in records:
        if rec.corrupt:
            with pytest.raises(VideoDecodeError) as info:
                read_video(out / rec.file)
            assert "\n" not in str(info.value)


def test_world_is_deterministic_and_idempotent(world, tmp_path, caplog):
    cfg, out, records, _ = world
    again = generate_raw_videos(cfg, tmp_path / "again")
    assert again == records
    assert (tmp_path / "again" / "metadata.jsonl").read_bytes() == (out / "metadata.jsonl").read_bytes()
    for rec in records:
        if not rec.corrupt:
            a, _ = read_video(out / rec.file)
            b, _ = read_video(tmp_path / "again" / rec.file)
            assert np.array_equal(a, b)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "again").iterdir()}
    caplog.set_level("INFO", logger="t2v.world.raw")
    generate_raw_videos(cfg, tmp_path / "again")
    assert "skipping" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "again").iterdir()} == before
    other = plan_raw_videos(cfg.model_copy(update={"seed": 7}))
    assert [s.caption for r in other for s in r.scenes] != [s.caption for r in records for s in r.scenes]


_DECODED: dict[str, np.ndarray] = {}


def _scenes(world):
    cfg, out, records, _ = world
    for rec in records:
        if rec.corrupt:
            continue
        key = str(out / rec.file)
        if key not in _DECODED:
            _DECODED[key] = read_video(out / rec.file)[0]
        frames = _DECODED[key]
        for s in rec.scenes:
            yield cfg, rec, s, frames[s.start_frame : s.end_frame], frames


def _luma(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def test_planted_defects_are_visible(world):
    seen = set()
    for cfg, _, s, clip, _ in _scenes(world):
        truth = render_scene_record(s, cfg)
        assert np.abs(truth.astype(int) - clip.astype(int)).mean() < 5.0  # the metadata re-renders the file
        d = s.defects[0] if s.defects else None
        seen.add(d)
        luma = _luma(clip)
        if d == "dark":
            assert luma.mean() < 30
        else:
            assert luma.mean() > 40
        if d == "black_borders":
            bar = int(s.params["bar"])
            assert luma[:, :bar].max() < 16 and luma[:, -bar:].max() < 16
            assert luma[:, bar + 1 : -bar - 1].mean() > 40
        if d == "blurred":
            clean = render_scene(s.spec, s.num_frames, cfg.height, cfg.width, s.seed)
            sharp = lambda f: np.mean([cv2.Laplacian(_luma(x), cv2.CV_32F).var() for x in f])  # noqa: E731
            assert sharp(clip) < 0.2 * sharp(clean)
        if d == "subtitles":
            bottom = luma[:, -12:]
            assert (bottom > 200).mean() > 0.02
            assert (
                np.abs(
                    clip[:, -12:].astype(int)
                    - render_scene(s.spec, s.num_frames, cfg.height, cfg.width, s.seed).astype(int)[:, -12:]
                ).mean()
                > 5
            )
        if d == "watermark":
            clean = render_scene(
                s.spec, s.num_frames, cfg.height, cfg.width, s.seed, cfg.noise_std, s.noise_seed
            )
            changed = np.median(np.abs(clip.astype(int) - clean.astype(int)).sum(-1), axis=0) > 40
            # compression error at the object's edges is not the watermark: look where the scene is background
            changed &= (np.abs(clean.astype(int) - COLOURS[s.spec.background]).sum(-1) < 30).all(axis=0)
            corner = str(s.params["corner"])
            rows = slice(0, cfg.height // 2) if corner[0] == "t" else slice(cfg.height // 2, None)
            cols = slice(0, cfg.width // 2) if corner[1] == "l" else slice(cfg.width // 2, None)
            inside = int(changed[rows, cols].sum())
            assert inside > 20 and inside >= 0.8 * changed.sum()  # in its corner
        if d in (None, "static", "too_fast", "duplicate"):
            c = _centroids(clip, COLOURS[s.spec.background])
            steps = np.abs(np.diff(c, axis=0)).sum(-1)
            if d == "static":
                assert np.nanmax(steps) < 1.0
            elif d == "too_fast":
                assert np.nanmedian(steps) > 5.0
            else:
                assert 0.3 < np.nanmedian(steps) < 3.0
    assert seen >= set(DEFECTS) | {None}


def test_duplicates_are_near_copies(world):
    clips = {s.scene_id: (s, clip) for _, _, s, clip, _ in _scenes(world)}
    n = 0
    for s, clip in clips.values():
        if s.duplicate_of:
            src, src_clip = clips[s.duplicate_of]
            assert src.spec == s.spec and src.num_frames == s.num_frames and not src.defects
            diff = np.abs(clip.astype(int) - src_clip.astype(int)).mean()
            assert 1.0 < diff < 10.0
            n += 1
    assert n >= 1


def test_scene_cuts_are_hard(world):
    cfg, out, records, _ = world
    for rec in records:
        if rec.corrupt:
            continue
        frames = next(f for _, r, _, _, f in _scenes(world) if r.video_id == rec.video_id)
        step = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
        cuts = [s.start_frame - 1 for s in rec.scenes[1:]]
        inside = np.delete(step, cuts)
        assert step[cuts].min() > 3 * max(inside.max(), 1.0), (rec.video_id, step[cuts], inside.max())


def test_clean_scenes_of_the_world_pass_the_checker(world):
    clean = [(clip, s.spec) for _, _, s, clip, _ in _scenes(world) if not s.defects]
    res = score_batch([_down(c[:17]) for c, _ in clean], [spec for _, spec in clean])
    assert res["n"] == len(clean) and res["total"] >= 0.95, res
    dark = [(clip, s.spec) for _, _, s, clip, _ in _scenes(world) if s.defects == ["dark"]]
    assert score_batch([c for c, _ in dark], [sp for _, sp in dark])["total"] < 0.5


# ------------------------------------------------------------------ checker


@pytest.fixture(scope="module")
def prompts():
    return heldout_prompts(WorldConfig(), n=24)


def _mean(scores, key="total"):
    return float(np.mean([s[key] for s in scores]))


def test_checker_scores_ground_truth_high(prompts):
    direct, mp4, small, degraded = [], [], [], []
    rng = np.random.default_rng(0)
    for i, spec in enumerate(prompts):
        frames = render_scene(spec, 17, 64, 64, seed=i, noise_std=2.0)
        decoded, _ = read_video(encode_mp4_bytes(frames, 25, crf=28))
        direct.append(score_video(frames, spec))
        mp4.append(score_video(decoded, spec))
        small.append(score_video(_down(decoded), spec))
        # a stand-in for a small VAE's output: low resolution, blur, a colour cast and noise
        g = blur(_down(frames), 1.2).astype(np.float32) * 0.92 + 10 + rng.normal(0, 6, (17, 32, 32, 3))
        degraded.append(score_video(np.clip(g, 0, 255).astype(np.uint8), spec))
    for scores in (direct, mp4, small, degraded):
        assert _mean(scores) >= 0.9
        assert _mean(scores, "object_present") >= 0.9
        assert all(0.0 <= v <= 1.0 for s in scores for v in s.values())
    assert set(direct[0]) == {"colour", "background", "motion", "object_present", "total"}


def test_checker_scores_wrong_videos_low(prompts):
    rng = np.random.default_rng(1)
    noise, wrong_colour, wrong_dir, wrong_bg, static, grey = [], [], [], [], [], []
    for i, spec in enumerate(prompts):
        frames = _down(render_scene(spec, 17, 64, 64, seed=i, noise_std=2.0))
        obj = spec.objects[0]
        noise.append(score_video(rng.integers(0, 256, frames.shape, dtype=np.uint8), spec))
        other = next(c for c in ("red", "green", "yellow", "white") if c not in (obj.colour, spec.background))
        wrong_colour.append(
            score_video(
                frames, spec.model_copy(update={"objects": [obj.model_copy(update={"colour": other})]})
            )
        )
        wrong_dir.append(
            score_video(
                frames,
                spec.model_copy(
                    update={"objects": [obj.model_copy(update={"direction": OPPOSITE[obj.direction]})]}
                ),
            )
        )
        other_bg = next(b for b in ("gray", "blue", "brown") if b != spec.background)
        wrong_bg.append(score_video(frames, spec.model_copy(update={"background": other_bg})))
        static.append(score_video(_down(render_scene(spec.with_speed(0), 17, 64, 64, seed=i)), spec))
        grey.append(score_video(np.full((17, 32, 32, 3), 128, np.uint8), spec))
    assert _mean(noise) < 0.1 and _mean(noise, "object_present") < 0.1
    assert _mean(wrong_colour, "colour") < 0.1 and _mean(wrong_colour) < 0.7
    assert _mean(wrong_dir, "motion") < 0.1 and _mean(wrong_dir) < 0.7
    assert _mean(wrong_bg, "background") < 0.1 and _mean(wrong_bg) < 0.7
    assert max(s["motion"] for s in static) == 0.0
    assert _mean(grey) < 0.4 and _mean(grey, "object_present") == 0.0


def test_checker_multi_object_and_batch():
    spec = SceneSpec(
        objects=[
            ObjectSpec(shape="square", colour="red", size=12, direction="right", speed=1.5),
            ObjectSpec(shape="circle", colour="yellow", size=12, direction="up", speed=1.5),
        ],
        background="blue",
    )
    frames = render_scene(spec, 17, 64, 64, seed=5)
    assert score_video(frames, spec)["total"] >= 0.9
    swapped = spec.model_copy(
        update={"objects": [spec.objects[0].model_copy(update={"direction": "left"}), spec.objects[1]]}
    )
    assert score_video(frames, swapped)["motion"] <= 0.5
    res = score_batch([frames, frames[:1]], [spec, spec])
    assert res["n"] == 2 and 0.0 <= res["total"] <= 1.0
    assert score_video(frames[:1], spec)["motion"] == 0.0  # a single frame cannot show motion
    with pytest.raises(ValueError):
        score_batch([frames], [])
    with pytest.raises(ValueError):
        score_video(frames.astype(np.float32), spec)
