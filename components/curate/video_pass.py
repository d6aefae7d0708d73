"""One video, scene by scene: the streaming half of a curate shard.

Frames are decoded one at a time (:class:`t2v.video.VideoReader`, on a constant-rate timeline) and each
is scaled once by swscale, straight from the decoder's pixel format, to the output scale (in ``yuv420p``,
the encoder's format, for YUV sources: :class:`FrameConverter`); the output clip is its centre crop, and
the analysis frame (scene detection, scores, hashes) the whole scaled picture resized to the analysis size
(from the source again only when the output is smaller than the analysis size). PySceneDetect's detector
sees every analysis frame as it comes; a clip is finished as soon as no cut can still change it (its end,
plus the scene trim, plus the detector's reporting delay, lies behind the newest frame), and then it is
scored, captioned and, if kept, encoded and spooled to disk. Only the frames of the clip being built stay
in memory: memory is bounded by ``clip_max_frames`` (plus the detector's delay), not by the video.

The cuts and clips are exactly those of :func:`components.curate.stage.detect_scenes` and
:func:`~components.curate.stage.split_clips` on the whole decoded video.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from components.curate import filters
from components.curate.transitions import TransitionFinder
from components.curate.watchdog import beat
from t2v.alpha import has_alpha
from t2v.config.curate import CurateConfig
from t2v.progress import Progress
from t2v.video import (
    YUV_SOURCE_PREFIXES,
    VideoDecodeError,
    VideoReader,
    Yuv420Clip,
    display_size,
    encode_mp4_bytes,
    hdr_transfer,
    to_rgb,
    to_yuv420,
)

log = logging.getLogger(__name__)


@dataclass
class Timers:
    """Seconds spent per step (decode, scenes, each score, hashes, encode, each model). A step's start and
    end are the video's heartbeats for the stall watchdog (:func:`components.curate.watchdog.beat`)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def time(self, name: str):
        beat()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            beat()

    def add(self, other: dict[str, float]) -> None:
        for k, v in other.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v


def _analysis_size(w: int, h: int, longer: int) -> tuple[int, int]:
    scale = longer / max(w, h)
    if scale >= 1.0:
        return w, h
    return max(8, round(w * scale)), max(8, round(h * scale))


class FrameConverter:
    """``(av frame, rotation) -> (analysis RGB, output frame)``, both straight from the decoded frame, and
    :meth:`clip` to make a clip of output frames.

    A YUV source whose output size is even (every configured size; odd native sizes are not) is scaled
    by swscale into ``yuv420p`` at the output scale and cropped there: the output frames stay in the
    format the encoder takes (:class:`t2v.video.Yuv420Clip`, read as RGB on demand by the models), and
    the analysis frame is made from the scaled picture by one more small swscale pass. Sizes are those the
    picture is shown at (:func:`t2v.video.display_size`): non-square pixels (``sample_aspect``, an
    anamorphic DVD, HDV or broadcast stream) are made square by that same scaling, and the display
    rotation is applied. Other sources (an
    RGB or paletted format, odd sizes, HDR pictures, which are tone-mapped to SDR, pictures with an alpha
    channel, shown over ``alpha_background``) are scaled to RGB (:func:`t2v.video.to_rgb`) and cropped, and the
    analysis frame is resized from that picture by OpenCV. The first frame fixes the output and analysis
    sizes. A later frame of another size or orientation (a stream that switches resolution, a re-framed
    broadcast) is scaled to cover those same sizes and centre-cropped: it keeps its own aspect ratio, and
    the clips keep their size. A change of aspect ratio is counted in ``reframes`` (the stream cuts there:
    the framing jumps)."""

    #: Aspect ratios further apart than this (relative) are a new framing, and the stream cuts there.
    REFRAME_TOLERANCE = 0.01

    def __init__(self, cfg: CurateConfig, sample_aspect: Fraction | float = 1, bars: tuple[float, ...] = (0, 0, 0, 0)):
        import av

        self.cfg = cfg
        self.sample_aspect = Fraction(sample_aspect)
        # black bars to crop (shares of the shown picture: top, bottom, left, right; filters.black_bars)
        self.bars = tuple(float(x) for x in bars)
        self._to_out = av.video.reformatter.VideoReformatter()  # one swscale context per output size
        self._to_small = av.video.reformatter.VideoReformatter()
        self.geometry: dict[str, Any] = {}
        self.yuv = False
        self.colorspace: int | None = None
        self.reframes = 0

    def _fix_geometry(self, frame, rotation: int) -> None:
        """The output and analysis sizes, fixed by the first frame. With black bars (``self.bars``) the
        picture inside them is what is shown: the whole picture is scaled so that its inside covers the
        output, and both crops are centred on the inside (the analysis frame is cropped from a picture
        of its own scale, as for a refitted frame)."""
        cfg = self.cfg
        top, bottom, left, right = self.bars
        dw, dh = display_size(frame.width, frame.height, rotation, self.sample_aspect)
        inside_w, inside_h = dw * (1 - left - right), dh * (1 - top - bottom)
        if cfg.output_height:
            th, tw = cfg.output_height, cfg.output_width
        elif any(self.bars):  # the inside at its native size, even for yuv420p
            th, tw = max(2, int(inside_h) // 2 * 2), max(2, int(inside_w) // 2 * 2)
        else:
            th, tw = dh, dw
        th, tw = self._oriented(th, tw, inside_w, inside_h)
        aw, ah = _analysis_size(round(inside_w), round(inside_h), cfg.analysis_size)
        fmt = str(getattr(frame.format, "name", ""))
        # HDR (PQ, HLG) pictures are tone-mapped in RGB (t2v.hdr.tonemap_hdr): the RGB path
        # and so are pictures with transparency, composited over cfg.alpha_background (t2v.alpha)
        self.yuv = (
            fmt.startswith(YUV_SOURCE_PREFIXES) and not (th % 2 or tw % 2) and not hdr_transfer(frame)
            and not has_alpha(frame)
        )
        if any(self.bars):
            centre = (dw * left + inside_w / 2, dh * top + inside_h / 2)
            nw, nh, y0, x0 = self._cover_inside(dw, dh, inside_w, inside_h, centre, tw, th, even=self.yuv)
            small_crop = self._cover_inside(dw, dh, inside_w, inside_h, centre, aw, ah, even=False)
        else:
            nw, nh, y0, x0 = self._cover(dw, dh, tw, th, even=self.yuv)  # the native size: nothing to crop
            small_crop = None
        self.colorspace = int(getattr(frame, "colorspace", 2) or 2)
        self.geometry.update(
            rotation=rotation, source=(frame.width, frame.height, rotation), size=(aw, ah, nw, nh, y0, x0, th, tw),
            aspect=dw / dh, small_crop=small_crop,
        )

    def _oriented(self, th: int, tw: int, dw: float, dh: float) -> tuple[int, int]:
        """The output size for a picture shown at ``dw`` x ``dh``: the configured one, or with
        ``output_keep_orientation`` turned to the picture's orientation (portrait clips of a portrait
        source)."""
        if self.cfg.output_keep_orientation and self.cfg.output_height and th != tw and (dh > dw) != (th > tw):
            return tw, th
        return th, tw

    @staticmethod
    def _cover_inside(
        dw: int, dh: int, inside_w: float, inside_h: float, centre: tuple[float, float], w: int, h: int, even: bool
    ) -> tuple[int, int, int, int]:
        """:meth:`_cover` for the part of the picture inside its black bars: the size the whole ``dw`` x
        ``dh`` picture is scaled to so that its inside (``inside_w`` x ``inside_h`` around ``centre``)
        covers ``w`` x ``h``, and the offsets of the ``w`` x ``h`` crop centred on the inside."""
        scale = max(h / inside_h, w / inside_w)
        nw, nh = max(w, round(dw * scale)), max(h, round(dh * scale))
        y0 = min(max(0, round(centre[1] * scale - h / 2)), nh - h)
        x0 = min(max(0, round(centre[0] * scale - w / 2)), nw - w)
        if even:
            y0, x0 = y0 - y0 % 2, x0 - x0 % 2
        return nw, nh, y0, x0

    @staticmethod
    def _cover(dw: int, dh: int, tw: int, th: int, even: bool) -> tuple[int, int, int, int]:
        """The size a ``dw`` x ``dh`` picture is scaled to so that it covers ``tw`` x ``th`` with its aspect
        ratio kept, and the offsets of the centred ``tw`` x ``th`` crop (a yuv420p crop starts on an even row
        and column)."""
        scale = max(th / dh, tw / dw)
        nw, nh = max(tw, round(dw * scale)), max(th, round(dh * scale))
        y0, x0 = (nh - th) // 2, (nw - tw) // 2
        if even:
            y0, x0 = y0 - y0 % 2, x0 - x0 % 2
        return nw, nh, y0, x0

    def _refit(self, frame, rotation: int) -> None:
        """A frame of another size or orientation than the stream so far: the same output and analysis
        sizes, reached by scaling to cover them and cropping the centre."""
        aw, ah, _, _, _, _, th, tw = self.geometry["size"]
        dw, dh = display_size(frame.width, frame.height, rotation, self.sample_aspect)
        nw, nh, y0, x0 = self._cover(dw, dh, tw, th, even=self.yuv)
        sw, sh, sy, sx = self._cover(dw, dh, aw, ah, even=False)
        aspect = dw / dh
        if abs(aspect / self.geometry["aspect"] - 1.0) > self.REFRAME_TOLERANCE:
            self.reframes += 1
        log.info("curate: frame size %dx%d (rotation %d) mid-stream, was %dx%d (rotation %d)",
                 frame.width, frame.height, rotation, *self.geometry["source"])
        self.geometry.update(
            rotation=rotation, source=(frame.width, frame.height, rotation), size=(aw, ah, nw, nh, y0, x0, th, tw),
            aspect=aspect, small_crop=(sw, sh, sy, sx),
        )

    def _rgb(self, frame, rotation: int, width: int, height: int, reformatter) -> np.ndarray:
        return to_rgb(frame, rotation, width, height, reformatter=reformatter, background=self.cfg.alpha_background)

    def __call__(self, frame, rotation: int):
        if not self.geometry:
            self._fix_geometry(frame, rotation)
        elif (frame.width, frame.height, rotation) != self.geometry["source"]:
            self._refit(frame, rotation)
        rotation = self.geometry["rotation"]
        aw, ah, nw, nh, y0, x0, th, tw = self.geometry["size"]
        if self.geometry["small_crop"] is not None:  # a refitted frame: both pictures cropped from the centre
            sw, sh, sy, sx = self.geometry["small_crop"]
            small = np.ascontiguousarray(self._rgb(frame, rotation, sw, sh, self._to_small)[sy : sy + ah, sx : sx + aw])
            if self.yuv:
                return small, to_yuv420(frame, rotation, nw, nh, crop=(y0, x0, th, tw), reformatter=self._to_out)[0]
            full = self._rgb(frame, rotation, nw, nh, self._to_out)
            return small, np.ascontiguousarray(full[y0 : y0 + th, x0 : x0 + tw])
        if self.yuv:
            crop = None if (nh, nw) == (th, tw) else (y0, x0, th, tw)
            out, scaled = to_yuv420(frame, rotation, nw, nh, crop=crop, reformatter=self._to_out)
            if aw <= nw and ah <= nh:  # the analysis frame from the scaled picture
                small = to_rgb(scaled, rotation, aw, ah, reformatter=self._to_small)
            else:
                small = self._rgb(frame, rotation, aw, ah, self._to_small)
            return small, out
        full = self._rgb(frame, rotation, nw, nh, self._to_out)  # the whole picture at output scale
        out = full if (nh, nw) == (th, tw) else np.ascontiguousarray(full[y0 : y0 + th, x0 : x0 + tw])
        if (aw, ah) == (nw, nh):
            small = full
        elif aw <= nw and ah <= nh:  # analysis frames from the scaled picture: one OpenCV pass per frame
            small = cv2.resize(full, (aw, ah), interpolation=cv2.INTER_AREA)
        else:
            small = self._rgb(frame, rotation, aw, ah, self._to_small)
        return small, out

    def clip(self, frames: list[np.ndarray]):
        """A clip of output frames: a :class:`~t2v.video.Yuv420Clip` (YUV sources) or an RGB array."""
        if self.yuv:
            _, _, _, _, _, _, th, tw = self.geometry["size"]
            return Yuv420Clip(frames, th, tw, self.colorspace)
        return np.stack(frames)


def make_converter(cfg: CurateConfig, sample_aspect: Fraction | float = 1, bars: tuple[float, ...] = (0, 0, 0, 0)) -> FrameConverter:
    return FrameConverter(cfg, sample_aspect, bars)


class SceneStream:
    """PySceneDetect fed one analysis frame at a time; :meth:`push` returns the cuts it reports.

    ContentDetector reports a cut where a frame's content change passes its threshold, and its flash
    filter merges a run of such frames into one event: inside a shot that changes a lot on every frame
    (a chaotic or very fast scene, each frame above the threshold), a real cut is merged away. So a frame
    whose change also *stands out* -- at least the threshold and ``STANDOUT_RATIO`` times the median
    change of the three frames before it or of the three after it (a cut out of a chaotic shot into a calm
    one stands out only from the calm side) -- is reported as well (``STANDOUT_AFTER`` frames later, once
    the frames after it are seen), unless a reported cut lies within ``min_scene_len`` of it. Every
    candidate is then checked as any cut is (:func:`components.curate.filters.not_a_cut`: a pan, a flash,
    the same shot on both sides are dropped).

    Gradual transitions (a dissolve, a cross-fade: :class:`components.curate.transitions.TransitionFinder`)
    are no cut ContentDetector sees; :meth:`take_transitions` gives those found, ``(first, end)`` spans of
    mixed frames, each found at most ``transition_lag`` frames after its first frame. Cuts inside a
    transition are not cuts (:func:`merge_transitions`); its two ends are, taken without the cut check."""

    STANDOUT_RATIO = 2.0
    STANDOUT_AFTER = 3

    def __init__(self, cfg: CurateConfig, fps: float):
        from scenedetect import AdaptiveDetector, ContentDetector

        self.standout = cfg.scene_detector != "adaptive"  # the adaptive detector compares with neighbours itself
        if cfg.scene_detector == "adaptive":
            self.detector = AdaptiveDetector(adaptive_threshold=cfg.scene_threshold, min_scene_len=cfg.scene_min_len)
            self.delay = cfg.scene_min_len + 4  # its window looks ahead two frames, and it merges short scenes
        else:
            self.detector = ContentDetector(threshold=cfg.scene_threshold, min_scene_len=cfg.scene_min_len)
            self.delay = max(cfg.scene_min_len + 2, self.STANDOUT_AFTER + 1)  # the flash filter may be late
        self.threshold, self.min_len = float(cfg.scene_threshold), int(cfg.scene_min_len)
        self.rate = float(fps) if fps and fps > 0 else 25.0
        self.count = 0
        self.scores: dict[int, float] = {}
        self.reported: list[int] = []
        self.pending_standouts: list[int] = []
        longest = round(cfg.scene_transition_max_seconds * self.rate)
        self.transitions = TransitionFinder(longest + 4) if longest >= 3 else None
        self.transition_lag = 2 * self.transitions.max_frames + 2 if self.transitions else 0
        self.found_transitions: list[tuple[int, int]] = []

    def take_transitions(self) -> list[tuple[int, int]]:
        found, self.found_transitions = self.found_transitions, []
        return found

    def _stands_out(self, x: float, before: list[float], after: list[float]) -> bool:
        if x < self.threshold or not before or not after:
            return False
        return x >= self.STANDOUT_RATIO * min(float(np.median(before)), float(np.median(after)))

    def _consider(self, i: int) -> None:
        """Queue frame ``i`` if its change stands out from the (up to) three frames on each side."""
        k = self.STANDOUT_AFTER
        if i >= 1 and i in self.scores:
            before = [self.scores[j] for j in range(max(1, i - k), i) if j in self.scores]
            after = [self.scores[j] for j in range(i + 1, i + k + 1) if j in self.scores]
            if self._stands_out(self.scores[i], before, after):
                self.pending_standouts.append(i)

    def _flush(self, keep_until: float) -> list[int]:
        """The queued stand-outs up to ``keep_until`` with no reported cut near them (the detector may
        report one up to ``delay`` frames late)."""
        found = []
        while self.pending_standouts and self.pending_standouts[0] <= keep_until:
            c = self.pending_standouts.pop(0)
            if all(abs(c - r) >= self.min_len for r in self.reported):
                found.append(c)
        return found

    def _note(self, cuts: list[int]) -> list[int]:
        self.reported.extend(cuts)
        del self.reported[:-8]
        return cuts

    def push(self, small: np.ndarray) -> list[int]:
        from scenedetect import FrameTimecode

        if self.transitions is not None:
            self.found_transitions.extend(self.transitions.push(small))
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)  # (the same bytes as a reversed copy, a tenth of its time)
        found = [int(tc.frame_num) for tc in self.detector.process_frame(FrameTimecode(self.count, fps=self.rate), bgr)]
        if self.standout:
            score = getattr(self.detector, "_frame_score", None)
            if score is not None:
                self.scores[self.count] = float(score)
                self.scores.pop(self.count - 16, None)
            self._consider(self.count - self.STANDOUT_AFTER)  # its three followers are in
            found = self._note(found) + self._flush(self.count - self.delay)
        self.count += 1
        return sorted(set(found))

    def finish(self) -> list[int]:
        from scenedetect import FrameTimecode

        if not self.count:
            return []
        if self.transitions is not None:
            self.found_transitions.extend(self.transitions.finish())
        late = [int(tc.frame_num) for tc in self.detector.post_process(FrameTimecode(self.count - 1, fps=self.rate))]
        if not self.standout:
            return late
        self._note(late)
        for i in range(max(1, self.count - self.STANDOUT_AFTER), self.count):  # the last frames: fewer followers
            self._consider(i)
        found = late + self._flush(float("inf"))
        return sorted(set(found))


def merge_transitions(cuts: list[int], spans: list[tuple[int, int]], min_len: int) -> list[int]:
    """``cuts`` less those within ``min_len`` of a transition span (a detector's cut in the middle of a
    dissolve), plus each span's two ends: the first mixed frame and the frame after the last."""
    kept = [c for c in cuts if not any(s - min_len < c < e + min_len for s, e in spans)]
    return sorted(set(kept) | {x for span in spans for x in span})


ClipSink = Callable[[int, int, int, np.ndarray, np.ndarray | None, bool], None]
TransitionSink = Callable[[int, int, int], None]

#: Seconds between progress lines within one video (an hour of 1080p takes many minutes on a core).
PROGRESS_EVERY_S = 30.0


def stream_video(
    reader: VideoReader,
    cfg: CurateConfig,
    fps_out: int,
    on_clip: ClipSink,
    timers: Timers,
    bars: tuple[float, ...] = (0, 0, 0, 0),
    check: Callable[[int], None] | None = None,
    keep_truncated: Callable[[VideoDecodeError], bool] | None = None,
    on_transition: TransitionSink | None = None,
) -> tuple[int, list[int]]:
    """Decode ``reader`` on a ``fps_out`` timeline and call ``on_clip(scene, start, end, small, out,
    is_clip)`` for every clip (and every too-short remainder, with ``out`` None and ``is_clip`` False) as
    soon as it is final. Returns (number of frames, cuts). Raises VideoDecodeError from the reader
    (possibly after some clips were given: the caller discards them). ``bars`` (shares of the shown
    picture, :func:`filters.black_bars`) are cropped off before the output crop. ``check(index)`` is
    called with each frame's index as it is decoded, before it is used: it may raise VideoDecodeError
    to stop the video there (the stage's limits: its length, its layout). A truncated video (the
    reader's error with ``truncated``: decoding stopped early or ended short) ends where its pictures
    do, as if the file ended there, if ``keep_truncated(error)`` says so; else the error is raised.
    The frames of a gradual transition (a dissolve between two shots) are a scene of their own that gives
    no clip: ``on_transition(scene, first, end)`` is called for it instead."""
    scenes = SceneStream(cfg, fps_out)
    trim, cmin, cmax = cfg.scene_trim_frames, cfg.clip_min_frames, cfg.clip_max_frames
    buf_small: list[np.ndarray] = []
    buf_out: list[np.ndarray] = []
    state = {"b0": 0, "scene": 0, "scene_start": 0, "next": trim, "early": -1}
    cuts: list[int] = []

    def take(s: int, e: int) -> tuple[np.ndarray, Any]:
        b0 = state["b0"]
        return np.stack(buf_small[s - b0 : e - b0]), converter.clip(buf_out[s - b0 : e - b0])

    def release(upto: int) -> None:
        drop = upto - state["b0"]
        if drop > 0:
            del buf_small[:drop], buf_out[:drop]
            state["b0"] = upto

    def finish_scene(end: int) -> None:
        stop = end - trim
        s = state["next"]
        if (state["scene_start"], end) in transitions:  # mixed frames: no clip
            if on_transition is not None:
                on_transition(state["scene"], state["scene_start"], end)
            s = stop
        while stop - s >= cmin:
            n = min(cmax, stop - s)
            small, out = take(s, s + n)
            on_clip(state["scene"], s, s + n, small, out, True)
            s += n
        if stop > s:
            on_clip(state["scene"], s, stop, None, None, False)
        state.update(scene=state["scene"] + 1, scene_start=end, next=end + trim, early=-1)
        release(min(end + trim, end))

    converter = make_converter(cfg, reader.info.sample_aspect, bars)
    frames = reader.frames(fps=fps_out, convert=converter)
    window = filters.CUT_CONFIRM_WINDOW
    # a cut is decided once the frames after it are seen, and once any transition around it is found
    lag = scenes.transition_lag
    delay = scenes.delay + window + 1 + lag
    transitions: set[tuple[int, int]] = set()
    keep_history = delay + 2 * window + 4
    history: dict[int, np.ndarray] = {}  # the latest analysis frames, for confirming cuts
    pending: list[int] = []
    # cuts no confirmation is asked of: where the picture's aspect ratio changed, and where pictures
    # predicted from damage begin or end (t2v.video.VideoReader.damage_edges)
    forced: set[int] = set()

    def decide(upto: int, last: int) -> None:
        while pending and pending[0] + window <= upto:
            c = pending.pop(0)
            around = filters.cut_frames(c, history.__getitem__, last + 1)
            if c not in forced and cfg.scene_confirm_min_diff > 0 and filters.not_a_cut(around, cfg.scene_confirm_min_diff):
                continue  # a flash or a fade, not a cut
            if state["early"] >= 0 and c < state["early"] + trim:  # inside a clip already given
                log.warning("%s: late cut at frame %d ignored", reader.name, c)
                continue
            cuts.append(c)
            finish_scene(c)

    def queue_transition(first: int, end: int) -> None:
        """A transition's two ends become cuts (taken without the cut check), and the detector's cuts
        near or inside it are dropped (:func:`merge_transitions`)."""
        kept = merge_transitions([c for c in pending if c not in forced], [(first, end)], cfg.scene_min_len)
        pending[:] = sorted({c for c in pending if c in forced} | {c for c in kept if c > state["scene_start"]})
        forced.update(c for c in (first, end) if c in pending)
        transitions.add((max(first, state["scene_start"]), end))

    def queue_detected(c: int, last: int) -> None:
        """Queue a cut the detector reported, if it is new, inside frames 1..``last`` of this scene, and
        not a re-report of a cut a change of aspect ratio or a gap of damage already made."""
        new = not pending or c > pending[-1]
        if 0 < c <= last and new and c > state["scene_start"] and all(abs(c - r) >= cfg.scene_min_len for r in forced):
            pending.append(c)

    # frames on the timeline, from the declared duration (an estimate: 0 when the header has none)
    expected = round(float(reader.info.duration_s) * fps_out)
    progress = Progress(f"curate {reader.name}: frames", expected, every_s=PROGRESS_EVERY_S, logger=log)
    clips_given = [0]

    def counted(sink: ClipSink) -> ClipSink:
        def call(scene, s, e, small, out, ok):
            clips_given[0] += bool(ok)
            sink(scene, s, e, small, out, ok)
        return call

    on_clip = counted(on_clip)
    index = -1
    while True:
        if expected and index > 0:
            progress.update(min(index, expected - 1), clips=clips_given[0])
        reframes = converter.reframes
        with timers.time("decode"):
            try:
                item = next(frames, None)
            except VideoDecodeError as exc:
                if not (exc.truncated and keep_truncated is not None and keep_truncated(exc)):
                    raise
                log.warning("%s: curated up to where it ends: %s", reader.name, exc)
                item = None
        if item is None:
            break
        index += 1
        if check is not None:
            check(index)
        small, out = item
        reframed = converter.reframes != reframes
        if (reframed or index in reader.damage_edges) and index > state["scene_start"] and index not in pending:
            forced.add(index)
            bisect.insort(pending, index)
        buf_small.append(small)
        buf_out.append(out)
        history[index] = small
        history.pop(index - keep_history, None)
        with timers.time("scenes"):
            found = scenes.push(small)
        for c in sorted(set(found)):
            queue_detected(c, index)
        for first, end in scenes.take_transitions():
            queue_transition(first, end)
        decide(index - lag, index)
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
        queue_detected(c, num - 1)
    for first, end in scenes.take_transitions():
        queue_transition(first, end)
    decide(num + window, num - 1)
    if num:
        finish_scene(num)
    return num, cuts


def encode_clip(out: np.ndarray, fps: int, cfg: CurateConfig) -> bytes:
    return encode_mp4_bytes(out, fps, crf=cfg.output_crf, preset=cfg.output_preset, threads=1)


def spool(path: Path, data: bytes) -> None:
    """Write a kept clip's mp4 whole, then rename it into place: a reader (the tar writer, a resumed run)
    sees the finished file or none, even where a worker of a killed run is still finishing its video."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


__all__ = ["Timers", "SceneStream", "FrameConverter", "stream_video", "make_converter", "encode_clip", "spool", "filters"]
