"""Clip quality scores: each one a pure function of a clip's frames (RGB ``uint8 [T, H, W, 3]``).

:func:`score_clip` resizes a clip to the analysis size and computes every score; :func:`decide` turns the
scores into drop reasons with the thresholds of :class:`~t2v.config.curate.CurateConfig`. The
reasons use the world's defect names (``static``, ``too_fast``, ``dark``, ``blurred``, ``subtitles``,
``watermark``, ``black_borders``, ``duplicate``) so that each filter can be scored against the planted
truth; ``oversaturated``, ``too_short`` and ``concept_cap`` have no planted counterpart.

None of these functions sees metadata: they decide from pixels only.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from t2v.config.curate import CurateConfig

# Reasons with a planted counterpart in the synthetic world (same names as its defects).
DEFECT_REASONS = (
    "static",
    "too_fast",
    "dark",
    "blurred",
    "subtitles",
    "watermark",
    "black_borders",
    "duplicate",
)


# ----------------------------------------------------------------------------------------------- helpers
def resize_frames(frames: np.ndarray, longer_side: int) -> np.ndarray:
    """Resize ``[T, H, W, 3]`` frames so that the longer side is ``longer_side`` (never upscales)."""
    _, h, w, _ = frames.shape
    scale = longer_side / max(h, w)
    if scale >= 1.0:
        return frames
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def sample_indices(num_frames: int, count: int) -> np.ndarray:
    """``count`` evenly spaced frame indices (all frames when there are fewer)."""
    if num_frames <= count:
        return np.arange(num_frames)
    return np.unique(np.linspace(0, num_frames - 1, count).round().astype(int))


def luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB frames, float32 ``[..., H, W]`` in 0..255."""
    f = frames.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _gray_u8(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


# ------------------------------------------------------------------------------------------------ scores
def brightness(frames: np.ndarray) -> float:
    """Mean luma (0..255); low means dark."""
    return float(luma(frames).mean())


def _principal_axis(samples: np.ndarray) -> np.ndarray:
    """Unit vector of the largest variance of ``[N, 3]`` colour samples."""
    centred = samples - samples.mean(axis=0)
    cov = np.cov(centred.T) + np.eye(3) * 1e-6
    _, vecs = np.linalg.eigh(cov)
    return vecs[:, -1].astype(np.float32)


def contrast_channel(frames: np.ndarray, sample: int = 4, only: np.ndarray | None = None) -> np.ndarray:
    """Project RGB frames onto the clip's principal colour axis: float32 ``[T, H, W]`` (or the frames at
    indices ``only``), zero-mean over the sampled frames, in RGB units.

    Luma misses an object whose colour differs from the background in hue but not in brightness (a red
    square on a brown background), and a dark clip has little luma contrast. The first principal
    component of the clip's pixel colours is the direction in which its content differs most, whatever
    the brightness and the hue, so motion and sharpness measured on it (both scale-free) depend on neither.
    """
    pick = frames[sample_indices(len(frames), sample)].reshape(-1, 3).astype(np.float32)
    mean = pick.mean(axis=0)
    axis = _principal_axis(pick)
    chosen = frames if only is None else frames[only]
    return (chosen.astype(np.float32) - mean) @ axis


def sharpness(frames: np.ndarray) -> tuple[float, float]:
    """(edge sharpness, variance of the Laplacian), each averaged over frames.

    The variance of the Laplacian of the luma is the classic blur score, but it scales with contrast (a
    dark or low-contrast clip looks blurred) and with noise. The edge sharpness is contrast-free: the
    steepest gradients (99.5th percentile, per pixel) of the clip's principal colour channel
    (:func:`contrast_channel`) divided by the channel's range; a step edge blurred by a Gaussian of
    sigma ``s`` has a slope of about range / (2.5 s), so the score is ~0.4 / s (sharp edges: ~0.5 or more).
    """
    edge, lap = [], []
    chan = contrast_channel(frames)
    for frame, c in zip(frames, chan, strict=True):
        lap.append(float(cv2.Laplacian(luma(frame), cv2.CV_32F, ksize=3).var()))
        c = cv2.GaussianBlur(c, (0, 0), 0.7)
        gx = cv2.Sobel(c, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(c, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        lo, hi = np.percentile(c, [0.5, 99.5])
        steep = float(np.percentile(np.sqrt(gx * gx + gy * gy), 99.5))
        edge.append(steep / max(float(hi - lo), 1e-3))
    return float(np.mean(edge)), float(np.mean(lap))


def motion(frames: np.ndarray, max_pairs: int = 8) -> tuple[float, float]:
    """(optical-flow motion, frame difference) between consecutive frames.

    Motion is the 90th percentile of the Farneback flow magnitude over the textured pixels (edges, where
    flow is defined) of the lightly smoothed :func:`contrast_channel`, in percent of the frame width per
    frame: a small object moving fast is not averaged away by a flat background or by static overlays
    (subtitles, logos), and a clip where nothing textured moves scores ~0. The frame difference is the
    mean absolute luma change (0..255). Both are 0 for a single frame.
    """
    t, _, w, _ = frames.shape
    if t < 2:
        return 0.0, 0.0
    # Pairs drawn at random (seeded by the length, so deterministic): evenly spaced pairs can alias with
    # periodic motion (an object that moves a whole pixel every few frames looks still at that period).
    rng = np.random.default_rng(t)
    starts = np.sort(rng.choice(t - 1, size=min(max_pairs, t - 1), replace=False))
    needed = np.unique(np.concatenate([starts, starts + 1]))
    chan = dict(zip(needed.tolist(), contrast_channel(frames, only=needed), strict=True))
    lo, hi = np.percentile(np.stack([chan[i] for i in starts.tolist()]), [0.5, 99.5])
    scale = 200.0 / max(float(hi - lo), 1e-3)
    mags, diffs = [], []
    for i in starts.tolist():
        a, b = (
            cv2.GaussianBlur(np.clip((chan[j] - lo) * scale + 28.0, 0, 255), (0, 0), 1.0).astype(np.uint8)
            for j in (i, i + 1)
        )
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 5, 15, 3, 5, 1.2, 0)
        mag = np.sqrt((flow**2).sum(-1))
        gx = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3)
        textured = np.sqrt(gx * gx + gy * gy) > 40.0
        diffs.append(float(np.abs(luma(frames[i]) - luma(frames[i + 1])).mean()))
        mags.append(float(np.percentile(mag[textured], 90)) if textured.mean() >= 0.002 else 0.0)
    return float(np.mean(mags)) * 100.0 / w, float(np.mean(diffs))


def border_fraction(frames: np.ndarray, max_level: float = 16.0) -> float:
    """Share of the height (letterbox) or width (pillarbox) covered by black bars, the larger of the two.

    A bar is a run of rows (columns) from an edge whose pixels (their brightest RGB channel, 95th
    percentile over the row and the frames, so codec ripple does not matter) stay below ``max_level``.
    The picture between the bars must be clearly brighter (median above ``2 * max_level``): in a dark
    frame, rows of dark background are not bars.
    """
    m = frames.max(axis=-1).astype(np.float32)  # [T, H, W] brightest channel
    best = 0.0
    for axis in (1, 2):  # rows (letterbox), columns (pillarbox)
        lines = np.moveaxis(m, axis, 0).reshape(m.shape[axis], -1)  # [lines, pixels]
        dark = np.percentile(lines, 95, axis=1) < max_level
        if dark.all() or not dark.any():
            continue
        lead = int(np.argmax(~dark))  # dark lines from the first edge
        trail = int(np.argmax(~dark[::-1]))  # ... and from the last
        inner = lines[lead : len(dark) - trail]
        if inner.size and float(np.median(inner)) >= 2.0 * max_level:
            best = max(best, (lead + trail) / len(dark))
    return float(best)


def bright_strokes(frame: np.ndarray, kernel: int = 3, min_contrast: float = 30.0) -> np.ndarray:
    """Mask of bright structures thinner than ``kernel`` pixels (a white top-hat of the luma): the strokes
    of burnt-in text and logos. Filled shapes and flat backgrounds give nothing."""
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (kernel, kernel))
    tophat = cv2.morphologyEx(_gray_u8(frame), cv2.MORPH_TOPHAT, k)
    return tophat > min_contrast


def _stroke_kernel(h: int, w: int) -> int:
    return max(3, round(min(h, w) / 32) | 1)


def subtitle_score(frames: np.ndarray, band_fraction: float = 0.25) -> float:
    """Subtitles: density of bright thin strokes in the centre half of the bottom band, minus the density
    in the rest of the frame above it (median over frames). Subtitles are centred lines of light glyphs;
    a corner logo lies outside the centre half and texture everywhere cancels out."""
    _, h, w, _ = frames.shape
    band = max(2, round(h * band_fraction))
    k = _stroke_kernel(h, w)
    scores = []
    for frame in frames:
        strokes = bright_strokes(frame, k)
        bottom = strokes[h - band :, w // 4 : w - w // 4].mean()
        rest = strokes[: h - band].mean()
        scores.append(float(bottom - rest))
    return float(np.median(scores))


def watermark_score(frames: np.ndarray, corner_fraction: float = 0.25) -> float:
    """Watermark: bright thin strokes that stay put in (nearly) every frame, in a corner. The score is the
    largest, over the four corners, of the density of persistent strokes minus the density in the middle
    part of the same rows (so a centred subtitle line that persists is not a watermark, and a static
    filled shape gives no strokes)."""
    _, h, w, _ = frames.shape
    k = _stroke_kernel(h, w)
    persistent = np.mean([bright_strokes(f, k) for f in frames], axis=0) >= 0.8
    ch, cw = max(2, round(h * corner_fraction)), max(2, round(w * corner_fraction))
    best = 0.0
    for rows in (slice(0, ch), slice(h - ch, h)):
        band = persistent[rows]
        middle = band[:, cw : w - cw].mean() if w > 2 * cw else 0.0
        for cols in (slice(0, cw), slice(w - cw, w)):
            best = max(best, float(band[:, cols].mean() - middle))
    return best


def saturation(frames: np.ndarray) -> float:
    """Mean HSV saturation in 0..1."""
    return float(
        np.mean([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2HSV)[..., 1].mean() for f in frames])
        / 255.0
    )


def phash(frame: np.ndarray, hash_size: int = 8) -> np.ndarray:
    """Perceptual hash of one RGB frame by ``imagehash.phash`` (DCT of a grey thumbnail, low frequencies
    against their median) as a boolean vector of ``hash_size**2`` bits."""
    import imagehash
    from PIL import Image

    return np.asarray(imagehash.phash(Image.fromarray(np.ascontiguousarray(frame)), hash_size=hash_size).hash).ravel()


def clip_hashes(frames: np.ndarray, hash_size: int = 8, count: int = 5) -> np.ndarray:
    """Perceptual hashes of ``count`` evenly spaced frames: bool ``[count', bits]``."""
    return np.stack([phash(frames[i], hash_size) for i in sample_indices(len(frames), count)])


def clip_signature(frames: np.ndarray, cfg: CurateConfig) -> tuple[np.ndarray, np.ndarray]:
    """A clip's near-duplicate signature: (perceptual hashes of 5 frames, colour thumbnails of 3)."""
    return clip_hashes(frames, cfg.dedup_hash_size), colour_thumbnails(frames)


def signature_fields(sig: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """The signature as manifest fields (``phash``: hex per frame, ``thumbs``: hex)."""
    return {"phash": hashes_to_hex(sig[0]), "thumbs": thumbnails_to_hex(sig[1])}


def thumbnail_jpeg(frames: np.ndarray, width: int = 96) -> str:
    """The clip's middle frame as a small base64 JPEG (for the report's examples)."""
    import base64

    frame = np.ascontiguousarray(frames[len(frames) // 2])
    h, w = frame.shape[:2]
    if w > width:
        frame = cv2.resize(frame, (width, max(2, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
    return base64.b64encode(buf.tobytes()).decode() if ok else ""


def hash_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Hamming distance of two clips' hash stacks: for each frame hash of ``a`` the distance to the
    closest frame hash of ``b``, averaged (robust to small temporal offsets)."""
    d = (a[:, None, :] != b[None, :, :]).sum(-1)
    return float(d.min(axis=1).mean())


def hashes_to_hex(hashes: np.ndarray) -> list[str]:
    return [np.packbits(h).tobytes().hex() for h in hashes]


def hashes_from_hex(items: list[str], bits: int) -> np.ndarray:
    return np.stack(
        [np.unpackbits(np.frombuffer(bytes.fromhex(s), dtype=np.uint8))[:bits].astype(bool) for s in items]
    )


def colour_thumbnails(frames: np.ndarray, grid: int = 8, count: int = 3) -> np.ndarray:
    """CIELAB thumbnails (``grid`` x ``grid`` cells) of ``count`` evenly spaced frames, int8
    ``[count', grid, grid, 3]``, with the clip's mean lightness removed (a re-encode or a small brightness
    change does not move them). Used to confirm perceptual-hash candidates: a grey hash of a flat
    background with a small object is dominated by noise, colour cells are not."""
    out = []
    for i in sample_indices(len(frames), count):
        small = cv2.resize(np.ascontiguousarray(frames[i]), (grid, grid), interpolation=cv2.INTER_AREA)
        out.append(cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab))
    lab = np.stack(out)
    lab[..., 0] -= lab[..., 0].mean()
    return np.clip(np.round(lab), -128, 127).astype(np.int8)


def thumbnail_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Near-duplicate distance of two clips' colour thumbnails: for each frame of ``a`` the largest CIELAB
    cell difference to the closest frame of ``b``, averaged. Copies score a few units; another scene,
    even on the same background, differs by tens where its object is."""
    d = np.sqrt(((a[:, None].astype(np.float32) - b[None].astype(np.float32)) ** 2).sum(-1))  # [Ka,Kb,g,g]
    return float(d.reshape(d.shape[0], d.shape[1], -1).max(-1).min(1).mean())


def thumbnails_to_hex(thumbs: np.ndarray) -> str:
    return f"{thumbs.shape[0]}x{thumbs.shape[1]}:" + thumbs.astype(np.int8).tobytes().hex()


def thumbnails_from_hex(text: str) -> np.ndarray:
    head, data = text.split(":", 1)
    count, grid = (int(x) for x in head.split("x"))
    return np.frombuffer(bytes.fromhex(data), dtype=np.int8).reshape(count, grid, grid, 3)


# ------------------------------------------------------------------------------------------------- cuts
CUT_CONFIRM_WINDOW = 3  # frames looked at on each side of a reported cut


def not_a_cut(frames: list[np.ndarray], min_diff: float) -> bool:
    """Whether a reported cut is a camera flash or a fade, from four analysis frames around it: the one
    ``CUT_CONFIRM_WINDOW + 1`` before, the ones just before and at the cut, and the one
    ``CUT_CONFIRM_WINDOW`` after.

    A flash: the frames before and after are alike (mean absolute RGB difference below ``min_diff``, or
    below a third of the difference at the cut itself).
    A fade: they are alike once brightness is matched, and the brightness moves gradually (drifting across
    the window at least as much as it jumps at the cut). A hard cut into a darker or brighter shot jumps
    at the cut without drifting, and stands."""
    f0, f1, f2, f3 = (f.astype(np.float32) for f in frames)
    across = float(np.abs(f0 - f3).mean())
    if across < max(min_diff, 0.3 * float(np.abs(f1 - f2).mean())):
        return True  # the shot before and after is the same; only the frames at the cut differ: a flash
    m0, m1, m2, m3 = (float(f.mean()) for f in (f0, f1, f2, f3))
    if min(m0, m3) < 2.0:
        matched = True  # a fade from or to black: only the brightness ramp can tell
    else:
        matched = float(np.abs(f0 - f3 * (m0 / m3)).mean()) < min_diff
    return matched and abs(m1 - m0) + abs(m3 - m2) >= abs(m2 - m1)


def confirm_cuts(cuts: list[int], frame_at, num_frames: int, min_diff: float) -> list[int]:
    """The cuts that are neither a flash nor a fade (:func:`not_a_cut`); ``frame_at(i)`` gives analysis
    frame ``i``."""
    if min_diff <= 0:
        return list(cuts)
    return [c for c in cuts if not not_a_cut(cut_frames(c, frame_at, num_frames), min_diff)]


def cut_frames(c: int, frame_at, num_frames: int) -> list[np.ndarray]:
    w, last = CUT_CONFIRM_WINDOW, num_frames - 1
    return [frame_at(min(last, max(0, i))) for i in (c - w - 1, c - 1, c, c + w)]


# --------------------------------------------------------------------------------------------- per clip
def score_clip(frames: np.ndarray, cfg: CurateConfig, timers: dict[str, float] | None = None) -> dict[str, Any]:
    """Every score of one clip (a pure function of its frames and the config's analysis settings);
    ``timers`` (name -> seconds) is credited with each score's cost."""
    import time

    clock: dict[str, float] = timers if timers is not None else {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            clock[name] = clock.get(name, 0.0) + time.perf_counter() - t0

    small = resize_frames(frames, cfg.analysis_size)
    picked = small[sample_indices(len(small), cfg.max_analysis_frames)]
    sharp, lap_var = timed("sharpness", sharpness, picked)
    flow, diff = timed("motion", motion, small, cfg.motion_pairs)
    return {
        "brightness": round(timed("brightness", brightness, picked), 4),
        "sharpness": round(sharp, 5),
        "laplacian_var": round(lap_var, 3),
        "motion": round(flow, 4),
        "frame_diff": round(diff, 4),
        "border_fraction": round(timed("borders", border_fraction, picked, cfg.border_max_level), 4),
        "subtitle": round(timed("subtitles", subtitle_score, picked, cfg.text_band_fraction), 5),
        "watermark": round(timed("watermark", watermark_score, picked, cfg.watermark_corner_fraction), 5),
        "saturation": round(timed("saturation", saturation, picked), 4),
    }


def decide(scores: dict[str, Any], cfg: CurateConfig) -> list[str]:
    """Drop reasons of one clip from its scores (every reason that applies, not only the first)."""
    reasons = []
    if scores["brightness"] < cfg.dark_max_luma:
        reasons.append("dark")
    if scores["sharpness"] < cfg.blur_min_sharpness:
        reasons.append("blurred")
    if scores["motion"] < cfg.motion_min:
        reasons.append("static")
    if scores["motion"] > cfg.motion_max:
        reasons.append("too_fast")
    if scores["border_fraction"] >= cfg.border_min_fraction:
        reasons.append("black_borders")
    if scores["subtitle"] > cfg.subtitle_threshold:
        reasons.append("subtitles")
    if scores["watermark"] > cfg.watermark_threshold:
        reasons.append("watermark")
    if scores["saturation"] > cfg.saturation_max:
        reasons.append("oversaturated")
    return reasons
