"""Raw videos of the synthetic world: several scenes cut together, with planted defects and corrupt files.

:func:`generate_raw_videos` writes ``<out_dir>/<video_id>.mp4`` and ``<out_dir>/metadata.jsonl`` (one
:class:`RawVideoRecord` per line, written last and atomically). The whole output is a function of the
config: the same config gives byte-identical metadata and identical decoded frames.

Generation happens in two passes. A cheap sequential *plan* (:func:`plan_raw_videos`) fixes every scene:
its spec, length, seeds and defect; then every video is rendered from its record alone
(:func:`render_raw_video`), so videos can be rendered in any order or in parallel.

Defects (at most one per scene, allocated exactly from the ``rate_*`` fields over the scenes of readable
videos): ``static`` (speed 0), ``too_fast`` (large jumps per frame, wrapping around the frame), ``dark``,
``blurred``, ``subtitles`` (burnt-in text at the bottom), ``watermark`` (a translucent logo in a corner),
``black_borders`` (letterbox bars) and ``duplicate`` (an earlier clean scene rendered again with other noise
and a small brightness change; ``duplicate_of`` names it). Consecutive scenes always have different
backgrounds, so every cut is a hard, visible cut.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from t2v.world.config import DEFECTS, WorldConfig
from t2v.world.render import (
    add_subtitles,
    add_watermark,
    blur,
    darken,
    letterbox,
    max_speed,
    render_scene,
    shift_brightness,
)
from t2v.world.scenes import ObjectSpec, SceneSpec, sample_scene

log = logging.getLogger(__name__)

RAW_STREAM = 0x52415721  # seed stream of the raw videos ("RAW!")
METADATA_FILE = "metadata.jsonl"

_SUBTITLE_LINES = [
    "hello there",
    "look at this",
    "so cool",
    "wait for it",
    "nice one",
    "here we go",
    "watch this",
    "amazing",
    "oh wow",
    "see you",
    "thank you",
    "one more",
]
_WATERMARKS = ["TV", "HD", "LOGO", "CH1", "NEWS"]
_TITLE_ADJ = ["Relaxing", "Satisfying", "Colourful", "Calm", "Amazing", "Simple", "Funny", "Hypnotic"]
_TITLE_END = ["compilation", "video", "clips", "moments", "(HD)", "for kids", "loop", "animation"]


class SceneRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scene_id: str
    start_frame: int = Field(ge=0)
    end_frame: int = Field(ge=1, description="exclusive")
    spec: SceneSpec
    caption: str
    defects: list[str] = Field(default_factory=list)
    duplicate_of: str | None = None
    seed: int = Field(ge=0, description="layout seed given to render_scene")
    noise_seed: int = Field(ge=0)
    params: dict[str, str | int | float] = Field(default_factory=dict, description="defect parameters")

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame


class RawVideoRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video_id: str
    file: str
    title: str
    fps: int
    num_frames: int
    width: int
    height: int
    corrupt: bool = False
    corrupt_kind: str | None = Field(None, description="'truncated' or 'garbage' for corrupt files")
    scenes: list[SceneRecord]

    def to_json_line(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- planning


def _allocate_defects(cfg: WorldConfig, num_scenes: int, rng: np.random.Generator) -> list[str | None]:
    counts = {}
    for name, rate in cfg.defect_rates().items():
        counts[name] = 0 if rate <= 0 else max(1, int(round(rate * num_scenes)))
    while sum(counts.values()) > num_scenes:  # tiny worlds: the "at least one" may overflow
        biggest = max(counts, key=lambda k: (counts[k], k))
        counts[biggest] -= 1
    labels: list[str | None] = [d for d in DEFECTS for _ in range(counts[d])]
    labels += [None] * (num_scenes - len(labels))
    order = rng.permutation(num_scenes)
    return [labels[i] for i in order]


def _scene_spec_for(
    spec: SceneSpec, defect: str | None, num_frames: int, cfg: WorldConfig, content_h: int
) -> SceneSpec:
    """Final speeds: 0 for static, a large jump for too_fast, else clipped to keep the object in frame."""
    objs: list[ObjectSpec] = []
    for o in spec.objects:
        if defect == "static":
            objs.append(o.model_copy(update={"speed": 0.0, "speed_name": None}))
        elif defect == "too_fast":
            extent = cfg.width if o.direction in ("left", "right") else content_h
            objs.append(
                o.model_copy(update={"speed": round(cfg.too_fast_speed * extent, 4), "speed_name": None})
            )
        else:
            cap = max_speed(o, num_frames, content_h, cfg.width)
            objs.append(o.model_copy(update={"speed": round(min(o.speed, cap), 4)}))
    return spec.model_copy(update={"objects": objs})


def _title(rng: np.random.Generator, first: SceneSpec, index: int) -> str:
    obj = first.objects[0]
    adj = str(rng.choice(_TITLE_ADJ))
    end = str(rng.choice(_TITLE_END))
    style = int(rng.integers(3))
    if style == 0:
        return f"{adj} {obj.colour} {obj.shape}s {end}"
    if style == 1:
        return f"{adj} shapes {end} #{index + 1}"
    return f"{obj.colour.capitalize()} {obj.shape} on {first.background} - {adj.lower()} {end}"


def plan_raw_videos(cfg: WorldConfig) -> list[RawVideoRecord]:
    """Every raw video's record (specs, lengths, seeds, defects); cheap, no rendering."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, RAW_STREAM]))
    n = cfg.num_raw_videos
    corrupt = set(int(i) for i in rng.choice(n, size=cfg.corrupt_files, replace=False))
    scene_counts = [
        int(c) for c in rng.integers(cfg.scenes_per_video[0], cfg.scenes_per_video[1] + 1, size=n)
    ]
    readable_scenes = sum(c for i, c in enumerate(scene_counts) if i not in corrupt)
    labels = _allocate_defects(cfg, readable_scenes, rng)
    k = 0  # index into labels (readable scenes only)
    clean_pool: list[SceneRecord] = []  # earlier clean scenes of readable videos: duplicate sources
    bar = int(round(cfg.border_fraction * cfg.height))
    records: list[RawVideoRecord] = []
    for v in range(n):
        video_id = f"raw_{v:05d}"
        is_corrupt = v in corrupt
        scenes: list[SceneRecord] = []
        start = 0
        prev_bg: str | None = None
        for s in range(scene_counts[v]):
            scene_id = f"{video_id}_s{s:02d}"
            defect = None
            if not is_corrupt:
                defect = labels[k]
                if defect == "duplicate":
                    sources = [r for r in clean_pool if r.spec.background != prev_bg]
                    if not sources:  # nothing to copy yet: trade places with a later non-duplicate label
                        j = next((j for j in range(k + 1, len(labels)) if labels[j] != "duplicate"), None)
                        if j is None:
                            log.warning("%s: no scene to duplicate; planting no defect", scene_id)
                            labels[k] = None
                        else:
                            labels[k], labels[j] = labels[j], labels[k]
                        defect = labels[k]
                k += 1
            seed = int(rng.integers(2**31 - 1))
            noise_seed = int(rng.integers(2**31 - 1))
            length = int(rng.integers(cfg.scene_frames[0], cfg.scene_frames[1] + 1))
            base = sample_scene(rng, cfg, exclude_background=prev_bg)
            params: dict[str, str | int | float] = {}
            duplicate_of = None
            if defect == "duplicate":
                src = sources[int(rng.integers(len(sources)))]
                spec, length, seed, duplicate_of = src.spec, src.num_frames, src.seed, src.scene_id
                params["brightness"] = int(rng.choice([-6, -5, -4, 4, 5, 6]))
            else:
                content_h = cfg.height - 2 * bar if defect == "black_borders" else cfg.height
                if defect not in ("static", "too_fast"):
                    # Shorten the scene rather than slow the object, so speed names keep their meaning.
                    for o in base.objects:
                        fit = int(max_speed(o, 2, content_h, cfg.width) / max(o.speed, 1e-9)) + 1
                        length = max(cfg.scene_frames[0], min(length, fit))
                spec = _scene_spec_for(base, defect, length, cfg, content_h)
                if defect == "black_borders":
                    params["bar"] = bar
                elif defect == "subtitles":
                    i, j = rng.choice(len(_SUBTITLE_LINES), size=2, replace=False)
                    params["line1"], params["line2"] = _SUBTITLE_LINES[int(i)], _SUBTITLE_LINES[int(j)]
                elif defect == "watermark":
                    params["corner"] = str(rng.choice(["tl", "tr", "bl", "br"]))
                    params["text"] = str(rng.choice(_WATERMARKS))
                elif defect == "dark":
                    params["factor"] = cfg.dark_factor
                elif defect == "blurred":
                    params["sigma"] = round(cfg.blur_sigma * min(cfg.width, cfg.height), 4)
            rec = SceneRecord(
                scene_id=scene_id,
                start_frame=start,
                end_frame=start + length,
                spec=spec,
                caption=spec.caption(),
                defects=[defect] if defect else [],
                duplicate_of=duplicate_of,
                seed=seed,
                noise_seed=noise_seed,
                params=params,
            )
            scenes.append(rec)
            if not is_corrupt and defect is None:
                clean_pool.append(rec)
            start += length
            prev_bg = spec.background
        title = _title(rng, scenes[0].spec, v)
        corrupt_kind = str(rng.choice(["truncated", "garbage"])) if is_corrupt else None
        records.append(
            RawVideoRecord(
                video_id=video_id,
                file=f"{video_id}.mp4",
                title=title,
                fps=cfg.fps,
                num_frames=start,
                width=cfg.width,
                height=cfg.height,
                corrupt=is_corrupt,
                corrupt_kind=corrupt_kind,
                scenes=scenes,
            )
        )
    return records


# ---------------------------------------------------------------- rendering


def render_scene_record(scene: SceneRecord, cfg: WorldConfig) -> np.ndarray:
    """The exact frames (before compression) of one planned scene, uint8 [T, H, W, 3]."""
    defect = scene.defects[0] if scene.defects else None
    p = scene.params
    h, w, t = cfg.height, cfg.width, scene.num_frames
    if defect == "black_borders":
        bar = int(p["bar"])
        frames = render_scene(scene.spec, t, h - 2 * bar, w, scene.seed, cfg.noise_std, scene.noise_seed)
        return letterbox(frames, bar)
    overflow = "wrap" if defect == "too_fast" else "clip"
    frames = render_scene(
        scene.spec, t, h, w, scene.seed, cfg.noise_std, scene.noise_seed, on_overflow=overflow
    )
    if defect == "dark":
        frames = darken(frames, float(p["factor"]))
    elif defect == "blurred":
        frames = blur(frames, float(p["sigma"]))
    elif defect == "subtitles":
        frames = add_subtitles(frames, [str(p["line1"]), str(p["line2"])])
    elif defect == "watermark":
        frames = add_watermark(frames, str(p["corner"]), str(p["text"]))
    elif defect == "duplicate":
        frames = shift_brightness(frames, float(p["brightness"]))
    return frames


def render_raw_video(record: RawVideoRecord, cfg: WorldConfig) -> np.ndarray:
    """All frames of a raw video (its scenes cut together), uint8 [T, H, W, 3]."""
    return np.concatenate([render_scene_record(s, cfg) for s in record.scenes], axis=0)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _corrupt_bytes(data: bytes, kind: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if kind == "truncated":  # the mp4 index (moov) is at the end: a cut file cannot be opened
        return data[: max(64, int(len(data) * rng.uniform(0.3, 0.6)))]
    return rng.integers(0, 256, size=max(1024, len(data) // 2), dtype=np.uint8).tobytes()


def write_raw_video(record: RawVideoRecord, cfg: WorldConfig, out_dir: Path) -> None:
    from t2v.video import encode_mp4_bytes, write_mp4

    frames = render_raw_video(record, cfg)
    path = Path(out_dir) / record.file
    if record.corrupt:
        data = encode_mp4_bytes(frames, cfg.fps, crf=cfg.crf)
        _write_atomic(
            path, _corrupt_bytes(data, record.corrupt_kind or "garbage", record.scenes[0].noise_seed)
        )
    else:
        write_mp4(path, frames, cfg.fps, crf=cfg.crf, threads=1)


def _render_task(args: tuple[str, str, str]) -> str:
    record_json, cfg_json, out_dir = args
    record = RawVideoRecord.model_validate_json(record_json)
    write_raw_video(record, WorldConfig.model_validate_json(cfg_json), Path(out_dir))
    return record.video_id


def metadata_text(records: list[RawVideoRecord]) -> str:
    return "".join(r.to_json_line() + "\n" for r in records)


def load_raw_metadata(path: str | os.PathLike) -> list[RawVideoRecord]:
    """Read a ``metadata.jsonl`` (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / METADATA_FILE
    return [
        RawVideoRecord.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()
    ]


def generate_raw_videos(
    cfg: WorldConfig, out_dir: str | os.PathLike, workers: int = 1
) -> list[RawVideoRecord]:
    """Write the world's raw videos and ``metadata.jsonl`` into ``out_dir``; returns the records.

    Idempotent: when ``out_dir`` already holds the same metadata and every file, nothing is rendered.
    ``workers > 1`` renders videos in that many processes (same output).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = plan_raw_videos(cfg)
    text = metadata_text(records)
    meta_path = out / METADATA_FILE
    if (
        meta_path.exists()
        and meta_path.read_text() == text
        and all((out / r.file).is_file() for r in records)
    ):
        log.info("world: %s already holds these %d raw videos; skipping", out, len(records))
        return records
    meta_path.unlink(missing_ok=True)  # the metadata appears again only once every file is in place
    total = len(records)
    n_frames = sum(r.num_frames for r in records)
    log.info(
        "world: rendering %d raw videos (%d frames, %dx%d) into %s",
        total,
        n_frames,
        cfg.width,
        cfg.height,
        out,
    )
    t0 = time.monotonic()
    last = t0
    done = 0

    def progress(video_id: str) -> None:
        nonlocal done, last
        done += 1
        now = time.monotonic()
        if done == total or now - last >= 5.0 or done == 1:
            rate = done / max(now - t0, 1e-9)
            eta = (total - done) / rate if rate > 0 else float("inf")
            log.info("world: %d/%d videos (%s), %.1f videos/s, ETA %.0fs", done, total, video_id, rate, eta)
            last = now

    if workers > 1 and total > 1:
        from concurrent.futures import ProcessPoolExecutor

        cfg_json = cfg.model_dump_json()
        tasks = [(r.model_dump_json(), cfg_json, str(out)) for r in records]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for video_id in pool.map(_render_task, tasks):
                progress(video_id)
    else:
        for r in records:
            write_raw_video(r, cfg, out)
            progress(r.video_id)
    _write_atomic(out / "world_config.json", (cfg.model_dump_json(indent=2) + "\n").encode())
    _write_atomic(meta_path, text.encode())
    counts = {d: sum(d in s.defects for r in records for s in r.scenes) for d in DEFECTS}
    log.info(
        "world: wrote %d videos (%d corrupt), %d scenes, defects %s in %.1fs",
        total,
        sum(r.corrupt for r in records),
        sum(len(r.scenes) for r in records),
        counts,
        time.monotonic() - t0,
    )
    return records


__all__ = [
    "METADATA_FILE",
    "RawVideoRecord",
    "SceneRecord",
    "generate_raw_videos",
    "load_raw_metadata",
    "plan_raw_videos",
    "render_raw_video",
    "render_scene_record",
    "write_raw_video",
]
