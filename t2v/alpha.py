"""Pictures with transparency: shown over a background, as a player or an editor shows them.

Video with an alpha channel is common where footage is made to be laid over other footage: stock VFX
elements (fire, smoke, particles) and titles in ProRes 4444 or QuickTime Animation, screen and UI
recordings in PNG-in-MOV, lossless masters in FFV1 or UT Video, animated stickers in APNG, GIF and WebM.
Where a pixel is transparent its colour samples say nothing: an editor leaves whatever it had there (a
key colour, the last picture, noise) and FFmpeg's GIF decoder writes white. Converting such a frame to
RGB or ``yuv420p`` drops the alpha and shows those samples. Here the colour is composited over
``background`` (straight alpha, the meaning FFmpeg gives every format's alpha): each pixel is
``colour * a + background * (1 - a)``.

WebM keeps a VP8/VP9 picture's alpha as a second bitstream beside each frame (Matroska's
BlockAdditional, ``alpha_mode: 1`` on the track). FFmpeg's own VP8/VP9 decoders leave it out; libvpx's
decoder reads it (:func:`decoder_for`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: The colour transparent pixels are shown over unless the caller gives one (RGB, 0-255).
DEFAULT_BACKGROUND = (0, 0, 0)

# where the alpha byte sits in a pixel of the 8-bit packed formats
_PACKED_ALPHA = {"rgba": 3, "bgra": 3, "argb": 0, "abgr": 0}

# libvpx's decoders for WebM tracks whose pictures carry an alpha bitstream
_ALPHA_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}


def _can_be_transparent(fmt) -> bool:
    return bool(fmt.has_palette) or any(c.is_alpha for c in fmt.components)


def format_has_alpha(name: str) -> bool:
    """Whether frames of pixel format ``name`` can carry transparency: an alpha component, or a palette
    (whose entries may be transparent: a paletted PNG's ``tRNS``)."""
    import av

    if not name:
        return False
    try:
        fmt = av.VideoFormat(name)
    except (ValueError, TypeError):
        return False
    return _can_be_transparent(fmt)


def has_alpha(frame) -> bool:
    """Whether a decoded ``av.VideoFrame`` can carry transparency (see :func:`format_has_alpha`)."""
    return _can_be_transparent(frame.format)


def opaque_throughout(frame) -> bool:
    """Whether a frame with an alpha channel is opaque at every pixel, read from the alpha samples
    themselves (planar ``yuva*`` and ``gbrap*`` formats, 8-bit packed RGBA orders; a millisecond at 1080p),
    so that such a frame is converted as if it had no alpha. Other formats (paletted, 16-bit packed)
    answer ``False``: they are composited, where opaque pixels keep their colour too."""
    fmt = frame.format
    alpha = [c for c in fmt.components if c.is_alpha]
    if not alpha or fmt.has_palette:
        return False
    name = str(fmt.name)
    if name in _PACKED_ALPHA:  # 8-bit packed RGBA orders (a GIF's bgra, PNG's rgba, QuickTime's argb)
        plane = frame.planes[0]
        pixels = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width * 4]
        return int(pixels.reshape(plane.height, plane.width, 4)[..., _PACKED_ALPHA[name]].min()) == 255
    if not fmt.is_planar:
        return False
    comp = alpha[0]
    if comp.bits > 16 or fmt.is_big_endian:
        return False
    plane = frame.planes[comp.plane]
    dtype = np.dtype(np.uint8 if comp.bits <= 8 else "<u2")
    values = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // dtype.itemsize)[:, : plane.width]
    return int(values.min()) == (1 << comp.bits) - 1


def composite_over(rgba: np.ndarray, background: tuple[int, int, int] = DEFAULT_BACKGROUND) -> np.ndarray:
    """``rgba`` (``uint8 [H, W, 4]``, straight alpha) over ``background`` as RGB ``uint8 [H, W, 3]``:
    ``(c * a + b * (255 - a)) / 255`` rounded to nearest, exactly (the products and their sum, at most
    255 * 255, are 16-bit integers; OpenCV's 8-bit multiplies and its rounding division by 255 give the
    integer formula's result for every input, checked over all of them)."""
    import cv2

    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[-1] != 4:
        raise ValueError(f"expected uint8 [H, W, 4] RGBA, got {rgba.dtype} {rgba.shape}")
    r, g, b, a = cv2.split(rgba)
    rgb = cv2.merge([r, g, b])
    if int(a.min()) == 255:  # opaque throughout: the colour as it is
        return rgb
    alpha = cv2.merge([a, a, a])
    total = cv2.multiply(rgb, alpha, dtype=cv2.CV_16U)
    if any(background):
        behind = np.empty_like(rgb)
        behind[:] = np.asarray(background, np.uint8)
        total = cv2.add(total, cv2.multiply(behind, cv2.bitwise_not(alpha), dtype=cv2.CV_16U))
    return cv2.convertScaleAbs(total, alpha=1 / 255)


def webm_alpha(stream) -> bool:
    """Whether a WebM/Matroska VP8 or VP9 track says its pictures carry an alpha bitstream."""
    ctx = stream.codec_context
    return ctx is not None and str(getattr(ctx, "name", "")) in _ALPHA_DECODERS and (
        str(stream.metadata.get("alpha_mode", "")).strip() == "1"
    )


def decoder_for(stream) -> Any:
    """The codec context that decodes ``stream`` with its transparency: the stream's own, except for a
    VP8/VP9 track with alpha (:func:`webm_alpha`), which gets libvpx's decoder (its frames come out as
    ``yuva420p``). Where libvpx is missing, the stream's own decoder, with a warning."""
    import av

    own = stream.codec_context
    if not webm_alpha(stream):
        return own
    name = _ALPHA_DECODERS[str(own.name)]
    try:
        ctx = av.CodecContext.create(name, "r")
    except Exception as exc:  # a build of FFmpeg without libvpx
        log.warning("%s with alpha: no %s decoder (%s); its transparent parts are shown as coded", own.name, name, exc)
        return own
    if own.extradata:
        ctx.extradata = own.extradata
    return ctx


_local = threading.local()


def _rgb_scaler():
    """One swscale context per thread for scaling composited pictures (kept across a stream's frames)."""
    import av

    scaler = getattr(_local, "scaler", None)
    if scaler is None:
        scaler = _local.scaler = av.video.reformatter.VideoReformatter()
    return scaler


def composited_rgb(
    frame, width: int, height: int, reformatter: Any, to_rgb_flags: int, scale_flags: int,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND, **source_range: Any,
) -> np.ndarray:
    """An ``av.VideoFrame`` with transparency as RGB ``uint8 [height, width, 3]`` over ``background``: to
    RGBA at its coded size (``reformatter``, ``to_rgb_flags``), composited, then scaled by swscale
    (``scale_flags``). Compositing before scaling keeps the colour hidden under transparent pixels out of
    the edges of what is shown."""
    import av

    rgba = reformatter.reformat(frame, format="rgba", interpolation=to_rgb_flags, **source_range).to_ndarray()
    rgb = composite_over(rgba, background)
    if (width, height) == (frame.width, frame.height):
        return rgb
    picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return _rgb_scaler().reformat(picture, width=width, height=height, format="rgb24", interpolation=scale_flags).to_ndarray()


__all__ = [
    "DEFAULT_BACKGROUND", "composite_over", "composited_rgb", "decoder_for", "format_has_alpha", "has_alpha",
    "opaque_throughout", "webm_alpha",
]
