"""Rendering scenes to frames, and the planted defects.

An object moves in a straight line at constant speed. With ``on_overflow="clip"`` (the default) its speed
is lowered, if needed, so that the whole path stays inside the frame: it starts near the side opposite its
direction and crosses towards the other, so the direction is never ambiguous. ``on_overflow="wrap"`` keeps
the speed and wraps the object around the frame edges (used for the "too fast" defect).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from t2v.world.scenes import DIRECTION_VECTORS, ObjectSpec, SceneSpec

_SHIFT = 4  # cv2 sub-pixel bits: coordinates in 1/16 pixel, so slow motion is smooth
_ONE = 1 << _SHIFT
_MARGIN = 1.0


def _as_rng(seed: int | np.random.Generator | np.random.SeedSequence) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def effective_size(obj: ObjectSpec, height: int, width: int) -> int:
    return int(max(2, min(obj.size, int(0.45 * min(height, width)))))


def max_speed(obj: ObjectSpec, num_frames: int, height: int, width: int) -> float:
    """The largest speed (px/frame) at which ``obj`` stays inside the frame for ``num_frames`` frames."""
    size = effective_size(obj, height, width)
    dx, _ = DIRECTION_VECTORS[obj.direction]
    extent = width if dx else height
    avail = max(0.0, extent - 2 * _MARGIN - size)
    return avail / max(1, num_frames - 1)


def object_path(
    obj: ObjectSpec,
    num_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    on_overflow: Literal["clip", "wrap"] = "clip",
) -> np.ndarray:
    """Centre positions float [T, 2] (x, y) of ``obj`` over ``num_frames`` frames."""
    size = effective_size(obj, height, width)
    dx, dy = DIRECTION_VECTORS[obj.direction]
    horizontal = dx != 0
    extent = width if horizontal else height
    cross = height if horizontal else width
    lo, hi = _MARGIN + size / 2, extent - _MARGIN - size / 2
    avail = max(0.0, hi - lo)
    # Always draw the same random numbers in the same order, whatever the branch.
    u_perp, u_start, u_wrap = rng.random(3)
    perp = _MARGIN + size / 2 + u_perp * max(0.0, cross - 2 * _MARGIN - size)
    t = np.arange(num_frames, dtype=np.float64)
    speed = float(obj.speed)
    if on_overflow == "wrap" and speed * max(0, num_frames - 1) > avail:
        along = (u_wrap * extent + speed * t) % extent
    else:
        speed = min(speed, avail / max(1, num_frames - 1))
        slack = avail - speed * max(0, num_frames - 1)
        along = lo + 0.3 * u_start * slack + speed * t  # distance travelled from the starting side
    sign = dx + dy
    coord = along if sign > 0 else extent - along
    xy = np.empty((num_frames, 2), dtype=np.float64)
    if horizontal:
        xy[:, 0], xy[:, 1] = coord, perp
    else:
        xy[:, 0], xy[:, 1] = perp, coord
    return xy


def _draw(img: np.ndarray, shape: str, cx: float, cy: float, size: int, rgb: tuple[int, int, int]) -> None:
    half = size / 2.0
    if shape == "circle":
        centre = (int(round(cx * _ONE)), int(round(cy * _ONE)))
        cv2.circle(img, centre, int(round(half * _ONE)), rgb, -1, cv2.LINE_AA, _SHIFT)
        return
    if shape == "square":
        pts = [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    elif shape == "triangle":
        pts = [(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    poly = np.round(np.asarray(pts) * _ONE).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(img, [poly], rgb, cv2.LINE_AA, _SHIFT)


def render_scene(
    spec: SceneSpec,
    num_frames: int,
    height: int,
    width: int,
    seed: int | np.random.Generator = 0,
    noise_std: float = 0.0,
    noise_seed: int | None = None,
    on_overflow: Literal["clip", "wrap"] = "clip",
) -> np.ndarray:
    """Render ``spec`` to uint8 [T, H, W, 3] RGB frames; deterministic for (spec, size, seed, noise).

    ``seed`` places the objects (start offset, cross-axis position); ``noise_seed`` (default: from ``seed``)
    drives the per-pixel Gaussian noise of ``noise_std`` (0-255 scale).
    """
    if num_frames < 1 or height < 2 or width < 2:
        raise ValueError(f"need num_frames >= 1 and height, width >= 2, got {num_frames}, {height}, {width}")
    rng = _as_rng(seed)
    paths = [object_path(o, num_frames, height, width, rng, on_overflow) for o in spec.objects]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    frames[:] = np.asarray(spec.background_rgb, dtype=np.uint8)
    for obj, path in zip(spec.objects, paths, strict=True):
        size = effective_size(obj, height, width)
        dx, _ = DIRECTION_VECTORS[obj.direction]
        wrap_extent = width if dx else height
        for i in range(num_frames):
            cx, cy = path[i]
            _draw(frames[i], obj.shape, cx, cy, size, obj.rgb)
            if on_overflow == "wrap":  # draw the copies that show across the edge
                for k in (-1, 1):
                    ox, oy = (cx + k * wrap_extent, cy) if dx else (cx, cy + k * wrap_extent)
                    if -size < ox < width + size and -size < oy < height + size:
                        _draw(frames[i], obj.shape, ox, oy, size, obj.rgb)
    if noise_std > 0:
        if noise_seed is None:
            noise_rng = np.random.default_rng(np.random.SeedSequence([int(rng.integers(2**31)), 7]))
        else:
            noise_rng = np.random.default_rng(noise_seed)
        buf = np.empty(frames.shape[1:], dtype=np.float32)
        for frame in frames:  # frame by frame: stays in cache, about 3x faster than whole-video arrays
            noise_rng.standard_normal(buf.shape, dtype=np.float32, out=buf)
            buf *= np.float32(noise_std)
            buf += frame
            np.clip(buf, 0, 255, out=buf)
            np.rint(buf, out=buf)
            frame[...] = buf
    return frames


# ---------------------------------------------------------------- defects


def darken(frames: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(frames.astype(np.float32) * factor, 0, 255).round().astype(np.uint8)


def blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack(
        [cv2.GaussianBlur(f, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REPLICATE) for f in frames]
    )


def shift_brightness(frames: np.ndarray, delta: float) -> np.ndarray:
    return np.clip(frames.astype(np.int16) + int(round(delta)), 0, 255).astype(np.uint8)


def letterbox(frames: np.ndarray, bar: int, value: int = 0) -> np.ndarray:
    """Add black bars of ``bar`` rows above and below."""
    return np.pad(frames, ((0, 0), (bar, bar), (0, 0), (0, 0)), mode="constant", constant_values=value)


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _fit_scale(text: str, max_w: float, max_h: float) -> float:
    (w, h), base = cv2.getTextSize(text, _FONT, 1.0, 1)
    return max(0.2, min(max_w / max(w, 1), max_h / max(h + base, 1)))


def add_subtitles(frames: np.ndarray, lines: list[str]) -> np.ndarray:
    """Burn white text with a dark outline into the bottom rows; the lines take equal turns over time."""
    out = frames.copy()
    t, h, w, _ = out.shape
    for i in range(t):
        text = lines[min(len(lines) - 1, i * len(lines) // t)]
        scale = _fit_scale(text, 0.94 * w, 0.18 * h)
        thick = max(1, int(round(scale * 1.5)))
        (tw, _), _ = cv2.getTextSize(text, _FONT, scale, thick)
        org = (int((w - tw) / 2), int(h - max(2, 0.05 * h)))
        for ox, oy in ((-1, 0), (1, 0), (0, -1), (0, 1)):  # a dark outline keeps it legible on light scenes
            cv2.putText(out[i], text, (org[0] + ox, org[1] + oy), _FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)
        cv2.putText(out[i], text, org, _FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def add_watermark(frames: np.ndarray, corner: str, text: str = "TV", alpha: float = 0.6) -> np.ndarray:
    """Blend a boxed logo text into a corner (``"tl"``, ``"tr"``, ``"bl"``, ``"br"``), the same in every frame."""
    t, h, w, _ = frames.shape
    bw, bh = max(8, int(0.25 * w)), max(6, int(0.16 * h))
    pad = max(1, int(0.03 * min(h, w)))
    x0 = pad if corner[1] == "l" else w - pad - bw
    y0 = pad if corner[0] == "t" else h - pad - bh
    layer = np.zeros((h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.rectangle(layer, (x0, y0), (x0 + bw - 1, y0 + bh - 1), (255, 255, 255), 1)
    cv2.rectangle(mask, (x0, y0), (x0 + bw - 1, y0 + bh - 1), 255, 1)
    scale = _fit_scale(text, bw - 4, bh - 3)
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, 1)
    org = (x0 + (bw - tw) // 2, y0 + (bh + th) // 2)
    cv2.putText(layer, text, org, _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(mask, text, org, _FONT, scale, 255, 1, cv2.LINE_AA)
    a = (mask.astype(np.float32) / 255.0 * alpha)[None, :, :, None]
    out = frames.astype(np.float32) * (1 - a) + layer.astype(np.float32)[None] * a
    return np.clip(out, 0, 255).round().astype(np.uint8)


__all__ = [
    "add_subtitles",
    "add_watermark",
    "blur",
    "darken",
    "effective_size",
    "letterbox",
    "max_speed",
    "object_path",
    "render_scene",
    "shift_brightness",
]
