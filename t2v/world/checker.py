"""Scoring a video against its scene description: did the model draw a red square moving left on blue?

:func:`score_video` works in CIELAB (a roughly perceptual colour space) and is meant for small, blurry,
compressed model outputs (for example 17 frames at 32x32):

- background: per frame, the median colour refined by the mean of the pixels close to it; the frame has a
  background when at least half of its pixels are close to it. Its score is the share of frames whose
  background's nearest named colour is the prompt's.
- object: pixels far from the background (an adaptive threshold). A frame has an object when that area is
  between 0.2% and 40% of the frame (pure noise has no background and no object).
- colour: the share of frames whose object core (its pixels farthest from the background) has the prompt's
  colour as nearest named colour. With several objects, each object's colour must cover a fair share of the
  core; the score is averaged over objects.
- motion: a least-squares fit of the object centroid over time; the displacement along the prompt's
  direction, in shares of the frame, must reach ``min_displacement`` (partial credit below) and exceed the
  displacement across it, and the centroid must follow that straight line (R^2 of the fit >= 0.8 for full
  credit; random blobs jumping about get none). No object, a single frame or a static object gives 0 (a static prompt expects no
  displacement).
- total: the mean of colour, background and motion. Every value is in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from t2v.world.config import COLOURS, rgb_to_lab
from t2v.world.scenes import DIRECTION_VECTORS, SceneSpec

BG_TOLERANCE = 20.0  # Lab distance within which a pixel counts as background
OBJ_MIN_DISTANCE = 15.0  # object pixels are at least this far from the background...
OBJ_PEAK_SHARE = 0.4  # ...and at least this share of the frame's largest distance
CORE_PEAK_SHARE = 0.7  # the object core: pixels at least this share of the largest distance
MIN_AREA, MAX_AREA = 0.002, 0.40
MIN_BACKGROUND_SHARE = 0.5
R2_LOW, R2_FULL = 0.5, 0.8  # motion credit grows from 0 to full as the centroid's straight-line fit R^2 does

SCORE_KEYS = ("colour", "background", "motion", "object_present", "total")


def _palette(candidates: Sequence[str] | None) -> tuple[list[str], np.ndarray]:
    names = list(candidates) if candidates else list(COLOURS)
    unknown = [n for n in names if n not in COLOURS]
    if unknown:
        raise ValueError(f"unknown candidate colour(s) {unknown}")
    return names, rgb_to_lab([COLOURS[n] for n in names]).reshape(-1, 3)


def _nearest(lab: np.ndarray, palette_lab: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(lab[..., None, :] - palette_lab, axis=-1)
    return d.argmin(axis=-1)


def _check_frames(frames) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got shape {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (0-255 RGB), got {arr.dtype}")
    return arr


def _fit_displacement(ts: np.ndarray, pos: np.ndarray, span: int) -> np.ndarray:
    """Least-squares velocity of ``pos`` [N, 2] over ``ts`` times ``span`` frames -> displacement (x, y)."""
    tc = ts - ts.mean()
    denom = float((tc**2).sum())
    if denom <= 0:
        return np.zeros(2)
    vel = (tc[:, None] * (pos - pos.mean(axis=0))).sum(axis=0) / denom
    return vel * span


def score_video(
    frames: np.ndarray,
    spec: SceneSpec,
    candidates: Sequence[str] | None = None,
    min_displacement: float = 0.05,
) -> dict[str, float]:
    """Score uint8 [T, H, W, 3] RGB ``frames`` against ``spec``; returns ``colour``, ``background``,
    ``motion``, ``object_present`` and ``total``, each in [0, 1].

    ``candidates`` are the colour names a colour is classified among (default: every named colour).
    ``min_displacement`` is the share of the frame the object must travel over the video for full motion
    credit.
    """
    arr = _check_frames(frames)
    t, h, w, _ = arr.shape
    names, pal = _palette(candidates)
    index = {n: i for i, n in enumerate(names)}
    lab = rgb_to_lab(arr)  # [T, H, W, 3]
    flat = lab.reshape(t, h * w, 3)

    n_obj = len(spec.objects)
    colour_hits = np.zeros((t, n_obj))
    present = np.zeros(t, dtype=bool)
    bg_hits = np.zeros(t)
    centroids = np.full((t, n_obj, 2), np.nan)
    ys, xs = np.divmod(np.arange(h * w), w)

    for i in range(t):
        px = flat[i]
        bg = np.median(px, axis=0)
        near = np.linalg.norm(px - bg, axis=1) < BG_TOLERANCE
        if near.any():
            bg = px[near].mean(axis=0)
        dist = np.linalg.norm(px - bg, axis=1)
        has_bg = float((dist < BG_TOLERANCE).mean()) >= MIN_BACKGROUND_SHARE
        if has_bg and names[int(_nearest(bg, pal))] == spec.background:
            bg_hits[i] = 1.0
        peak = float(dist.max())
        mask = dist > max(OBJ_MIN_DISTANCE, OBJ_PEAK_SHARE * peak)
        area = float(mask.mean())
        if not (has_bg and MIN_AREA <= area <= MAX_AREA and mask.sum() >= 2):
            continue
        present[i] = True
        core = mask & (dist >= CORE_PEAK_SHARE * peak)
        if n_obj == 1:
            cls = int(_nearest(np.median(px[core], axis=0), pal))
            colour_hits[i, 0] = float(names[cls] == spec.objects[0].colour)
            wgt = dist[mask] - OBJ_MIN_DISTANCE
            centroids[i, 0] = (np.average(xs[mask], weights=wgt), np.average(ys[mask], weights=wgt))
            continue
        core_cls = _nearest(px[core], pal)
        mask_idx = np.flatnonzero(mask)
        mask_cls = _nearest(px[mask_idx], pal)
        for j, obj in enumerate(spec.objects):
            target = index.get(obj.colour, -1)
            share = float((core_cls == target).mean()) if core_cls.size else 0.0
            colour_hits[i, j] = float(share >= 0.5 / n_obj)
            sel = mask_idx[mask_cls == target]
            if sel.size:
                centroids[i, j] = (xs[sel].mean(), ys[sel].mean())

    motion_scores = []
    for j, obj in enumerate(spec.objects):
        ok = ~np.isnan(centroids[:, j, 0])
        if t < 2 or ok.sum() < max(2, int(np.ceil(0.5 * t))):
            motion_scores.append(0.0)
            continue
        ts = np.flatnonzero(ok).astype(np.float64)
        pos = centroids[ok, j] / np.array([w, h], dtype=np.float64)
        disp = _fit_displacement(ts, pos, t - 1)  # in shares of the frame
        if obj.speed <= 0:
            motion_scores.append(float(1.0 - np.clip(np.linalg.norm(disp) / min_displacement, 0.0, 1.0)))
            continue
        dx, dy = DIRECTION_VECTORS[obj.direction]
        along = float(disp[0] * dx + disp[1] * dy)
        across = float(abs(disp[0] * dy) + abs(disp[1] * dx))
        if along <= across:
            motion_scores.append(0.0)
            continue
        # Straight-line consistency: random blobs jump about, a moving object follows the fit.
        axis = pos[:, 0] if dx else pos[:, 1]
        fit = axis.mean() + (ts - ts.mean()) * (disp[0] if dx else disp[1]) / (t - 1)
        ss_tot = float(((axis - axis.mean()) ** 2).sum())
        r2 = 1.0 - float(((axis - fit) ** 2).sum()) / ss_tot if ss_tot > 0 else 0.0
        straight = float(np.clip((r2 - R2_LOW) / (R2_FULL - R2_LOW), 0.0, 1.0))
        motion_scores.append(float(np.clip(along / min_displacement, 0.0, 1.0)) * straight)

    colour = float(colour_hits.mean())
    background = float(bg_hits.mean())
    motion = float(np.mean(motion_scores))
    return {
        "colour": colour,
        "background": background,
        "motion": motion,
        "object_present": float(present.mean()),
        "total": (colour + background + motion) / 3.0,
    }


def score_batch(videos: Sequence[np.ndarray], specs: Sequence[SceneSpec], **kwargs) -> dict[str, float]:
    """Mean of each :func:`score_video` key over ``videos`` (and ``n``, their count)."""
    if len(videos) != len(specs):
        raise ValueError(f"{len(videos)} videos but {len(specs)} specs")
    if not videos:
        return {k: 0.0 for k in SCORE_KEYS} | {"n": 0}
    scores = [score_video(v, s, **kwargs) for v, s in zip(videos, specs, strict=True)]
    out: dict[str, float] = {k: float(np.mean([sc[k] for sc in scores])) for k in SCORE_KEYS}
    out["n"] = len(scores)
    return out


__all__ = ["SCORE_KEYS", "score_batch", "score_video"]
