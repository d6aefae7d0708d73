"""Video files: H.264 mp4 writing and reading with PyAV, GIF and PNG-strip previews.

Frames are numpy ``uint8 [T, H, W, 3]`` RGB arrays. Writing is atomic (a temporary file renamed into place).
Reading never lets a raw library traceback escape: anything that cannot be decoded raises
:class:`VideoDecodeError` whose message is one line naming the file and the reason.

libx264 with ``yuv420p`` needs even width and height: odd-sized frames are padded by repeating their last
row/column (a warning is logged), so a written file may be one pixel larger than its input.

Reproducible bytes: the RGB <-> YUV conversions (swscale) run with ``ACCURATE_RND | BITEXACT`` (see
:func:`_sws_flags`), because swscale's default SIMD kernels round differently from its C code, so without
these flags decoded pixels and encoded bitstreams depend on the CPU's instruction set (AVX2 or not, ...). With ``threads=1`` (the default)
x264 runs with one frame thread, no sliced threads and one lookahead thread, and the mp4 is muxed with
``+bitexact`` (no creation time, no libavformat version string): the same frames give the same file bytes
on every machine with the same libx264 build.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from t2v.alpha import (
    DEFAULT_BACKGROUND,
    composited_rgb,
    decoder_for,
    format_has_alpha,
    has_alpha,
    opaque_throughout,
    webm_alpha,
)
from t2v.errors import UserError
from t2v.hdr import _BT2020_PRIMARIES, hdr_peak_nits, hdr_transfer, tonemap_hdr
from t2v.webp import SOURCE_FORMAT_TAG, head_of, is_animated_webp
from t2v.webp import AnimationError as WebpAnimationError
from t2v.webp import as_matroska as webp_as_matroska

log = logging.getLogger(__name__)

__all__ = [
    "VideoDecodeError",
    "write_mp4",
    "encode_mp4_bytes",
    "read_video",
    "probe_video",
    "VideoInfo",
    "VideoReader",
    "choose_video_stream",
    "display_size",
    "sample_aspect",
    "write_gif",
    "frames_strip_png",
    "Yuv420Clip",
    "to_yuv420",
    "hdr_transfer",
    "tonemap_hdr",
    "hdr_peak_nits",
    "sample_pictures",
    "frame_rates",
    "frame_layout",
    "VIDEO_SUFFIXES",
]


#: File name endings of video (and animated picture) files, for finding videos in a folder or under a
#: prefix that has no table (lower case; a name is compared lower-cased).
VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".flv", ".f4v", ".ts", ".mts", ".m2ts", ".m2t",
    ".mpg", ".mpeg", ".m2v", ".vob", ".wmv", ".asf", ".3gp", ".3g2", ".mxf", ".ogv", ".dv", ".y4m", ".nut",
    ".gif", ".apng", ".webp", ".h264", ".264", ".h265", ".265", ".hevc", ".ivf", ".rm", ".rmvb",
)


class VideoDecodeError(UserError):
    """A video could not be opened or decoded; ``str(err)`` is a one-line reason.

    ``kind`` sorts the reason for a manifest: ``missing`` (no such file), ``corrupt`` (empty, garbage,
    truncated, undecodable), ``not_video`` (an image, or audio only), ``unsupported_codec``; the curate
    stage adds ``too_large`` (pictures over its ``max_source_pixels``), ``too_small`` (under its
    ``min_source_side``), ``too_long`` (over its ``max_video_seconds``), ``spherical`` and ``stereo_3d``
    (:func:`frame_layout`)."""

    def __init__(self, message: str, kind: str = "corrupt", truncated: bool = False):
        super().__init__(message)
        self.kind = kind
        # raised by VideoReader.frames once decoding stopped early or ended short: every picture before it
        # decoded and was given (a download cut short), so the caller may keep what it has
        self.truncated = truncated


def _check_frames(frames: Any) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must have shape [T, H, W, 3], got {tuple(arr.shape)}")
    if arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ValueError(f"frames must be non-empty, got shape {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def _pad_even(arr: np.ndarray) -> np.ndarray:
    t, h, w, _ = arr.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        log.warning("padding %dx%d frames to even size %dx%d for libx264", h, w, h + ph, w + pw)
        arr = np.pad(arr, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return arr


@functools.cache
def _sws_flags(to_rgb: bool) -> int:
    """swscale flags for the colour conversions: the C code's accurate rounding, bit-exact whichever SIMD
    kernels the CPU has, and the most faithful variant measured on the world's clips (mean absolute error
    of an encode/decode round trip at crf 18: 1.19 levels, against 1.37 with swscale's defaults, which
    depend on the CPU, and 2.53 with bit-exact bilinear alone). RGB -> yuv420p averages each 2x2 block's
    chroma (AREA); yuv420p -> RGB interpolates the chroma to full resolution before the colour matrix
    (FULL_CHR_H_INT)."""
    from av.video.reformatter import Interpolation as I

    exact = I.ACCURATE_RND | I.BITEXACT
    return int(I.BILINEAR | I.FULL_CHR_H_INT | exact) if to_rgb else int(I.AREA | exact)


@functools.cache
def _sws_scale_flags(to_rgb: bool) -> int:
    """swscale flags when the size changes too: area averaging (and, to RGB, full-resolution chroma),
    bit-exact as :func:`_sws_flags`."""
    from av.video.reformatter import Interpolation as I

    exact = I.AREA | I.ACCURATE_RND | I.BITEXACT
    return int(exact | I.FULL_CHR_H_INT) if to_rgb else int(exact)


# libx264 gave other bytes from one call to the next when the picture is narrow and B-frames meet its
# macroblock-tree rate control: measured with this libx264 build on one machine, clips 32-112 pixels wide
# (any height, 12 of 32 clip and size pairs) once the heap held other data, and 128-992 wide the same
# bytes. Without B-frames every one did (without mbtree too, but that doubled the files of such clips and
# changed what they keep of the picture, where no B-frames costs ~2 % in size). Below this width, no
# B-frames. (On an AVX-512 machine wider pictures did too, B-frames or not: see cpu-independent below.)
NARROW_WIDTH = 256


def deterministic_x264_params(width: int, threads: int = 1) -> str:
    """The ``x264-params`` that make libx264's output a function of its input alone (with ``threads``
    other than 1, only the B-frame rule: frame threads depend on timing anyway). One frame thread, no sliced threads, one
    lookahead thread; x264's CPU-independent arithmetic (its macroblock-tree kernels for the CPU at hand
    gave other bytes from call to call at most widths that are not a multiple of 64 on an AVX-512
    machine, 992 and 320 wide among them; with it every one encodes to one file, at the same size and
    speed); and no B-frames below ``NARROW_WIDTH``."""
    if threads != 1:
        return "bframes=0" if width < NARROW_WIDTH else ""
    params = ["threads=1:sliced-threads=0:lookahead-threads=1", "cpu-independent=1"]
    if width < NARROW_WIDTH:
        params.append("bframes=0")
    return ":".join(params)


_BT601_MATRIX = 6  # AVColorSpace SMPTE170M: the YUV matrix swscale uses when none is given


def _encode(target: Any, frames: Any, fps: int, crf: int, preset: str, threads: int) -> None:
    import av

    yuv = frames if isinstance(frames, Yuv420Clip) else None
    arr = None if yuv is not None else _pad_even(_check_frames(frames))
    if yuv is not None and not len(yuv):
        raise ValueError("frames must be non-empty, got an empty clip")
    if not (isinstance(fps, (int, np.integer)) and 1 <= int(fps) <= 1000):
        raise ValueError(f"fps must be an integer in [1, 1000], got {fps!r}")
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf!r}")
    threads = int(threads)
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = let x264 choose), got {threads}")
    _, h, w, _ = arr.shape if arr is not None else yuv.shape
    sws = _sws_flags(to_rgb=False)
    reformatter = av.video.reformatter.VideoReformatter()  # one swscale context for all the frames
    # +bitexact: no libavformat version string in the file (and, as without it, a zero creation time).
    with av.open(target, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(int(fps), 1))
        stream.width = w
        stream.height = h
        stream.pix_fmt = "yuv420p"
        # PyAV's default is thread_count=0 (one per CPU); set the count before the codec opens.
        stream.codec_context.thread_count = threads
        stream.codec_context.thread_type = "SLICE"
        options = {"crf": str(int(crf)), "preset": preset, "threads": str(threads)}
        params = deterministic_x264_params(w, threads)
        if params:
            options["x264-params"] = params
        stream.options = options
        if yuv is not None and yuv.colorspace not in (None, 2):  # keep the source's matrix, tagged
            stream.codec_context.colorspace = yuv.colorspace
            stream.codec_context.color_range = 1  # MPEG (limited): what yuv420p from swscale is
        elif yuv is None:
            # RGB frames are converted with swscale's default matrix, BT.601: tagged so, or a player would
            # read an untagged HD file as BT.709 and shift its colours (swscale, reading it back, would not)
            stream.codec_context.colorspace = _BT601_MATRIX
            stream.codec_context.color_range = 1
        pictures = yuv.av_frames() if yuv is not None else (
            # Convert to yuv420p here, bit-exactly, rather than in PyAV's encoder (default swscale flags).
            reformatter.reformat(av.VideoFrame.from_ndarray(frame, format="rgb24"), format="yuv420p", interpolation=sws)
            for frame in arr
        )
        for picture in pictures:
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: int,
    crf: int = 18,
    preset: str = "medium",
    threads: int = 1,
) -> None:
    """Write ``frames`` (uint8 [T, H, W, 3]) as an H.264/yuv420p mp4, atomically.

    ``crf`` is x264's constant rate factor (0 = lossless luma, 18 ~ visually lossless, 23 = x264 default).
    ``threads=1`` (the default) makes the file bytes identical on every machine (with the same libx264
    build); 0 lets x264 choose, and its slice split then depends on the number of CPUs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _encode(tmp, frames, fps, crf, preset, threads)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode_mp4_bytes(
    frames: np.ndarray, fps: int, crf: int = 18, preset: str = "medium", threads: int = 1
) -> bytes:
    """Encode ``frames`` to H.264 mp4 and return the file's bytes (reproducible as :func:`write_mp4`'s)."""
    buf = io.BytesIO()
    _encode(buf, frames, fps, crf, preset, threads)
    return buf.getvalue()


def _describe(src: Any) -> str:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    return str(src)


def _one_line(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None)  # av's errors carry FFmpeg's message here, without errno/path
    text = " ".join(str(reason or exc).split()) or type(exc).__name__
    return text[:300]


def _open(src: Any):
    import av

    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise VideoDecodeError(f"{_describe(src)}: empty data")
        target: Any = io.BytesIO(bytes(src))
    else:
        p = Path(src)
        if not p.exists():
            raise VideoDecodeError(f"{p}: no such file", kind="missing")
        if p.is_dir():
            raise VideoDecodeError(f"{p}: is a directory", kind="not_video")
        if p.stat().st_size == 0:
            raise VideoDecodeError(f"{p}: empty file")
        target = str(p)
    if is_animated_webp(head_of(src)):  # FFmpeg reads only its first picture: Pillow decodes it (t2v.webp)
        try:
            target = webp_as_matroska(src)
        except WebpAnimationError as exc:
            raise VideoDecodeError(f"{_describe(src)}: animated WebP damaged: {exc}") from None
        except Exception as exc:  # Pillow cannot open it at all
            raise VideoDecodeError(f"{_describe(src)}: cannot open animated WebP ({_one_line(exc)})") from None
    try:
        container = av.open(target, mode="r")
    except Exception as exc:  # av.error.FFmpegError, OSError, ...
        raise VideoDecodeError(f"{_describe(src)}: cannot open ({_one_line(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{_describe(src)}: no video stream", kind="not_video")
    return container


#: Dispositions of a video stream that holds a picture, not the video: cover art (an mp4's ``covr``, a
#: Matroska attachment), a thumbnail track, a still image.
_PICTURE_DISPOSITIONS = ("attached_pic", "timed_thumbnails", "still_image")


def _is_picture_stream(stream) -> bool:
    import av

    disp = int(getattr(stream, "disposition", 0) or 0)
    flags = av.stream.Disposition
    return any(disp & int(getattr(flags, name)) for name in _PICTURE_DISPOSITIONS if hasattr(flags, name))


def choose_video_stream(container, name: str = ""):
    """The stream a player shows: among the video streams that are not cover art, a thumbnail track or a
    still image, the largest picture (as FFmpeg's command line picks), then the one marked default, then
    the first. A file whose only video streams are pictures (an audio file with cover art) has none:
    ``not_video``."""
    import av

    default = int(av.stream.Disposition.default)
    moving = [s for s in container.streams.video if not _is_picture_stream(s)]
    if not moving:
        raise VideoDecodeError(f"{name}: no video stream, only a cover picture or still image", kind="not_video")

    def size(s) -> int:
        ctx = s.codec_context
        return int(ctx.width or 0) * int(ctx.height or 0) if ctx is not None else 0

    return max(moving, key=lambda s: (size(s), bool(int(s.disposition or 0) & default), -s.index))


def sample_aspect(stream) -> Fraction:
    """The stream's sample (pixel) aspect ratio, width over height of one coded pixel: the container's
    value where it has one (an mp4's ``pasp``), else the codec's (H.264's VUI); 1 when unknown or absurd
    (FFmpeg's own choice of the two)."""
    for value in (getattr(stream, "sample_aspect_ratio", None), getattr(stream.codec_context, "sample_aspect_ratio", None)):
        try:
            sar = Fraction(value) if value else Fraction(0)
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        if Fraction(1, 8) <= sar <= 8:
            return sar
    return Fraction(1)


def display_size(width: int, height: int, rotation: int = 0, sar: Fraction | float = 1) -> tuple[int, int]:
    """The size a ``width`` x ``height`` coded picture is shown at: its width scaled by the sample aspect
    ratio ``sar`` (non-square pixels: 720x576 PAL at 16:9 is 1024x576, 1440x1080 HDV is 1920x1080), then
    rotated for display."""
    w = max(1, round(width * Fraction(sar))) if sar and Fraction(sar) != 1 else width
    return rotated_size(w, height, rotation)


def _tagged_seconds(tag: str | None) -> float:
    """Seconds of a ``HH:MM:SS.fraction`` duration tag (what Matroska muxers write per track); 0 if none."""
    try:
        hours, minutes, seconds = str(tag).split(":")
        return max(0.0, int(hours) * 3600 + int(minutes) * 60 + float(seconds))
    except (ValueError, TypeError):
        return 0.0


#: No video stream has a higher frame rate than this; a rate above it is a container's misreading.
MAX_PLAUSIBLE_FPS = 1000.0


def frame_rates(stream) -> tuple[float, float]:
    """``(average, base)`` frame rates of a video stream, 0 where unknown or implausible. The base rate is
    the one the timestamps step at (FFmpeg's ``r_frame_rate``, guessed from the first pictures, else its
    guess). An average above :data:`MAX_PLAUSIBLE_FPS` or more than 4 times the base rate (raw DV gives
    60000 for 25 fps, the rate of its time base) is not one and reads as unknown; a variable-rate
    stream's average may exceed a base rate guessed from a slower start, so a smaller excess is kept."""

    def plausible(rate) -> float:
        try:
            value = float(rate) if rate else 0.0
        except (TypeError, ValueError, ZeroDivisionError):
            return 0.0
        return value if 0.0 < value <= MAX_PLAUSIBLE_FPS else 0.0

    base = plausible(stream.base_rate) or plausible(stream.guessed_rate)
    average = plausible(stream.average_rate)
    if base and average > 4 * base:
        average = 0.0
    return average, base


def _stream_fps(stream) -> float:
    average, base = frame_rates(stream)
    return average or base


def _decode(container, stream, decoder=None):
    """``stream``'s decoded frames, through ``decoder`` where it is not the stream's own
    (:func:`t2v.alpha.decoder_for`: libvpx for a WebM track with alpha)."""
    if decoder is None or decoder is stream.codec_context:
        yield from container.decode(stream)
        return
    for packet in container.demux(stream):
        yield from decoder.decode(packet)


def read_video(src: str | os.PathLike | bytes, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video file (path) or in-memory file (bytes) to (uint8 [T, H, W, 3] RGB frames, fps).

    The YUV -> RGB conversion is bit-exact (see the module docstring): the same file decodes to the same
    pixels on every machine. Raises :class:`VideoDecodeError` for missing, empty, truncated or garbage
    input, or a video with no decodable frame.
    """
    import av

    container = _open(src)
    frames: list[np.ndarray] = []
    reformatter = av.video.reformatter.VideoReformatter()  # one swscale context for all the frames
    try:
        stream = choose_video_stream(container, _describe(src))
        fps = _stream_fps(stream)
        try:
            for frame in _decode(container, stream, decoder_for(stream)):
                frames.append(to_rgb(frame, reformatter=reformatter))
                if max_frames is not None and len(frames) >= max_frames:
                    break
        except Exception as exc:
            if not frames:
                raise VideoDecodeError(f"{_describe(src)}: cannot decode ({_one_line(exc)})") from None
            # Frames decoded before a damaged tail are kept (a partially damaged stream is still usable).
            log.warning(
                "%s: decoding stopped after %d frames: %s", _describe(src), len(frames), _one_line(exc)
            )
    finally:
        container.close()
    if not frames:
        raise VideoDecodeError(f"{_describe(src)}: no decodable video frames")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise VideoDecodeError(f"{_describe(src)}: frame size changes mid-stream {sorted(shapes)}")
    return np.stack(frames), fps


# --------------------------------------------------------------------------------------- streaming decode
# Demuxers of still images (an image renamed as a video opens through one of them); animated GIF, APNG and
# WebP are read as videos.
_STILL_IMAGE_FORMATS = ("image2",)
_AVFMT_TS_DISCONT = 0x0200  # AVInputFormat.flags: the format allows timestamp discontinuities
_DAMAGED = "damaged"  # frame.opaque of a picture predicted from damage (see VideoReader._decode_noting_the_file_end)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the chosen video stream (coded size; the display rotation is per
    decoded frame, :func:`frame_rotation`)."""

    width: int
    height: int
    fps: float  # average frame rate (0 when unknown)
    duration_s: float  # declared duration (0 when unknown)
    declared_frames: int  # frames the header declares (0 when unknown)
    codec: str
    pix_fmt: str
    bit_depth: int
    rotation: int  # always 0 here (kept for callers that record it; see frame_rotation)
    format: str
    sample_aspect: Fraction  # width / height of one coded pixel (1: square pixels); see display_size
    video_streams: int
    audio_streams: int
    # Whose duration ``duration_s`` is: "stream" (the video stream's own), "container" (the file's, which
    # spans every stream: an audio track may run on after the picture ends) or "" (unknown).
    duration_from: str = "stream"
    # The stream's transfer characteristic: "pq" or "hlg" (HDR, tone-mapped to SDR when converted to RGB,
    # see tonemap_hdr) or "sdr" (BT.709/BT.601 gamma, or untagged).
    transfer: str = "sdr"
    # What the file says of itself (container tags: a phone's, an editor's, yt-dlp's --embed-metadata):
    # its title and its description or comment; "" when it has none.
    title: str = ""
    description: str = ""
    # Whether the pictures can carry transparency (an alpha channel or a palette; a WebM track with
    # alpha): converted to RGB they are shown over a background (t2v.alpha).
    alpha: bool = False


def _tag(metadata, *keys: str, limit: int = 2000) -> str:
    """The first of ``keys`` the container's tags hold (any case: Matroska writes TITLE), stripped and cut
    to ``limit`` characters."""
    lowered = {str(k).lower(): v for k, v in dict(metadata or {}).items()}
    for key in keys:
        value = " ".join(str(lowered.get(key) or "").split())
        if value:
            return value[:limit]
    return ""


def _is_image_container(container, stream) -> bool:
    name = str(container.format.name or "")
    return name in _STILL_IMAGE_FORMATS or name.endswith("_pipe")


class _PresentationClock:
    """Presentation timestamps chosen as FFmpeg's ``best_effort_timestamp`` is (which PyAV does not
    expose): the frames' pts, unless the pts have gone backwards more often than the decode timestamps
    have. Containers without presentation times (AVI) give B-frame streams pts in decode order, out of
    order by the time the pictures come out; their dts are in order. The choice is made over the first
    ``LOOKAHEAD`` frames before any is given out, so a stream keeps one clock from its first frame."""

    LOOKAHEAD = 16

    def __init__(self):
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts = self.last_dts = None
        self.stamped_last, self.stamped_step = None, 1

    def observe(self, frame) -> None:
        pts, dts = frame.pts, frame.dts
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts

    def stamp(self, frame):
        """The frame with its ``pts`` set to the chosen presentation timestamp (on the dts clock, the
        frames flushed from the decoder at the end, which have none, follow on at the last step)."""
        pts, dts = frame.pts, frame.dts
        on_dts = self.faulty_pts > self.faulty_dts or pts is None
        if on_dts and dts is None and self.stamped_last is not None:
            dts = self.stamped_last + self.stamped_step
        if on_dts and dts is not None:
            frame.pts = dts
        if frame.pts is not None:
            if self.stamped_last is not None and frame.pts > self.stamped_last:
                self.stamped_step = frame.pts - self.stamped_last
            self.stamped_last = frame.pts
        return frame

    def stamped(self, frames):
        """``frames`` stamped, in order; the first ``LOOKAHEAD`` are held until the choice is made (and
        given out if decoding fails before)."""
        held: list | None = []
        try:
            for frame in frames:
                self.observe(frame)
                if held is None:
                    yield self.stamp(frame)
                    continue
                held.append(frame)
                if len(held) >= self.LOOKAHEAD:
                    batch, held = held, None
                    yield from (self.stamp(f) for f in batch)
        except Exception:
            yield from (self.stamp(f) for f in held or [])
            raise
        yield from (self.stamp(f) for f in held or [])


class _Deinterlacer:
    """FFmpeg's ``yadif`` over a stream of decoded frames (one output picture per input frame; only frames
    flagged interlaced are changed). It holds one frame back, as it needs the next field to interpolate."""

    def __init__(self, frame):
        import av

        self._av = av
        self._size = (frame.width, frame.height, frame.format.name)
        graph = av.filter.Graph()
        source = graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format.name, time_base=frame.time_base
        )
        yadif = graph.add("yadif", "mode=send_frame:parity=auto:deint=interlaced")
        sink = graph.add("buffersink")
        source.link_to(yadif)
        yadif.link_to(sink)
        graph.configure()
        self._graph = graph

    def fits(self, frame) -> bool:
        return (frame.width, frame.height, frame.format.name) == self._size

    def _drain(self):
        while True:
            try:
                yield self._graph.pull()
            except (self._av.BlockingIOError, self._av.error.EOFError):
                return

    def push(self, frame):
        self._graph.push(frame)
        yield from self._drain()

    def flush(self):
        self._graph.push(None)
        yield from self._drain()


class VideoReader:
    """Streaming decode of one video: frames one at a time, never the whole video in memory.

    Picks the video stream a player shows (:func:`choose_video_stream`: not cover art or a thumbnail
    track; audio, subtitle and data streams are not decoded); the pictures are as coded, and
    :func:`display_size` of their size, rotation and ``info.sample_aspect`` is the shape they are shown
    at (non-square pixels, the display rotation); converts any pixel format (8-bit, 10/12-bit, 4:2:2, 4:4:4, RGB...) to RGB ``uint8``
    bit-exactly (HDR, PQ or HLG, tone-mapped to SDR BT.709: :func:`tonemap_hdr`; transparency shown over a
    background: :mod:`t2v.alpha`, with libvpx decoding a WebM track's alpha); deinterlaces interlaced streams (:meth:`_pictures`); resamples a variable-frame-rate stream onto a constant-rate timeline by presentation time
    (:meth:`frames`), so every output frame lasts 1/fps seconds and clips play at the right speed.
    Errors are :class:`VideoDecodeError` (one line naming the file, with a ``kind``). A stream that stops
    decoding early, or ends well before its declared duration or frame count, raises ``corrupt`` at the
    end of :meth:`frames` (truncated), after the frames that decoded were yielded.
    """

    def __init__(self, src: str | os.PathLike | bytes, threads: int = 1):
        self.name = _describe(src)
        # counted as the frames are decoded (see _pictures, decoded, _decode_noting_the_file_end)
        self.interlaced_frames = self.timestamp_jumps = self.damaged_packets = self.damaged_frames = 0
        # a 360-degree/VR projection and a stereoscopic 3D packing, "" for flat 2D (frame_layout), known
        # once the first picture is decoded
        self.projection = self.stereo = ""
        self._first_damage = ""  # the decoder's message for the first damaged packet
        # output frames of frames() that show damaged pictures, as [start, end) ranges, and the indices
        # where such a range starts or ends (a cut: no clip spans clean and damaged pictures)
        self.damaged_ranges: list[list[int]] = []
        self.damage_edges: set[int] = set()
        self._damaged_pts: set = set()
        self._container = _open(src)
        try:
            self._stream = choose_video_stream(self._container, self.name)
            ctx = self._stream.codec_context
            if ctx is None or getattr(ctx, "codec", None) is None:
                raise VideoDecodeError(f"{self.name}: unsupported video codec", kind="unsupported_codec")
            if _is_image_container(self._container, self._stream):
                raise VideoDecodeError(
                    f"{self.name}: an image ({self._container.format.name}, {ctx.name}), not a video",
                    kind="not_video",
                )
            # (libvpx's decoder for a WebM track with alpha, else the stream's own: t2v.alpha.decoder_for)
            self._decoder = decoder_for(self._stream)
            # Frame threads make decoding faster; H.264/HEVC decoding is bit-exact whatever the threads.
            self._decoder.thread_count = int(threads)
            if int(threads) != 1:
                self._decoder.thread_type = "AUTO"
            self.info = self._probe()
        except BaseException:
            self._container.close()
            raise

    def _probe(self) -> VideoInfo:
        c, st = self._container, self._stream
        ctx = st.codec_context
        if not ctx.width or not ctx.height:
            raise VideoDecodeError(f"{self.name}: video stream has no frame size")
        duration, duration_from = 0.0, ""
        if st.duration and st.time_base:
            duration, duration_from = float(st.duration * st.time_base), "stream"
        elif _tagged_seconds(st.metadata.get("DURATION")):  # Matroska/WebM: a per-track tag
            duration, duration_from = _tagged_seconds(st.metadata.get("DURATION")), "stream"
        elif c.duration:
            duration, duration_from = float(c.duration) / 1_000_000, "container"
        rotation = 0  # known per decoded frame (its display matrix): see frame_rotation
        fmt = ctx.format
        depth = max((getattr(comp, "bits", 8) for comp in (fmt.components if fmt else [])), default=8)
        w, h = int(ctx.width), int(ctx.height)
        return VideoInfo(
            width=w,
            height=h,
            fps=_stream_fps(st),
            duration_s=duration,
            declared_frames=int(st.frames or 0),
            codec=str(ctx.name),
            pix_fmt=str(fmt.name if fmt else ""),
            bit_depth=int(depth),
            rotation=rotation,
            format=str(c.metadata.get(SOURCE_FORMAT_TAG) or c.metadata.get(SOURCE_FORMAT_TAG.upper()) or c.format.name),
            sample_aspect=sample_aspect(st),
            video_streams=len(c.streams.video),
            audio_streams=len(c.streams.audio),
            duration_from=duration_from,
            transfer=hdr_transfer(ctx) or "sdr",
            alpha=format_has_alpha(str(fmt.name if fmt else "")) or webm_alpha(st),
            title=_tag(c.metadata, "title"),
            description=_tag(c.metadata, "description", "comment", "synopsis"),
        )

    #: Packets of the video stream :meth:`steps_at_average_rate` looks at (a few seconds).
    RATE_PROBE_PACKETS = 240

    def steps_at_average_rate(self) -> bool:
        """Whether the first :data:`RATE_PROBE_PACKETS` pictures' presentation times step evenly (98 % of
        the steps within a quarter of the typical one) at the stream's average rate (within 2 %), read from a second opening of the file (packets only, no
        decoding). A stream whose base rate (``r_frame_rate``) exceeds its average may be variable-rate
        (a phone's, a screen recording's: its fastest part needs the base rate) or timed in fields
        (MPEG-1/2 and interlace-capable codecs count two ticks a frame: 25 fps pictures on a 50 Hz clock,
        a soft-telecined film's 23.976 pictures on a 59.94 Hz one), whose pictures the average shows
        once each. False where it cannot tell (too few timestamps, a file that is not on disk)."""
        import av

        average, _ = frame_rates(self._stream)
        path = getattr(self._container, "name", "")
        if not average or not path or not os.path.isfile(path):
            return False
        times: list[Fraction] = []
        try:
            with av.open(path, mode="r") as probe:
                stream = probe.streams[self._stream.index]
                for packet in probe.demux(stream):
                    if packet.pts is not None and packet.time_base is not None:
                        times.append(Fraction(packet.pts) * Fraction(packet.time_base))
                    if len(times) >= self.RATE_PROBE_PACKETS:
                        break
        except Exception:  # noqa: BLE001  (the probe is advice: the reader's own decoding reports errors)
            return False
        steps = np.diff(np.array(sorted(set(times)), dtype=np.float64))
        if len(steps) < 15:
            return False
        typical = float(np.median(steps))
        # every step that long (a variable-rate stream's steps differ: 1/24 s here, 1/60 s there)
        uniform = float(np.mean(np.abs(steps / typical - 1.0) > 0.25)) <= 0.02
        return uniform and abs(typical * average - 1.0) < 0.02

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- decoded frames with their presentation times
    #: Packets the decoder rejects before any picture decodes, after which the stream is undecodable.
    UNDECODABLE_PACKETS = 32

    def _decode_noting_the_file_end(self):
        """The video stream's decoded frames; every stream's packets are demuxed (the demuxer reads them
        anyway) to note where the file's content ends (:attr:`file_seconds`): a video whose audio runs on
        after its last picture is complete, a file cut short ends early in every stream.

        Damage inside the stream (a packet the decoder rejects, or a frame it flags corrupt: bit errors in
        a recording, a bad sector) is skipped, as FFmpeg's command line skips it: the packet is left out
        (``self.damaged_packets``) and decoding goes on. The pictures from there to the next clean
        keyframe are predicted from the damage and may show the decoder's concealment (smears, grey
        blocks), not the video: they are marked (``frame.opaque``; ``self.damaged_frames``) and
        :meth:`frames` records where they are shown (``self.damaged_ranges``). Damage used to end
        decoding: the whole video was rejected for one bad packet."""
        import av

        index = self._stream.index
        self._packet_spans: dict[int, list] = {}  # per stream: [first pts, last pts + duration, time base]
        spans = self._packet_spans
        damaged = False  # the pictures since the last damage, until a clean keyframe
        given = 0
        for packet in self._container.demux():
            pts, where = packet.pts, packet.stream.index
            if pts is not None:
                span = spans.get(where)
                end = pts + (packet.duration or 0)
                if span is None:
                    spans[where] = [pts, end, packet.time_base]
                else:
                    if pts < span[0]:
                        span[0] = pts
                    if end > span[1]:
                        span[1] = end
            if where != index:
                continue
            try:
                frames = self._decoder.decode(packet)
            except av.error.InvalidDataError as exc:
                self.damaged_packets += 1
                self._first_damage = self._first_damage or _one_line(exc)
                if not given and self.damaged_packets >= self.UNDECODABLE_PACKETS:  # nothing decodes: not damage
                    raise VideoDecodeError(f"{self.name}: cannot decode ({self._first_damage})") from None
                if self.damaged_packets <= 5:  # (the rest are counted in the summary line)
                    log.warning("%s: a damaged packet at %.2f s skipped (%s)", self.name,
                                float(packet.pts * packet.time_base) if packet.pts is not None and packet.time_base else -1,
                                _one_line(exc))
                damaged = True
                continue
            for frame in frames:
                given += 1
                if frame.is_corrupt:
                    damaged = True
                elif damaged and frame.key_frame:
                    damaged = False
                if damaged:
                    frame.opaque = _DAMAGED
                    self.damaged_frames += 1
                yield frame

    @property
    def file_seconds(self) -> float:
        """Seconds from the earliest packet of any stream to the end of the latest (0 before decoding)."""
        spans = [
            (Fraction(a) * Fraction(tb), Fraction(b) * Fraction(tb))
            for a, b, tb in getattr(self, "_packet_spans", {}).values() if tb
        ]
        return float(max(b for _, b in spans) - min(a for a, _ in spans)) if spans else 0.0

    def _pictures(self):
        """The stream's pictures in presentation order, interlaced ones deinterlaced: once a frame flagged
        interlaced is met, every frame goes through FFmpeg's ``yadif`` (one progressive picture per frame,
        field order from the stream; frames flagged progressive pass through it unchanged). Broadcast and
        camcorder sources are often interlaced; their woven fields would read as comb artefacts to the
        sharpness and motion scores, and be re-encoded as such. ``self.interlaced_frames`` counts them."""
        self.interlaced_frames = 0
        deinterlacer = None
        try:
            for frame in _PresentationClock().stamped(self._decode_noting_the_file_end()):
                if frame.opaque is _DAMAGED:  # (the deinterlacer's pictures keep the pts, not opaque)
                    self._damaged_pts.add(frame.pts)
                if frame.interlaced_frame:
                    self.interlaced_frames += 1
                if deinterlacer is not None and not deinterlacer.fits(frame):
                    yield from deinterlacer.flush()  # the picture size changed mid-stream: a new filter
                    deinterlacer = None
                if deinterlacer is None and frame.interlaced_frame:
                    deinterlacer = _Deinterlacer(frame)
                if deinterlacer is None:
                    yield frame
                else:
                    yield from deinterlacer.push(frame)
        except Exception:  # a damaged stream: the frame held for its successor is still a good picture
            if deinterlacer is not None:
                yield from deinterlacer.flush()
            raise
        if deinterlacer is not None:
            yield from deinterlacer.flush()

    #: A forward jump of the clock longer than this, in a format whose timestamps may jump (MPEG-TS,
    #: MPEG-PS, FLV...), is a discontinuity, not a pause (FFmpeg's ``dts_delta_threshold``).
    TIMESTAMP_JUMP_S = 10

    def decoded(self):
        """``(av.VideoFrame, seconds from the first frame)`` in presentation order; raises ``corrupt`` for
        a stream that cannot be decoded at all, or whose decoding stops early or ends short.

        In a format whose timestamps may be discontinuous (``AVFMT_TS_DISCONT``: MPEG-TS and -PS, FLV; a
        recording of a broadcast or an HLS stream whose segments were concatenated) a clock that goes
        back by more than two frames, or jumps ahead by more than :data:`TIMESTAMP_JUMP_S`, starts again
        one frame after the last picture: the pictures after it follow on, as a player shows them (they
        used to be dropped as out of order, or the last picture held for the length of the jump).
        ``self.timestamp_jumps`` counts them. Elsewhere a repeated or backwards timestamp is not a new
        picture, and a long gap is a long-shown picture (a screen recording's)."""
        count, t0, last, step = 0, None, None, None
        fallback = Fraction(1, max(1, round(self.info.fps or 25)))
        may_jump = bool(int(self._container.format.flags) & _AVFMT_TS_DISCONT)
        self.timestamp_jumps = 0
        try:
            for frame in self._pictures():
                tb = frame.time_base
                if frame.pts is not None and tb is not None:
                    t = Fraction(frame.pts * tb.numerator, tb.denominator)
                else:
                    t = (last + fallback) if last is not None else Fraction(0)
                if t0 is None:
                    t0 = t
                t -= t0
                if may_jump and last is not None and (
                    t < last - 2 * (step or fallback) or t > last + self.TIMESTAMP_JUMP_S
                ):
                    log.info("%s: timestamps jump by %.2f s after %.2f s: the pictures follow on",
                             self.name, float(t - last), float(last))
                    t0 += t - (last + (step or fallback))
                    t = last + (step or fallback)
                    self.timestamp_jumps += 1
                if last is not None and t <= last:  # a repeated or backwards timestamp: not a new picture
                    continue
                if last is not None:
                    step = t - last
                last = t
                if not count:  # the stream's layout, as its first picture carries it
                    self.projection, self.stereo = frame_layout(frame)
                count += 1
                yield frame, t
        except VideoDecodeError:
            raise
        except Exception as exc:
            if not count:
                raise VideoDecodeError(f"{self.name}: cannot decode ({_one_line(exc)})") from None
            raise VideoDecodeError(
                f"{self.name}: truncated or damaged: decoding stopped after {count} frames "
                f"({float(last or 0):.2f} s) ({_one_line(exc)})", truncated=True,
            ) from None
        if not count:
            if self.damaged_packets:
                raise VideoDecodeError(f"{self.name}: cannot decode ({self._first_damage})")
            raise VideoDecodeError(f"{self.name}: no decodable video frames")
        self.decoded_frames = count
        self.decoded_seconds = float(last + (step or fallback))
        if self.damaged_packets or self.damaged_frames:
            log.warning("%s: %d damaged packets skipped, %d pictures predicted from damage", self.name,
                        self.damaged_packets, self.damaged_frames)
        short_frames = self.info.declared_frames and count + self.damaged_packets < 0.9 * self.info.declared_frames - 1

        def short(seconds: float) -> bool:
            return self.info.duration_s > 1.0 and seconds < 0.9 * self.info.duration_s - 0.1

        # Truncation is a missing end: the pictures before the first one that decodes (a recording joined
        # mid-stream starts with pictures whose references are missing) count as there.
        st = self._stream
        lead = 0.0
        if st.start_time is not None and st.time_base and t0 is not None:
            lead = max(0.0, float(t0 - Fraction(st.start_time) * Fraction(st.time_base)))
        # (after a timestamp jump, the durations the header and the packets span say nothing)
        short_time = not self.timestamp_jumps and short(self.decoded_seconds + lead) and (
            self.info.duration_from != "container" or short(self.file_seconds)
        )
        if short_frames or short_time:
            declared = f"{self.info.declared_frames} frames, " if self.info.declared_frames else ""
            raise VideoDecodeError(
                f"{self.name}: truncated: decoded {count} frames ({self.decoded_seconds:.2f} s) of "
                f"{declared}{self.info.duration_s:.2f} s declared", truncated=True,
            )

    def frames(self, fps: float | Fraction | None = None, convert=None):
        """Frames on a constant-rate timeline of ``fps`` (default: the stream's average rate, rounded):
        output frame ``k`` is the decoded picture shown at time ``(k + 1/2) / fps``
        (the one whose presentation time is the latest at or before it). Each yielded item is
        ``convert(frame, rotation)`` (default: the RGB ``uint8 [H, W, 3]`` array at its display size,
        :func:`display_size`); a picture shown for several output frames is converted once and yielded
        again."""
        rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(max(1, round(self.info.fps or 25)))
        if convert is None:
            import av

            reformatter, sar = av.video.reformatter.VideoReformatter(), self.info.sample_aspect

            def convert(frame, rotation):
                w, h = display_size(frame.width, frame.height, rotation, sar)
                return to_rgb(frame, rotation, w, h, reformatter=reformatter)

        half = Fraction(1, 2)
        k = 0
        prev = prev_out = None
        for frame, t in self.decoded():
            # output frames k with (k + 1/2) / rate < t show the pictures before this one
            shown_before = math.ceil(t * rate - half) if prev is not None else 0
            while k < shown_before:
                if prev_out is None:
                    prev_out = convert(prev, frame_rotation(prev))
                if self._damaged_pts:
                    self._note_shown(k, prev)
                yield prev_out
                k += 1
            prev, prev_out = frame, None
        if prev is None:
            return
        end = Fraction(self.decoded_seconds).limit_denominator(1_000_000)
        shown_before = math.ceil(end * rate - half)
        while k < shown_before or k == 0:
            if prev_out is None:
                prev_out = convert(prev, frame_rotation(prev))
            if self._damaged_pts:
                self._note_shown(k, prev)
            yield prev_out
            k += 1

    def _note_shown(self, k: int, frame) -> None:
        """Output frame ``k`` shows ``frame``: extend ``damaged_ranges`` and ``damage_edges``."""
        ranges = self.damaged_ranges
        in_range = bool(ranges) and ranges[-1][1] == k
        if frame.pts in self._damaged_pts:
            if in_range:
                ranges[-1][1] = k + 1
            else:
                ranges.append([k, k + 1])
                self.damage_edges.add(k)
        elif in_range:
            self.damage_edges.add(k)

    def damaged_between(self, start: int, end: int) -> bool:
        """Whether any of output frames ``start`` .. ``end - 1`` (of :meth:`frames`, already given) shows a
        picture predicted from damage."""
        return any(a < end and start < b for a, b in self.damaged_ranges)


def frame_rotation(frame) -> int:
    """The display rotation of a decoded frame, counter-clockwise degrees in {0, 90, 180, 270}."""
    try:
        rot = float(getattr(frame, "rotation", 0) or 0)
    except Exception:  # no display matrix
        return 0
    return int(round(rot / 90.0)) % 4 * 90


# libavutil's enums (spherical.h, stereo3d.h): the first field of AVSphericalMapping and of AVStereo3D.
SPHERICAL_PROJECTIONS = {
    0: "equirectangular", 1: "cubemap", 2: "equirectangular_tile", 3: "half_equirectangular",
    4: "", 5: "fisheye", 6: "parametric_immersive",  # 4: rectilinear, a flat picture
}
STEREO_TYPES = {
    0: "", 1: "side_by_side", 2: "top_bottom", 3: "frame_sequence", 4: "checkerboard",
    5: "side_by_side_quincunx", 6: "lines", 7: "columns", 8: "unspecified",  # 0: 2D, a flat picture
}


def frame_layout(frame) -> tuple[str, str]:
    """``(projection, stereo)`` of a decoded frame from its side data, "" each for a flat 2D picture:
    the projection of a 360-degree or VR video (``equirectangular``, ``cubemap``, ``fisheye``...: the
    mp4/WebM spherical metadata, ``sv3d``/``Projection``, which the demuxer hands to every frame) and the
    frame packing of a stereoscopic 3D video (``side_by_side``, ``top_bottom``...: the container's
    ``st3d``/``StereoMode`` or the H.264/HEVC frame-packing SEI)."""
    import struct

    from av.sidedata.sidedata import Type

    projection = stereo = ""
    for data in getattr(frame, "side_data", ()):
        raw = bytes(data)
        if data.type not in (Type.SPHERICAL, Type.STEREO3D) or len(raw) < 4:
            continue
        code = struct.unpack_from("<i", raw)[0]  # the struct's first field, an enum (as t2v.hdr reads side data)
        if data.type == Type.SPHERICAL:
            projection = SPHERICAL_PROJECTIONS.get(code, f"projection_{code}")
        else:
            stereo = STEREO_TYPES.get(code, f"stereo_{code}")
    return projection, stereo


def rotated_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    return (height, width) if rotation % 180 else (width, height)


def to_rgb(
    frame, rotation: int = 0, width: int | None = None, height: int | None = None, reformatter: Any = None,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
) -> np.ndarray:
    """An ``av.VideoFrame`` (any pixel format) as RGB ``uint8 [H, W, 3]``, scaled by swscale to
    ``width`` x ``height`` (display orientation; default: the frame's size) with area averaging, then
    rotated for display. Bit-exact on every CPU (see :func:`_sws_flags`). A picture with transparency
    (an alpha channel or a palette) is shown over ``background`` (:func:`t2v.alpha.composited_rgb`; an
    HDR picture's alpha is not composited). Pass one
    ``av.video.reformatter.VideoReformatter`` per stream of frames: it keeps its swscale context, which
    is otherwise set up again for every frame (the bit-exact kernels make that costly)."""
    import av

    if reformatter is None:
        reformatter = av.video.reformatter.VideoReformatter()
    if width is None or height is None:
        w, h = frame.width, frame.height
    else:
        w, h = (height, width) if rotation % 180 else (width, height)  # the coded orientation
    flags = _sws_flags(to_rgb=True) if (w, h) == (frame.width, frame.height) else _sws_scale_flags(to_rgb=True)
    transfer = hdr_transfer(frame)
    if transfer:  # PQ or HLG: 16-bit RGB, then tone-mapped to SDR BT.709
        # Planar 16-bit RGB: swscale's packed rgb48 output mixes up rows under FULL_CHR_H_INT (measured:
        # 41 of 255 levels off on a 10-bit HEVC frame, against 2.7 planar).
        rgb48 = reformatter.reformat(
            frame, width=w, height=h, format="gbrp16le", interpolation=flags, **_full_range_source(frame)
        ).to_ndarray()
        arr = tonemap_hdr(
            rgb48, transfer, bt2020=int(frame.color_primaries) == _BT2020_PRIMARIES,
            peak_nits=hdr_peak_nits(frame) if transfer == "pq" else None,
        )
    elif has_alpha(frame) and not opaque_throughout(frame):
        arr = composited_rgb(
            frame, w, h, reformatter, _sws_flags(to_rgb=True), _sws_scale_flags(to_rgb=True), background,
            **_full_range_source(frame),
        )
    else:
        arr = reformatter.reformat(
            frame, width=w, height=h, format="rgb24", interpolation=flags, **_full_range_source(frame)
        ).to_ndarray()
    if rotation:
        arr = np.ascontiguousarray(np.rot90(arr, k=rotation // 90))
    return arr


YUV_SOURCE_PREFIXES = ("yuv", "nv12", "nv21", "p010", "p016")  # decoded formats kept as YUV (yuvj* included)


class Yuv420Clip:
    """A clip kept as the encoder takes it: one packed ``yuv420p`` array per frame (``[H * 3 // 2, W]``,
    the Y plane then U then V, PyAV's ``to_ndarray`` layout; even ``H`` and ``W``), half the bytes of RGB
    and no RGB <-> YUV round trip on the way from the decoder to the encoder. It reads like an RGB clip
    ``uint8 [T, H, W, 3]``: ``len``, ``shape``, ``clip[i]`` (one RGB frame, converted on demand, bit-exact
    as :func:`to_rgb`), ``clip[a:b]`` (a sub-clip) and ``np.asarray(clip)`` (every frame in RGB).
    ``colorspace`` is the YUV matrix of the source (an ``AVColorSpace`` value; 2 = unspecified, read as
    BT.601); :func:`encode_mp4_bytes` tags the file with it."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, frames: list[np.ndarray], height: int, width: int, colorspace: int | None = 2):
        if height % 2 or width % 2:
            raise ValueError(f"yuv420p clips need even sizes, got {height}x{width}")
        self.frames, self.height, self.width, self.colorspace = list(frames), int(height), int(width), colorspace
        self._reformatter = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.frames), self.height, self.width, 3)

    def __len__(self) -> int:
        return len(self.frames)

    def av_frames(self):
        import av

        for i, packed in enumerate(self.frames):
            frame = av.VideoFrame.from_ndarray(packed, format="yuv420p")
            frame.pts = i
            if self.colorspace not in (None, 2):
                frame.colorspace = self.colorspace
            yield frame

    def rgb(self, i: int) -> np.ndarray:
        import av

        if self._reformatter is None:
            self._reformatter = av.video.reformatter.VideoReformatter()
        frame = av.VideoFrame.from_ndarray(self.frames[i], format="yuv420p")
        if self.colorspace not in (None, 2):
            frame.colorspace = self.colorspace
        return self._reformatter.reformat(frame, format="rgb24", interpolation=_sws_flags(to_rgb=True)).to_ndarray()

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Yuv420Clip(self.frames[index], self.height, self.width, self.colorspace)
        return self.rgb(int(index))

    def __iter__(self):
        return (self.rgb(i) for i in range(len(self)))

    def __array__(self, dtype=None, copy=None):
        arr = np.stack([self.rgb(i) for i in range(len(self))]) if len(self) else np.zeros(self.shape, np.uint8)
        return arr if dtype is None else arr.astype(dtype)


def yuv420_planes(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U, V planes of a ``yuv420p`` ``av.VideoFrame`` as numpy views (no copy; the row padding of
    the decoder's buffers left out)."""
    return tuple(
        np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes
    )


_MPEG_RANGE, _JPEG_RANGE = 1, 2  # AVColorRange: limited (16-235) and full (0-255) YUV


def _full_range_source(frame) -> dict:
    """``src_color_range`` for swscale when a YUV frame is full range (swscale reads an untagged range as
    limited); nothing to pass otherwise (RGB, or limited range)."""
    name = str(frame.format.name)
    if name.startswith("yuvj") or (int(frame.color_range) == _JPEG_RANGE and name.startswith(YUV_SOURCE_PREFIXES)):
        return {"src_color_range": _JPEG_RANGE}
    return {}


def to_yuv420(
    frame, rotation: int, width: int, height: int, crop: tuple[int, int, int, int] | None = None,
    reformatter: Any = None,
):
    """An ``av.VideoFrame`` scaled by swscale (area averaging, bit-exact, as :func:`to_rgb`) to ``width``
    x ``height`` (display orientation) in ``yuv420p``, rotated for display, then cropped to ``crop`` =
    ``(y0, x0, h, w)`` (even numbers). Returns ``(packed, scaled)``: the packed ``[h * 3 // 2, w]`` array
    of :class:`Yuv420Clip` and the scaled ``av.VideoFrame`` (coded orientation, uncropped), from which
    smaller RGB pictures can be made without going back to the source."""
    import av

    if reformatter is None:
        reformatter = av.video.reformatter.VideoReformatter()
    w, h = (height, width) if rotation % 180 else (width, height)  # the coded orientation
    # Full-range ("JPEG", yuvj*: phones, webcams, MJPEG) pictures are brought to the limited range that
    # yuv420p means to the encoder and to every reader of the clip; left as they were, their blacks and
    # whites would read as beyond the range and be clipped (the contrast stretched by 255/219).
    full_range = _full_range_source(frame)
    if str(frame.format.name) == "yuv420p" and (frame.width, frame.height) == (w, h) and not full_range:
        scaled = frame  # already what swscale would give: its same-size, same-format conversion is a copy
    else:
        scaled = reformatter.reformat(
            frame, width=w, height=h, format="yuv420p", interpolation=_sws_scale_flags(to_rgb=False),
            **({**full_range, "dst_color_range": _MPEG_RANGE} if full_range else {}),
        )
    y, u, v = yuv420_planes(scaled)
    if rotation:
        k = rotation // 90
        y, u, v = (np.rot90(p, k=k) for p in (y, u, v))
    if crop is not None:
        y0, x0, ch, cw = crop
        if y0 % 2 or x0 % 2 or ch % 2 or cw % 2:
            raise ValueError(f"yuv420p crops need even offsets and sizes, got {crop}")
        y = y[y0 : y0 + ch, x0 : x0 + cw]
        u, v = (p[y0 // 2 : (y0 + ch) // 2, x0 // 2 : (x0 + cw) // 2] for p in (u, v))
    packed = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(-1, y.shape[1])
    return packed, scaled


def sample_pictures(
    src: str | os.PathLike | bytes, count: int = 8, longer_side: int = 256,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
) -> list[np.ndarray]:
    """Up to ``count`` different pictures from across a video, as RGB ``uint8`` at display size scaled to
    ``longer_side``: the keyframe at or before each of ``count`` evenly spaced times (a seek, then the
    first picture decoded; non-keyframes are not decoded), for judging a whole video from a few pictures
    (its black bars, a contact sheet) at the cost of a few keyframes. Where that gives fewer than three
    (a short video has one keyframe, a file may not seek), every ``4``-th of its first pictures instead.
    A file that cannot be read gives none (the reader says why)."""
    import av

    def picture(frame, reformatter, sar) -> np.ndarray:
        rot = frame_rotation(frame)
        w, h = display_size(frame.width, frame.height, rot, sar)
        scale = min(1.0, longer_side / max(w, h))
        return to_rgb(frame, rot, max(2, round(w * scale)), max(2, round(h * scale)), reformatter, background)

    def collect(keyframes: bool) -> dict:
        got: dict = {}
        try:
            container = _open(src)
        except VideoDecodeError:
            return got
        try:
            stream = choose_video_stream(container, _describe(src))
            sar, reformatter = sample_aspect(stream), av.video.reformatter.VideoReformatter()
            decoder = decoder_for(stream)
            if not keyframes:
                for i, frame in enumerate(_decode(container, stream, decoder)):
                    if i % 4 == 0:
                        got[i] = picture(frame, reformatter, sar)
                    if len(got) >= count:
                        break
                return got
            decoder.skip_frame = "NONKEY"
            tb, start = stream.time_base, stream.start_time or 0
            span = (stream.duration or 0) if tb else 0
            if not span and container.duration and tb:
                span = int(container.duration / 1_000_000 / tb)
            if not span:
                return got
            for i in range(count):
                container.seek(int(start + span * (2 * i + 1) // (2 * count)), stream=stream, backward=True)
                if decoder is not stream.codec_context:  # (seeking flushes the stream's own decoder only)
                    decoder.flush_buffers()
                frame = next(iter(_decode(container, stream, decoder)), None)
                if frame is not None and frame.pts not in got:
                    got[frame.pts] = picture(frame, reformatter, sar)
        except Exception:  # no index, damage, no video stream: the pictures so far
            pass
        finally:
            container.close()
        return got

    got = collect(keyframes=True)
    if len(got) < 3:
        got = collect(keyframes=False)
    return list(got.values())


def probe_video(src: str | os.PathLike | bytes) -> dict:
    """Return ``{num_frames, fps, width, height}``; counts frames by demuxing when the header lacks it."""
    container = _open(src)
    try:
        stream = choose_video_stream(container, _describe(src))
        fps = _stream_fps(stream)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:
            try:
                num_frames = sum(1 for p in container.demux(stream) if p.size > 0)
            except Exception as exc:
                raise VideoDecodeError(f"{_describe(src)}: cannot read packets ({_one_line(exc)})") from None
    finally:
        container.close()
    if width <= 0 or height <= 0:
        raise VideoDecodeError(f"{_describe(src)}: video stream has no frame size")
    return {"num_frames": num_frames, "fps": fps, "width": width, "height": height}


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float) -> bool:
    """Write an animated GIF (looping) with Pillow; returns False (and logs) when Pillow is missing."""
    arr = _check_frames(frames)
    try:
        from PIL import Image
    except ImportError:
        log.warning("Pillow is not installed: skipping GIF %s", path)
        return False
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in arr]
    duration = max(20, int(round(1000.0 / max(float(fps), 1e-3))))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=duration,
            loop=0,
            optimize=False,
        )
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def frames_strip_png(frames: np.ndarray, n: int = 8) -> bytes:
    """A horizontal strip of ``n`` evenly spaced frames (fewer if the video is shorter), PNG-encoded."""
    import cv2

    arr = _check_frames(frames)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    count = min(int(n), arr.shape[0])
    idx = np.linspace(0, arr.shape[0] - 1, count).round().astype(int)
    strip = np.concatenate(list(arr[idx]), axis=1)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(strip[..., ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
