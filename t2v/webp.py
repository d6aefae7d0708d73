"""Animated WebP, which FFmpeg reads only as a still image: decoded by Pillow into a lossless stream.

Animated WebP is how much of the web serves short loops and stickers (in place of GIF). FFmpeg's WebP
support decodes a single picture; on an animated file (its ``VP8X`` header with the animation flag, and
``ANIM``/``ANMF`` chunks) its decoder fails, and the reader took such a file for an image. Pillow's WebP
plugin, built on libwebp, decodes every frame with its own timestamp and composes each onto the
canvas. :func:`as_matroska` writes those frames, one at a time, as lossless FFV1 (``bgra``: transparency
kept, for :mod:`t2v.alpha`) into an anonymous temporary file, timed in milliseconds as the file gives
them, which the video reader then reads like any other video.
"""

from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction
from typing import Any

import numpy as np

#: The container tag that names the format the frames came from (the reader records it).
SOURCE_FORMAT_TAG = "source_format"
_ANIMATION_FLAG = 0x02  # in the VP8X chunk's flags byte


def is_animated_webp(head: bytes) -> bool:
    """Whether a file's first bytes (at least 21) are those of an animated WebP: ``RIFF`` .. ``WEBP``
    ``VP8X`` with the animation flag."""
    return len(head) >= 21 and head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X" and bool(head[20] & _ANIMATION_FLAG)


def head_of(src: Any, size: int = 32) -> bytes:
    """The first ``size`` bytes of a path or of in-memory data."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src[:size])
    try:
        with open(os.fspath(src), "rb") as f:
            return f.read(size)
    except OSError:
        return b""


class AnimationError(ValueError):
    """An animated WebP that Pillow cannot decode to its end."""


def _mux(container, packet, durations: dict[int, int]) -> None:
    """Mux ``packet`` lasting as long as its frame is shown (the encoder gives every packet the nominal
    rate's duration; the last frame's own length is the video's end)."""
    if packet.pts is not None and packet.pts in durations:
        packet.duration = durations.pop(packet.pts)
    container.mux(packet)


def as_matroska(src: Any) -> io.BufferedRandom:
    """The frames of the animated WebP ``src`` (a path or bytes) as FFV1 ``bgra`` in Matroska, in an
    anonymous temporary file (gone once closed), positioned at its start. Raises
    :class:`AnimationError` if a frame cannot be decoded."""
    import av
    from PIL import Image

    target = io.BytesIO(bytes(src)) if isinstance(src, (bytes, bytearray, memoryview)) else os.fspath(src)
    out = tempfile.TemporaryFile(prefix="t2v-webp-", suffix=".mkv")
    tb = Fraction(1, 1000)  # WebP frame durations are milliseconds
    try:
        with Image.open(target) as image:
            count = int(getattr(image, "n_frames", 1))
            image.load()
            first = max(1, int(image.info.get("duration") or 100))  # ms; the nominal rate is the first frame's
            durations: dict[int, int] = {}  # pts -> ms shown
            with av.open(out, "w", format="matroska") as container:
                container.metadata[SOURCE_FORMAT_TAG] = "webp"
                stream = container.add_stream("ffv1", rate=Fraction(1000, first))
                stream.width, stream.height = image.size
                stream.pix_fmt = "bgra"
                stream.time_base = stream.codec_context.time_base = tb
                stream.codec_context.thread_count = 1
                last = -1
                for i in range(count):
                    try:
                        image.seek(i)
                        image.load()
                        rgba = np.asarray(image.convert("RGBA"))
                    except Exception as exc:  # a damaged or cut-off frame
                        raise AnimationError(f"frame {i + 1} of {count} cannot be decoded ({exc})") from None
                    stamp = int(image.info.get("timestamp", last + 1))
                    stamp = max(stamp, last + 1)  # (a zero-length frame would repeat a timestamp)
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba), format="rgba").reformat(format="bgra")
                    frame.pts, frame.time_base = stamp, tb
                    durations[stamp] = max(1, int(image.info.get("duration") or first))
                    last = stamp
                    for packet in stream.encode(frame):
                        _mux(container, packet, durations)
                for packet in stream.encode():
                    _mux(container, packet, durations)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


__all__ = ["SOURCE_FORMAT_TAG", "AnimationError", "as_matroska", "head_of", "is_animated_webp"]
