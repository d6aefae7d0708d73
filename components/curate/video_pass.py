"""One video, scene by scene: the streaming half of a curate shard.

Frames are decoded one at a time (:class:`t2v.video.VideoReader`, on a constant-rate timeline) and each
is scaled once by swscale, straight from the decoder's pixel format, to the output scale; the output clip
is its centre crop, and the analysis frame (scene detection, scores, hashes) the whole scaled picture
resized to the analysis size (swscale again only when the output is smaller than the analysis size). PySceneDetect's detector
sees every analysis frame as it comes; a clip is finished as soon as no cut can still change it (its end,
plus the scene trim, plus the detector's reporting delay, lies behind the newest frame), and then it is
scored, captioned and, if kept, encoded and spooled to disk. Only the frames of the clip being built stay
in memory: memory is bounded by ``clip_max_frames`` (plus the detector's delay), not by the video.

The cuts and clips are exactly those of :func:`components.curate.stage.detect_scenes` and
:func:`~components.curate.stage.split_clips` on the whole decoded video.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from components.curate import filters
from t2v.config.curate import CurateConfig
from t2v.video import VideoReader, encode_mp4_bytes, rotated_size, to_rgb

log = logging.getLogger(__name__)


@dataclass
class Timers:
    """Seconds spent per step (decode, scenes, each score, hashes, encode, each model)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def time(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def add(self, other: dict[str, float]) -> None:
        for k, v in other.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v


def _analysis_size(w: int, h: int, longer: int) -> tuple[int, int]:
    scale = longer / max(w, h)
    if scale >= 1.0:
        return w, h
    return max(8, round(w * scale)), max(8, round(h * scale))


def make_converter(cfg: CurateConfig) -> Callable:
    """``(av frame, rotation) -> (analysis RGB, output RGB)``, both straight from the decoded frame."""

    import av

    to_out = av.video.reformatter.VideoReformatter()  # one swscale context per output size
    to_small = av.video.reformatter.VideoReformatter()

    geometry: dict[str, Any] = {}

    def convert(frame, rotation: int):
        if not geometry:  # fixed by the first frame: a stream whose size or rotation changes keeps it
            dw, dh = rotated_size(frame.width, frame.height, rotation)
            aw, ah = _analysis_size(dw, dh, cfg.analysis_size)
            if cfg.output_height:
                th, tw = cfg.output_height, cfg.output_width
                scale = max(th / dh, tw / dw)
                nw, nh = max(tw, round(dw * scale)), max(th, round(dh * scale))
                y0, x0 = (nh - th) // 2, (nw - tw) // 2
            else:
                nw, nh, y0, x0, th, tw = dw, dh, 0, 0, dh, dw
            geometry.update(rotation=rotation, size=(aw, ah, nw, nh, y0, x0, th, tw))
        rotation = geometry["rotation"]
        aw, ah, nw, nh, y0, x0, th, tw = geometry["size"]
        full = to_rgb(frame, rotation, nw, nh, reformatter=to_out)  # the whole picture at output scale
        out = full if (nh, nw) == (th, tw) else np.ascontiguousarray(full[y0 : y0 + th, x0 : x0 + tw])
        if (aw, ah) == (nw, nh):
            small = full
        elif aw <= nw and ah <= nh:  # analysis frames from the scaled picture: one swscale pass per frame
            small = cv2.resize(full, (aw, ah), interpolation=cv2.INTER_AREA)
        else:
            small = to_rgb(frame, rotation, aw, ah, reformatter=to_small)
        return small, out

    return convert


class SceneStream:
    """PySceneDetect fed one analysis frame at a time; :meth:`push` returns the cuts it reports."""

    def __init__(self, cfg: CurateConfig, fps: float):
        from scenedetect import AdaptiveDetector, ContentDetector

        if cfg.scene_detector == "adaptive":
            self.detector = AdaptiveDetector(adaptive_threshold=cfg.scene_threshold, min_scene_len=cfg.scene_min_len)
            self.delay = cfg.scene_min_len + 4  # its window looks ahead two frames, and it merges short scenes
        else:
            self.detector = ContentDetector(threshold=cfg.scene_threshold, min_scene_len=cfg.scene_min_len)
            self.delay = cfg.scene_min_len + 2  # the flash filter may report a cut min_scene_len frames late
        self.rate = float(fps) if fps and fps > 0 else 25.0
        self.count = 0

    def push(self, small: np.ndarray) -> list[int]:
        from scenedetect import FrameTimecode

        bgr = np.ascontiguousarray(small[..., ::-1])
        found = self.detector.process_frame(FrameTimecode(self.count, fps=self.rate), bgr)
        self.count += 1
        return [int(tc.frame_num) for tc in found]

    def finish(self) -> list[int]:
        from scenedetect import FrameTimecode

        if not self.count:
            return []
        return [int(tc.frame_num) for tc in self.detector.post_process(FrameTimecode(self.count - 1, fps=self.rate))]


ClipSink = Callable[[int, int, int, np.ndarray, np.ndarray | None, bool], None]


def stream_video(
    reader: VideoReader,
    cfg: CurateConfig,
    fps_out: int,
    on_clip: ClipSink,
    timers: Timers,
) -> tuple[int, list[int]]:
    """Decode ``reader`` on a ``fps_out`` timeline and call ``on_clip(scene, start, end, small, out,
    is_clip)`` for every clip (and every too-short remainder, with ``out`` None and ``is_clip`` False) as
    soon as it is final. Returns (number of frames, cuts). Raises VideoDecodeError from the reader
    (possibly after some clips were given: the caller discards them)."""
    scenes = SceneStream(cfg, fps_out)
    trim, cmin, cmax = cfg.scene_trim_frames, cfg.clip_min_frames, cfg.clip_max_frames
    buf_small: list[np.ndarray] = []
    buf_out: list[np.ndarray] = []
    state = {"b0": 0, "scene": 0, "scene_start": 0, "next": trim, "early": -1}
    cuts: list[int] = []

    def take(s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        b0 = state["b0"]
        return np.stack(buf_small[s - b0 : e - b0]), np.stack(buf_out[s - b0 : e - b0])

    def release(upto: int) -> None:
        drop = upto - state["b0"]
        if drop > 0:
            del buf_small[:drop], buf_out[:drop]
            state["b0"] = upto

    def finish_scene(end: int) -> None:
        stop = end - trim
        s = state["next"]
        while stop - s >= cmin:
            n = min(cmax, stop - s)
            small, out = take(s, s + n)
            on_clip(state["scene"], s, s + n, small, out, True)
            s += n
        if stop > s:
            on_clip(state["scene"], s, stop, None, None, False)
        state.update(scene=state["scene"] + 1, scene_start=end, next=end + trim, early=-1)
        release(min(end + trim, end))

    frames = reader.frames(fps=fps_out, convert=make_converter(cfg))
    window = filters.CUT_CONFIRM_WINDOW
    delay = scenes.delay + window + 1  # a cut is decided once the frames after it are seen
    keep_history = delay + 2 * window + 4
    history: dict[int, np.ndarray] = {}  # the latest analysis frames, for confirming cuts
    pending: list[int] = []

    def decide(upto: int, last: int) -> None:
        while pending and pending[0] + window <= upto:
            c = pending.pop(0)
            around = filters.cut_frames(c, history.__getitem__, last + 1)
            if cfg.scene_confirm_min_diff > 0 and filters.not_a_cut(around, cfg.scene_confirm_min_diff):
                continue  # a flash or a fade, not a cut
            if state["early"] >= 0 and c < state["early"] + trim:  # inside a clip already given
                log.warning("%s: late cut at frame %d ignored", reader.name, c)
                continue
            cuts.append(c)
            finish_scene(c)

    index = -1
    while True:
        with timers.time("decode"):
            item = next(frames, None)
        if item is None:
            break
        index += 1
        small, out = item
        buf_small.append(small)
        buf_out.append(out)
        history[index] = small
        history.pop(index - keep_history, None)
        with timers.time("scenes"):
            found = scenes.push(small)
        for c in sorted(set(found)):
            if 0 < c <= index and (not pending or c > pending[-1]) and c > state["scene_start"]:
                pending.append(c)
        decide(index, index)
        # A full-length clip is final once no cut can still fall inside it or its trim.
        while state["next"] + cmax + trim + delay <= index:
            s = state["next"]
            small_c, out_c = take(s, s + cmax)
            on_clip(state["scene"], s, s + cmax, small_c, out_c, True)
            state["next"] = state["early"] = s + cmax
            release(s + cmax)
    num = index + 1
    with timers.time("scenes"):
        late = scenes.finish()
    for c in sorted(set(late)):
        if 0 < c < num and (not pending or c > pending[-1]) and c > state["scene_start"]:
            pending.append(c)
    decide(num + window, num - 1)
    if num:
        finish_scene(num)
    return num, cuts


def encode_clip(out: np.ndarray, fps: int, cfg: CurateConfig) -> bytes:
    return encode_mp4_bytes(out, fps, crf=cfg.output_crf, preset=cfg.output_preset, threads=1)


def spool(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


__all__ = ["Timers", "SceneStream", "stream_video", "make_converter", "encode_clip", "spool", "filters"]
