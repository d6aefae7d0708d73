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


def rank(values: np.ndarray, q: float | list[float], axis: int | None = None) -> np.ndarray | float:
    """The ``q``-th percentile(s) (0..100) by nearest rank, through one ``np.partition``: what
    ``np.percentile`` gives to within one sample, without its per-call overhead (it dominates on
    analysis-size frames)."""
    x = np.asarray(values)
    if axis is None:
        x, axis = x.reshape(-1), 0
    n = x.shape[axis]
    qs = [q] if np.isscalar(q) else list(q)
    ks = [min(n - 1, max(0, int(round(v / 100.0 * (n - 1))))) for v in qs]
    part = np.take(np.partition(x, ks, axis=axis), ks, axis=axis)
    if np.isscalar(q):
        part = np.take(part, 0, axis=axis)
        return float(part) if part.ndim == 0 else part
    return part


def brightest_channel(frames: np.ndarray) -> np.ndarray:
    """Each pixel's largest of R, G, B (HSV value), uint8 ``[..., H, W]`` (``max(axis=-1)`` reduces a
    length-3 axis an element at a time; this is twenty times faster)."""
    return np.maximum(np.maximum(frames[..., 0], frames[..., 1]), frames[..., 2])


def _channel_means(frames: np.ndarray) -> np.ndarray:
    """Mean R, G, B of ``[..., 3]`` uint8 frames (float64 ``[3]``)."""
    return np.array([float(frames[..., k].mean(dtype=np.float64)) for k in range(3)])


def _gray_u8(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


# ------------------------------------------------------------------------------------------------ scores
def brightness(frames: np.ndarray) -> tuple[float, float]:
    """(mean luma, highlight), 0..255; the highlight is the 95th percentile of each pixel's brightest
    channel (HSV value: a saturated blue is bright, whatever its luma). A dark clip has a low mean *and*
    dim highlights: a black background with bright content on a twentieth of it or more (sparse bright
    cells, lit windows, colour bars on black) is not underexposed, however low its mean."""
    means = _channel_means(frames)  # the mean luma is the luma of the mean colour
    return float(0.299 * means[0] + 0.587 * means[1] + 0.114 * means[2]), float(rank(brightest_channel(frames), 95))


def _principal_axis(samples: np.ndarray) -> np.ndarray:
    """Unit vector of the largest variance of ``[N, 3]`` colour samples."""
    x = samples.astype(np.float64)
    mean = x.sum(axis=0) / len(x)
    cov = x.T @ x / len(x) - np.outer(mean, mean)  # the colour covariance, by one matrix product
    _, vecs = np.linalg.eigh(cov * len(x) / max(len(x) - 1, 1) + np.eye(3) * 1e-6)
    return vecs[:, -1].astype(np.float32)


def contrast_channel(frames: np.ndarray, sample: int = 4, only: np.ndarray | None = None) -> np.ndarray:
    """Project RGB frames onto the clip's principal colour axis: float32 ``[T, H, W]`` (or the frames at
    indices ``only``), zero-mean over the sampled frames, in RGB units.

    Luma misses an object whose colour differs from the background in hue but not in brightness (a red
    square on a brown background), and a dark clip has little luma contrast. The first principal
    component of the clip's pixel colours is the direction in which its content differs most, whatever
    the brightness and the hue, so motion and sharpness measured on it (both scale-free) depend on neither.
    """
    pick = frames[sample_indices(len(frames), sample)]
    mean = _channel_means(pick)
    axis = _principal_axis(pick.reshape(-1, 3))
    chosen = frames if only is None else frames[only]
    offset = float(mean @ axis)
    return np.stack(
        [cv2.transform(f.astype(np.float32), axis.reshape(1, 3)).reshape(f.shape[:2]) - offset for f in chosen]
    )


def sharpness(frames: np.ndarray, min_channel_range: float = 24.0) -> tuple[float, float]:
    """(edge sharpness, variance of the Laplacian), each averaged over frames.

    The variance of the Laplacian of the luma is the classic blur score, but it scales with contrast (a
    dark or low-contrast clip looks blurred) and with noise. The edge sharpness is contrast-free: the
    steepest gradients (99.5th percentile, per pixel) of a channel divided by the channel's range; a step
    edge blurred by a Gaussian of sigma ``s`` has a slope of about range / (2.5 s), so the score is
    ~0.4 / s (sharp edges: ~0.5 or more). The channel is the clip's principal colour channel
    (:func:`contrast_channel`) or, where that is larger, any one of R, G, B with a range of at least
    ``min_channel_range``: in a picture of wide smooth colour ramps (a sky, a gradient, a test pattern) the
    principal channel is the ramp, whose range is large and whose slope is small, while the sharp borders
    between the colours stand out in the channel that changes across them. Blur softens every channel.
    """
    edge, lap = [], []
    chan = contrast_channel(frames)
    for frame, c in zip(frames, chan, strict=True):
        f = frame.astype(np.float32)
        lap.append(float(cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_32F, ksize=3).var()))
        # the principal channel and R, G, B side by side: one filter pass for the four
        stack = cv2.GaussianBlur(np.dstack([c, f]), (0, 0), 0.7)
        gx = cv2.Sobel(stack, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(stack, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        lo, hi = rank(stack.reshape(-1, 4).T, [0.5, 99.5], axis=1).T  # channels as rows: contiguous
        spread = hi - lo
        steep = rank(cv2.magnitude(gx, gy).reshape(-1, 4).T, 99.5, axis=1)
        slopes = steep / np.maximum(spread, 1e-3)
        usable = np.concatenate([[True], spread[1:] >= min_channel_range])
        edge.append(float(slopes[usable].max()))
    return float(np.mean(edge)), float(np.mean(lap))


CAMERA_PAIRS = 16  # frame pairs per clip whose global shift is measured
CAMERA_FLOOR = 0.2  # pixels per frame: a smaller global shift counts as none


def _camera_shift(
    frames: np.ndarray, i: int, window: np.ndarray, gap: int = 4, grey: dict[int, np.ndarray] | None = None
) -> float:
    """The camera's motion between frames ``i`` and ``i + 1`` in pixels: the global translation found by
    phase correlation (robust to large shifts, which Farneback's local search underestimates, and to
    smooth shading that has no edge to track), on the middle half of the rows: burnt-in subtitles and
    logos sit in the top and bottom quarters, and a static overlay would otherwise pin the estimate to 0.
    A shift under a pixel is measured again over ``gap`` frames (phase correlation's sub-pixel estimate
    is biased towards 0)."""
    h = frames.shape[1]
    rows = slice(h // 4, h - h // 4)

    cache = grey if grey is not None else {}

    def shift(j: int) -> float:
        a, b = ((cache[k] if k in cache else _gray_u8(frames[k]))[rows].astype(np.float32) for k in (i, j))
        (dx, dy), response = cv2.phaseCorrelate(a, b, window)
        return float(np.hypot(dx, dy)) if response >= 0.1 else 0.0

    one = shift(i + 1)
    j = min(len(frames) - 1, i + gap)
    if one < 1.0 and j > i + 1:  # sub-pixel shifts are underestimated: measure a slow pan over a few frames
        return max(one, shift(j) / (j - i))
    return one


def motion(frames: np.ndarray, max_pairs: int = 8) -> tuple[float, float]:
    """(optical-flow motion, frame difference) between consecutive frames.

    Motion is the 90th percentile of the Farneback normal flow (the flow along the image gradient) over
    the textured pixels (edges, where flow is defined) of the lightly smoothed :func:`contrast_channel`, in
    percent of the frame width per frame: a small object moving fast is not averaged away by a flat background or by static overlays
    (subtitles, logos), and a clip where nothing textured moves scores ~0. The camera's motion, the
    upper quartile of the global translations found by phase correlation, takes over where it is
    larger: a whip pan (a fifth of the width per frame is beyond Farneback's reach) or a pan over smooth
    shading. The frame
    difference is the mean absolute change of the (8-bit) luma, 0..255. Both are 0 for a single frame.
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
    lo, hi = rank(np.stack([chan[i] for i in starts.tolist()]), [0.5, 99.5])
    scale = 200.0 / max(float(hi - lo), 1e-3)
    mags, diffs, shifts = [], [], []
    h = frames.shape[1]
    window = cv2.createHanningWindow((w, h - 2 * (h // 4)), cv2.CV_32F)
    grey = {j: _gray_u8(frames[j]) for j in needed.tolist()}
    stretched = {
        j: cv2.GaussianBlur(np.clip((chan[j] - lo) * scale + 28.0, 0, 255), (0, 0), 1.0).astype(np.uint8)
        for j in needed.tolist()
    }
    # The camera shift is cheap (a phase correlation of two small frames): measured on more pairs than
    # Farneback, so that its median is steady.
    more = np.sort(rng.choice(t - 1, size=min(CAMERA_PAIRS, t - 1), replace=False))
    for i in more.tolist():
        shifts.append(_camera_shift(frames, i, window, grey=grey))
    for i in starts.tolist():
        a, b = stretched[i], stretched[i + 1]
        # three pyramid levels: motions beyond their reach are the camera's, which phase correlation takes
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        gx = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3)
        grad = np.sqrt(gx * gx + gy * gy)
        textured = grad > 40.0
        diffs.append(float(cv2.absdiff(grey[i], grey[i + 1]).mean()))
        if textured.mean() < 0.002:
            mags.append(0.0)
            continue
        # Normal flow: the flow's component along the image gradient, the only one an edge defines (along
        # a straight edge, the flow is whatever the smoothing makes of it: the aperture problem).
        normal = np.abs(flow[..., 0] * gx + flow[..., 1] * gy)[textured] / grad[textured]
        mags.append(rank(normal, 90))
    # The upper quartile: a pan that crosses featureless parts of a picture (sky, flat shading) shows its
    # speed only where there is structure; shifts under CAMERA_FLOOR pixels are codec noise.
    camera = float(np.percentile([x if x >= CAMERA_FLOOR else 0.0 for x in shifts], 75))
    return max(float(np.mean(mags)), camera) * 100.0 / w, float(np.mean(diffs))


def border_fraction(frames: np.ndarray, max_level: float = 16.0) -> float:
    """Share of the height (letterbox) or width (pillarbox) covered by black bars, the larger of the two.

    A bar is a run of rows (columns) from an edge whose pixels (their brightest RGB channel, 95th
    percentile over the row and the frames, so codec ripple does not matter) stay below ``max_level``.
    In a dark frame, rows of dark background are not bars, so a run counts when either the picture between
    the bars is clearly brighter (median above ``2 * max_level``), or, for dark footage (a mostly black
    picture, letterboxed), the run is what bars are and dark background is not: black (95th percentile
    under ``max_level / 2``), constant over time (mean temporal deviation under 1.5 levels) and ending on
    a sharp straight edge, the first line past it showing picture (95th percentile above
    ``2 * max_level``) in at least three frames in four; a dim ramp or a dim background reaches the bar
    level gradually or here and there, not along a line in nearly every frame.
    """
    m = brightest_channel(frames)  # [T, H, W]
    best = 0.0
    for axis in (1, 2):  # rows (letterbox), columns (pillarbox)
        by_line = np.moveaxis(m, axis, 0)  # [lines, T, pixels]
        lines = by_line.reshape(m.shape[axis], -1)  # [lines, T * pixels]
        dark = rank(lines, 95, axis=1) < max_level
        if dark.all() or not dark.any():
            continue
        n = len(dark)
        lead = int(np.argmax(~dark))  # dark lines from the first edge
        trail = int(np.argmax(~dark[::-1]))  # ... and from the last
        inner = lines[lead : n - trail]
        if inner.size and rank(inner, 50) >= 2.0 * max_level:
            best = max(best, (lead + trail) / n)
            continue
        covered = 0
        for run, edge in ((lead, lead), (trail, n - 1 - trail)):
            if run == 0:
                continue
            bar = by_line[:edge] if edge == lead else by_line[edge + 1 :]
            black = rank(bar, 95) < max_level / 2
            constant = float(bar.astype(np.float32).std(axis=1).mean()) < 1.5
            shows = float((rank(by_line[edge], 95, axis=1) >= 2 * max_level).mean()) >= 0.75
            covered += run if black and constant and shows else 0
        best = max(best, covered / n)
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


def watermark_score(frames: np.ndarray, corner_fraction: float = 0.25, max_texture: float = 0.55) -> float:
    """Watermark: bright thin strokes that stay put in (nearly) every frame, in a corner. The score is the
    largest, over the four corners, of the density of persistent strokes minus the density in the middle
    part of the same rows (so a centred subtitle line that persists is not a watermark, and a static
    filled shape gives no strokes). A corner that is stroke texture through and through (more than
    ``max_texture`` of its pixels are strokes in the median frame: fine foliage, cellular patterns) scores
    0: there, strokes persist at random, and no logo can be told from the texture by strokes alone."""
    _, h, w, _ = frames.shape
    k = _stroke_kernel(h, w)
    strokes = np.stack([bright_strokes(f, k) for f in frames])
    persistent = strokes.mean(axis=0) >= 0.8
    ch, cw = max(2, round(h * corner_fraction)), max(2, round(w * corner_fraction))
    best = 0.0
    for rows in (slice(0, ch), slice(h - ch, h)):
        band = persistent[rows]
        middle = band[:, cw : w - cw].mean() if w > 2 * cw else 0.0
        for cols in (slice(0, cw), slice(w - cw, w)):
            if float(np.median(strokes[:, rows, cols].mean(axis=(1, 2)))) > max_texture:
                continue
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


def clip_signature(frames: np.ndarray, cfg: CurateConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A clip's near-duplicate signature: (perceptual hashes, colour thumbnails, frame indices) of the
    same ``dedup_frames`` evenly spaced frames; the frame indices let :mod:`components.curate.dedup`
    align two clips in time (a re-used shot cut a few frames off)."""
    count = cfg.dedup_frames
    return (
        clip_hashes(frames, cfg.dedup_hash_size, count),
        colour_thumbnails(frames, count=count),
        sample_indices(len(frames), count),
    )


def signature_fields(sig: tuple[np.ndarray, ...]) -> dict[str, Any]:
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
    ``[count', grid, grid, 3]``, with the clip's (median frame's) mean lightness removed (a re-encode or a small brightness
    change does not move them). Used to confirm perceptual-hash candidates: a grey hash of a flat
    background with a small object is dominated by noise, colour cells are not."""
    out = []
    for i in sample_indices(len(frames), count):
        small = cv2.resize(np.ascontiguousarray(frames[i]), (grid, grid), interpolation=cv2.INTER_AREA)
        out.append(cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab))
    lab = np.stack(out)
    # the median frame's mean lightness: a frame of another shot at the clip's end does not shift the rest
    lab[..., 0] -= float(np.median(lab[..., 0].mean(axis=(1, 2))))
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
CUT_MIN_RATIO = 1.5  # a cut changes the picture this many times more than a frame step on either side


def aligned_difference(a: np.ndarray, b: np.ndarray, min_response: float = 0.2) -> float:
    """Mean absolute RGB difference of two frames once the camera's motion between them is undone: ``a``
    is shifted by the global translation phase correlation finds (when its peak is clear, at least
    ``min_response``) and the frames are compared where they overlap. A pan, however fast, leaves little;
    a cut to another shot leaves as much as without the shift."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    raw = float(np.abs(fa - fb).mean())
    h, w = a.shape[:2]
    ga, gb = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (fa, fb))
    (dx, dy), response = cv2.phaseCorrelate(ga, gb, cv2.createHanningWindow((w, h), cv2.CV_32F))
    mx, my = int(np.ceil(abs(dx))) + 1, int(np.ceil(abs(dy))) + 1
    if response < min_response or 2 * mx >= w - 4 or 2 * my >= h - 4:
        return raw
    moved = cv2.warpAffine(fa, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), flags=cv2.INTER_LINEAR)
    return min(raw, float(np.abs(moved - fb)[my : h - my, mx : w - mx].mean()))


def not_a_cut(frames: list[np.ndarray], min_diff: float) -> bool:
    """Whether a reported cut is a camera flash, a fade, fast camera motion or a picture that changes
    all the time, from the analysis frames :func:`cut_frames` gives: ``CUT_CONFIRM_WINDOW + 1`` and 2
    before the cut, just before it, at it, 1 and ``CUT_CONFIRM_WINDOW`` after. Frames are compared once the
    camera's motion between them is undone (:func:`aligned_difference`), so that a scene that pans does
    not look like another shot.

    Camera motion: the frames just before and at the cut are alike once aligned (below ``min_diff``, or
    below a third of their plain difference): a whip pan, not a cut.
    Constant change: the aligned change at the cut is less than ``CUT_MIN_RATIO`` times the change from
    one frame to the next just before it or just after it (a chaotic texture, a crowd, water): a cut
    stands out from both sides' own frame-to-frame change, as the adaptive detectors of PySceneDetect
    ask of a frame's score against its neighbours'.
    A flash: the frames before and after are alike (mean absolute RGB difference below ``min_diff``, or
    below a third of the difference at the cut itself).
    A fade: they are alike once brightness is matched, and the brightness moves gradually (drifting across
    the window at least as much as it jumps at the cut). A hard cut into a darker or brighter shot jumps
    at the cut without drifting, and stands."""
    before, at, after = (aligned_difference(frames[i], frames[i + 1]) for i in (1, 2, 3))
    frames = [frames[0], frames[2], frames[3], frames[5]]
    f0, f1, f2, f3 = (f.astype(np.float32) for f in frames)
    jump = float(np.abs(f1 - f2).mean())
    if at < max(min_diff, jump / 3.0):
        return True  # the same view, moved: camera motion
    if at < CUT_MIN_RATIO * min(before, after):
        return True  # no more change than from one frame to the next on either side: motion or chaos
    across = aligned_difference(frames[0], frames[3])
    if across < max(min_diff, 0.3 * jump):
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
    return [frame_at(min(last, max(0, i))) for i in (c - w - 1, c - 2, c - 1, c, c + 1, c + w)]


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
    mean_luma, highlight = timed("brightness", brightness, picked)
    flow, diff = timed("motion", motion, small, cfg.motion_pairs)
    return {
        "brightness": round(mean_luma, 4),
        "highlight": round(highlight, 4),
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
    if scores["brightness"] < cfg.dark_max_luma and scores.get("highlight", 0.0) < cfg.dark_max_highlight:
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
