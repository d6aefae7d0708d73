"""Clip quality scores: each one a pure function of a clip's frames (RGB ``uint8 [T, H, W, 3]``).

:func:`score_clip` resizes a clip to the analysis size and computes every score; :func:`decide` turns the
scores into drop reasons with the thresholds of :class:`~t2v.config.curate.CurateConfig`. The
reasons use the world's defect names (``static``, ``too_fast``, ``dark``, ``blurred``, ``subtitles``,
``watermark``, ``black_borders``, ``duplicate``) so that each filter can be scored against the planted
truth; ``oversaturated``, ``too_short`` and ``concept_cap`` have no planted counterpart.

None of these functions sees metadata: they decide from pixels only.
"""

from __future__ import annotations

import functools
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
    """The ``q``-th percentile(s) (0..100) by nearest rank: the ``k``-th smallest value along ``axis``
    with ``k = round(q / 100 * (n - 1))``, exactly what sorting gives (within one sample of
    ``np.percentile``, without its per-call overhead). Found by :func:`_select_ranks`: a sample brackets
    each rank and only the values between the brackets are sorted."""
    x = np.asarray(values)
    if axis is None:
        x, axis = x.reshape(-1), 0
    n = x.shape[axis]
    qs = [q] if np.isscalar(q) else list(q)
    ks = [min(n - 1, max(0, int(round(v / 100.0 * (n - 1))))) for v in qs]
    rows = np.moveaxis(x, axis, -1)
    picked = _select_ranks(rows.reshape(-1, n), ks).reshape(len(ks), *rows.shape[:-1])  # [K, ...]
    part = np.moveaxis(picked, 0, axis) if x.ndim > 1 else picked.reshape(len(ks))
    if np.isscalar(q):
        part = np.take(part, 0, axis=axis)
        return float(part) if part.ndim == 0 else part
    return part


#: Values per row sampled to bracket a rank (:func:`_select_ranks`): one in ``RANK_SAMPLE_EVERY``, at
#: fixed pseudo-random positions (an even grid would alias with a picture's rows and columns).
RANK_SAMPLE_EVERY = 16
RANK_MIN_LENGTH = 512  # shorter rows are partitioned whole


@functools.cache
def _sample_positions(n: int) -> np.ndarray:
    count = max(32, n // RANK_SAMPLE_EVERY)
    return np.sort(np.random.default_rng(n).choice(n, size=count, replace=False))


def _select_ranks(x: np.ndarray, ks: list[int]) -> np.ndarray:
    """The ``k``-th smallest value of each row of ``x [R, N]`` for each ``k`` in ``ks``: ``[len(ks), R]``,
    equal to ``np.partition(x, k, axis=1)[:, k]`` (NaN after every number, as there).

    A partition reads and moves every value once per rank (~5-9 ns a value here; :func:`sharpness`
    takes three ranks of four channels of every analysis frame). Instead, for floating-point rows, a
    fixed sample of each row gives bounds around where the rank should fall (the sample's own order
    statistics a few standard deviations either side); one pass takes the values between the bounds and
    counts those below, and if the rank lies among them (it nearly always does) it is read off after
    sorting only those few (for a rank in the tail, one bound and one comparison). Where it does not (a
    row whose sample misled), or the candidates are many (ties: a picture of a few flat colours), that row
    is partitioned whole. The result is the same either way. 8-bit rows (pictures) are read off their
    histograms (one count of the row for every rank: 1.4-2.5x a partition here); other integer rows are
    partitioned."""
    r, n = x.shape
    out = np.empty((len(ks), r), dtype=x.dtype)
    if x.dtype == np.uint8 and n >= RANK_MIN_LENGTH:  # 256 levels: each row's histogram, counted once
        cum = np.bincount((x + (np.arange(r, dtype=np.intp) * 256)[:, None]).ravel(), minlength=r * 256)
        cum = cum.reshape(r, 256).cumsum(axis=1)
        for i, k in enumerate(ks):
            out[i] = (cum > k).argmax(axis=1)
        return out
    if n < RANK_MIN_LENGTH or x.dtype.kind != "f":
        wide = x.astype(np.uint16 if x.dtype == np.uint8 else np.int16) if x.dtype in (np.uint8, np.int8) else x
        for i, k in enumerate(ks):
            out[i] = np.partition(wide, k, axis=1)[:, k]
        return out
    pos = _sample_positions(n)
    s = len(pos)
    sample = np.sort(x[:, pos], axis=1)  # NaN last
    for i, k in enumerate(ks):
        p = (k + 0.5) / n
        margin = 4.0 * np.sqrt(s * p * (1.0 - p)) + 2.0
        lo_at, hi_at = int(np.floor(p * s - margin)), int(np.ceil(p * s + margin))
        if lo_at <= 0:  # the low tail: everything up to the upper bound (NaN is not <= anything)
            inside = x <= sample[:, min(hi_at, s - 1), None]
            below = np.zeros(r, np.int64)
        elif hi_at >= s - 1:  # the high tail: everything from the lower bound, NaN included (sorted last)
            inside = ~(x < sample[:, lo_at, None])
            below = None
        else:
            inside = (x >= sample[:, lo_at, None]) & (x <= sample[:, hi_at, None])
            below = np.count_nonzero(x < sample[:, lo_at, None], axis=1)
        at = np.flatnonzero(inside)  # row by row, in order (a boolean index is ~3x slower)
        row_of = at // n
        count = np.bincount(row_of, minlength=r)
        if below is None:
            below = n - count
        within = k - below
        ok = (within >= 0) & (within < count) & (count <= max(64, n // 4))
        if ok.any():
            if not ok.all():
                at, row_of = at[ok[row_of]], row_of[ok[row_of]]
            size = np.where(ok, count, 0)
            padded = np.full((r, int(size.max())), np.nan, dtype=x.dtype)  # NaN: sorted after every number
            starts = np.cumsum(size) - size
            padded[row_of, np.arange(len(at)) - starts[row_of]] = x.reshape(-1)[at]
            padded.sort(axis=1)
            out[i, ok] = padded[ok, within[ok]]
        if not ok.all():
            out[i, ~ok] = np.partition(x[~ok], k, axis=1)[:, k]
    return out


def _as_image(frames: np.ndarray) -> np.ndarray:
    """``[..., H, W, C]`` frames as one tall image ``[N * H, W, C]`` (contiguous): a per-pixel OpenCV
    conversion then runs once for all the frames."""
    return np.ascontiguousarray(frames).reshape(-1, *frames.shape[-2:])


def brightest_channel(frames: np.ndarray) -> np.ndarray:
    """Each pixel's largest of R, G, B (HSV value), uint8 ``[..., H, W]`` (``max(axis=-1)`` reduces a
    length-3 axis an element at a time; splitting the planes and taking their maxima is twenty times
    faster)."""
    if frames.dtype != np.uint8:
        return np.maximum(np.maximum(frames[..., 0], frames[..., 1]), frames[..., 2])
    r, g, b = cv2.split(_as_image(frames))
    return cv2.max(cv2.max(r, g), b).reshape(frames.shape[:-1])


def _channel_means(frames: np.ndarray) -> np.ndarray:
    """Mean R, G, B of ``[..., 3]`` uint8 frames (float64 ``[3]``): integer sums (exact, whatever the
    order of summation) over the pixel count."""
    if frames.dtype != np.uint8:
        return np.array([float(frames[..., k].mean(dtype=np.float64)) for k in range(3)])
    return np.array(cv2.sumElems(_as_image(frames))[:3]) / (frames.size // 3)


def _planes(frames: np.ndarray) -> np.ndarray:
    """Single-channel ``[..., H, W]`` frames as one tall 2-D image ``[N * H, W]`` (contiguous). OpenCV reads
    a 3-D array as ``[H, W, channels]``: a stack of grey frames would be taken for a ``W``-channel image,
    which OpenCV 5.1 refuses beyond 128 channels (a 256-px-wide analysis frame)."""
    return np.ascontiguousarray(frames).reshape(-1, frames.shape[-1])


def _gray_u8(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _gray_frames(frames: np.ndarray) -> np.ndarray:
    """8-bit grey of ``[T, H, W, 3]`` frames, ``[T, H, W]``: one conversion for all of them."""
    t, h, w, _ = frames.shape
    return cv2.cvtColor(_as_image(frames), cv2.COLOR_RGB2GRAY).reshape(t, h, w)


def stack_rows(frames: np.ndarray, pad: int, border: float | None = None) -> np.ndarray:
    """``[T, H, W(, C)]`` frames one above the other as one tall image ``[T * (H + 2 pad), W(, C)]``, each
    between ``pad`` rows of its own reflection (``BORDER_REFLECT_101``, OpenCV's default border, which is
    numpy's ``reflect``), or of the constant ``border``. See :func:`filter_stacked`."""
    t, h = frames.shape[:2]
    out = np.empty((t, h + 2 * pad, *frames.shape[2:]), frames.dtype)
    out[:, pad : pad + h] = frames
    if border is not None:
        out[:, :pad] = border
        out[:, pad + h :] = border
        return out.reshape(t * (h + 2 * pad), *frames.shape[2:])
    return reflect_rows(out.reshape(t * (h + 2 * pad), *frames.shape[2:]), t, pad)


def reflect_rows(tall: np.ndarray, t: int, pad: int) -> np.ndarray:
    """Refill (in place) the padding rows of a tall image of ``t`` frames (:func:`stack_rows`) with the
    reflection of each frame's rows; returns ``tall``. Between two filters, this gives the second one
    exactly the border it sees on a frame alone: the first filter's own padding rows are its values
    there, which need not be the bitwise reflection of its values inside the frame."""
    out = tall.reshape(t, -1, *tall.shape[1:])
    h = out.shape[1] - 2 * pad
    frames = out[:, pad : pad + h]
    if pad < h:
        out[:, :pad] = frames[:, 1 : pad + 1][:, ::-1]
        out[:, pad + h :] = frames[:, h - 1 - pad : h - 1][:, ::-1]
    else:  # a frame lower than the padding: reflected back and forth
        out[:] = np.pad(frames, ((0, 0), (pad, pad)) + ((0, 0),) * (frames.ndim - 2), mode="reflect")
    return tall


def unstack_rows(tall: np.ndarray, t: int, pad: int) -> np.ndarray:
    """The frames ``[T, H, W(, C)]`` (a view) of a tall image made by :func:`stack_rows`."""
    rows = tall.shape[0] // t
    return tall.reshape(t, rows, *tall.shape[1:])[:, pad : rows - pad]


def filter_stacked(frames: np.ndarray, pad: int, fn, border: float | None = None) -> np.ndarray:
    """``fn`` (an OpenCV filter, or a chain of them, whose combined radius is at most ``pad`` rows)
    applied to every frame of ``[T, H, W(, C)]`` in one call: the frames are stacked into one tall image
    (:func:`stack_rows`), each between ``pad`` rows of its own reflection, and the result is cropped back
    to ``[T, H, W(, C)]``. A frame's pixels then see exactly the neighbours that the filter's default
    border gives them on the frame alone (for a chain, the padding rows of the intermediate result are the
    reflection of its frame rows too, symmetric kernels being summed in pairs), so the result equals ``fn``
    frame by frame. For a chain, refilling the padding between the filters (:func:`reflect_rows`) makes
    it equal to the bit. ``border`` pads with a constant instead (the neutral value of an erosion or
    a dilation, whose default border ignores the pixels outside the frame)."""
    return unstack_rows(fn(stack_rows(frames, pad, border)), len(frames), pad)


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
    if samples.dtype == np.uint8:  # integer sums and products: exact in float64, in any order
        total = np.array(cv2.sumElems(samples.reshape(1, -1, 3))[:3])
        gram = cv2.mulTransposed(samples, True, dtype=cv2.CV_64F)
    else:
        x = samples.astype(np.float64)
        total, gram = x.sum(axis=0), x.T @ x
    x = samples
    mean = total / len(x)
    cov = gram / len(x) - np.outer(mean, mean)  # the colour covariance, by one matrix product
    _, vecs = np.linalg.eigh(cov * len(x) / max(len(x) - 1, 1) + np.eye(3) * 1e-6)
    return vecs[:, -1].astype(np.float32)


def principal_projection(frames: np.ndarray, sample: int = 4) -> tuple[np.ndarray, float]:
    """The clip's principal colour axis (:func:`_principal_axis` of ``sample`` evenly spaced frames) and
    the mean of those frames' projection on it: :func:`contrast_channel` is the projection less that."""
    pick = frames[sample_indices(len(frames), sample)]
    axis = _principal_axis(pick.reshape(-1, 3))
    return axis, float(_channel_means(pick) @ axis)


def contrast_channel(
    frames: np.ndarray, sample: int = 4, only: np.ndarray | None = None, projection: tuple[np.ndarray, float] | None = None
) -> np.ndarray:
    """Project RGB frames onto the clip's principal colour axis: float32 ``[T, H, W]`` (or the frames at
    indices ``only``), zero-mean over the sampled frames, in RGB units.

    Luma misses an object whose colour differs from the background in hue but not in brightness (a red
    square on a brown background), and a dark clip has little luma contrast. The first principal
    component of the clip's pixel colours is the direction in which its content differs most, whatever
    the brightness and the hue, so motion and sharpness measured on it (both scale-free) depend on neither.
    ``projection`` is the clip's :func:`principal_projection` where the caller has it already.
    """
    axis, offset = projection if projection is not None else principal_projection(frames, sample)
    chosen = frames if only is None else frames[only]
    # one projection of all the frames (stacked into one tall image): a per-pixel operation
    projected = cv2.transform(_as_image(chosen).astype(np.float32), axis.reshape(1, 3))
    return projected.reshape(chosen.shape[:3]) - offset


def sharpness(frames: np.ndarray, min_channel_range: float = 24.0) -> tuple[float, float, float]:
    """(edge sharpness, variance of the Laplacian), each averaged over frames, and the contrast the edge
    sharpness is measured against: the median over frames of the principal channel's range (0.5th to
    99.5th percentile, in RGB units). Below a few tens of levels there is no edge to judge: the slope is
    the codec's ripple over a range of a few levels (a dark or flat picture), and the score means nothing.

    The variance of the Laplacian of the luma is the classic blur score, but it scales with contrast (a
    dark or low-contrast clip looks blurred) and with noise. The edge sharpness is contrast-free: the
    steepest gradients (99.5th percentile, per pixel) of a channel divided by the channel's range; a step
    edge blurred by a Gaussian of sigma ``s`` has a slope of about range / (2.5 s), so the score is
    ~0.4 / s (sharp edges: ~0.5 or more). The channel is the clip's principal colour channel
    (:func:`contrast_channel`) or, where that is larger, any one of R, G, B with a range of at least
    ``min_channel_range``: in a picture of wide smooth colour ramps (a sky, a gradient, a test pattern) the
    principal channel is the ramp, whose range is large and whose slope is small, while the sharp borders
    between the colours stand out in the channel that changes across them. Blur softens every channel.

    The frames go through each filter a few at a time (:func:`filter_stacked`: the same values as frame
    by frame, in fewer calls; a chunk of ``SHARPNESS_CHUNK`` pixels stays in the CPU cache, a whole clip's
    tall image does not and is slower); the percentiles are then taken for the whole clip at once
    (:func:`rank` of its ``[channels, frames, pixels]`` arrays).
    """
    t, h, w, _ = frames.shape
    chan = contrast_channel(frames)
    step = max(1, SHARPNESS_CHUNK // (h * w))
    laps, blurs, grads = zip(*(_sharpness_maps(frames[s : s + step], chan[s : s + step]) for s in range(0, t, step)), strict=True)
    lap, blurred, grad = np.concatenate(laps), np.concatenate(blurs, axis=1), np.concatenate(grads, axis=1)
    edge, contrast = _edge_sharpness(blurred, grad, min_channel_range)
    return float(np.mean(edge.astype(np.float64))), float(np.mean(lap.astype(np.float64))), float(np.median(contrast.astype(np.float64)))


SHARPNESS_CHUNK = 1 << 14  # pixels per chunk of frames in sharpness (four 64x64 frames)


def sharpness_terms(
    frames: np.ndarray, chan: np.ndarray, min_channel_range: float = 24.0, with_contrast: bool = False
) -> tuple[np.ndarray, ...]:
    """Per frame of ``[T, H, W, 3]`` (with its :func:`contrast_channel` ``chan``), the edge sharpness and
    the variance of the Laplacian that :func:`sharpness` averages: float32 ``[T]`` each (and, with
    ``with_contrast``, the principal channel's range)."""
    lap, blurred, grad = _sharpness_maps(frames, chan)
    edge, contrast = _edge_sharpness(blurred, grad, min_channel_range)
    return (edge, lap, contrast) if with_contrast else (edge, lap)


def _sharpness_maps(frames: np.ndarray, chan: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-pixel part of :func:`sharpness_terms`: the variance of each frame's Laplacian (``[T]``) and
    the blurred channels and their gradient magnitudes, ``[4, T, H * W]`` each (a frame's channel as a
    row: the principal channel, then R, G, B)."""
    t, h, w, _ = frames.shape
    f = frames.astype(np.float32)
    grey = cv2.cvtColor(_as_image(f), cv2.COLOR_RGB2GRAY).reshape(t, h, w)
    lap = filter_stacked(grey, 1, lambda x: cv2.Laplacian(x, cv2.CV_32F, ksize=3)).var(axis=(1, 2))
    blurred, grad = _edge_filters(f, chan)

    def by_channel(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(3, 0, 1, 2)).reshape(4, t, h * w)

    return lap, by_channel(blurred), by_channel(grad)


def _edge_sharpness(blurred: np.ndarray, grad: np.ndarray, min_channel_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, from :func:`_sharpness_maps`: the edge sharpness (steepest slope over the range, in the
    best usable channel) and the principal channel's range, ``[T]`` each."""
    t = blurred.shape[1]
    lo, hi = rank(blurred, [0.5, 99.5], axis=2).transpose(2, 1, 0)  # [T, 4] each
    spread = hi - lo
    # the slope is the gradient over 8 (the Sobel kernel's weight), a power of two: dividing the
    # percentile gives the same numbers as dividing every gradient
    steep = rank(grad, 99.5, axis=2).T / 8.0
    slopes = steep / np.maximum(spread, 1e-3)
    usable = np.concatenate([np.ones((t, 1), bool), spread[:, 1:] >= min_channel_range], axis=1)
    return np.where(usable, slopes, -np.inf).max(axis=1), spread[:, 0]


def _edge_filters(f: np.ndarray, chan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The filters of :func:`sharpness_terms` on float32 RGB frames ``f`` and their contrast channel:
    (blurred channels, gradient magnitude without the Sobel's 1/8), ``[T, H, W, 4]`` each. The principal
    channel and R, G, B side by side: one filter pass for the four (interleaved, as one 4-channel image:
    filtering the planes apart rounds differently), all the frames stacked (:func:`stack_rows`). The blur
    and the Sobels equal their frame-by-frame results to the bit; ``cv2.magnitude`` itself rounds some
    pixels one unit in the last place up or down depending on where its inputs lie in memory (two calls on
    copies of the same arrays can differ), frame by frame as much as stacked."""
    pad = 4  # the blur's radius (3 at sigma 0.7); the Sobel's (1) is within it
    blurred = cv2.GaussianBlur(stack_rows(np.concatenate([chan[..., None], f], axis=-1), pad), (0, 0), 0.7)
    t = len(f)
    reflect_rows(blurred, t, pad)  # the Sobel's border: the blurred frame's reflection, as frame by frame
    gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3)
    return unstack_rows(blurred, t, pad), unstack_rows(cv2.magnitude(gx, gy), t, pad)


CAMERA_PAIRS = 16  # frame pairs per clip whose global shift is measured
CAMERA_FLOOR = 0.2  # pixels per frame: a smaller global shift counts as none
LIGHT_STEP = 24.0  # grey levels: a larger change of mean luma between two frames is a change of light


def _camera_shift(
    frames: np.ndarray, i: int, window: np.ndarray, gap: int = 4, middle: dict[int, np.ndarray] | None = None
) -> float:
    """The camera's motion between frames ``i`` and ``i + 1`` in pixels: the global translation found by
    phase correlation (robust to large shifts, which Farneback's local search underestimates, and to
    smooth shading that has no edge to track), on the middle half of the rows: burnt-in subtitles and
    logos sit in the top and bottom quarters, and a static overlay would otherwise pin the estimate to 0.
    A shift under a pixel is measured again over ``gap`` frames, and that measure is the one kept: a
    slow pan adds up over the frames, while phase correlation's sub-pixel estimate of one step is biased
    towards 0 and, on a still shot, is the sensor noise's (0.1-0.5 px a frame on the world's noisy still
    scenes), which does not add up. ``middle`` holds those rows of the grey frames (float32), by frame
    index."""
    h = frames.shape[1]
    rows = slice(h // 4, h - h // 4)

    cache = middle if middle is not None else {}

    def shift(j: int) -> float:
        # copies: phaseCorrelate applies the window to its inputs in place
        a, b = (
            cache[k].copy() if k in cache else _gray_u8(frames[k])[rows].astype(np.float32) for k in (i, j)
        )
        (dx, dy), response = cv2.phaseCorrelate(a, b, window)
        return float(np.hypot(dx, dy)) if response >= 0.1 else None

    one = shift(i + 1)
    j = min(len(frames) - 1, i + gap)
    if (one is None or one < 1.0) and j > i + 1:  # a slow pan, measured over a few frames
        longer = shift(j)
        if longer is not None:
            return longer / (j - i)
    return one or 0.0


def motion(frames: np.ndarray, max_pairs: int = 8) -> tuple[float, float]:
    """(optical-flow motion, frame difference) between consecutive frames.

    Motion is the 90th percentile of the Farneback normal flow (the flow along the image gradient) over
    the textured pixels (edges, where flow is defined) of the lightly smoothed :func:`contrast_channel`, in
    percent of the frame width per frame: a small object moving fast is not averaged away by a flat background or by static overlays
    (subtitles, logos), and a clip where nothing textured moves scores ~0. The camera's motion, the
    upper quartile of the global translations found by phase correlation, takes over where it is
    larger: a whip pan (a fifth of the width per frame is beyond Farneback's reach) or a pan over smooth
    shading. Light is not motion: a pair across a flash (mean luma jumping more than ``LIGHT_STEP``) is
    left out, and in a fade each pair's second frame is brought to the first one's light before the flow
    is measured (on a smooth ramp, brighter reads as moved). The frame
    difference is the mean absolute change of the (8-bit) luma, 0..255. Both are 0 for a single frame.

    Every frame used is converted (to grey, to the contrast channel) once, all in one call, and the
    filters run on all the pairs at once (:func:`filter_stacked`).
    """
    t, h, w, _ = frames.shape
    if t < 2:
        return 0.0, 0.0
    # Pairs drawn at random (seeded by the length, so deterministic): evenly spaced pairs can alias with
    # periodic motion (an object that moves a whole pixel every few frames looks still at that period).
    rng = np.random.default_rng(t)
    starts = np.sort(rng.choice(t - 1, size=min(max_pairs, t - 1), replace=False))
    # The camera shift is cheap (a phase correlation of two small frames): measured on more pairs than
    # Farneback, so that its median is steady.
    more = np.sort(rng.choice(t - 1, size=min(CAMERA_PAIRS, t - 1), replace=False))
    needed = np.unique(np.concatenate([starts, starts + 1]))
    first, second = np.searchsorted(needed, starts), np.searchsorted(needed, starts + 1)
    projection = principal_projection(frames)
    chan = contrast_channel(frames, only=needed, projection=projection)  # [len(needed), H, W]
    lo, hi = rank(chan[first], [0.5, 99.5])
    scale = 200.0 / max(float(hi - lo), 1e-3)
    # grey frames: the Farneback pairs' and the camera pairs' (each pair's next frame and the one `gap` on)
    used = np.unique(np.concatenate([needed, more, more + 1, np.minimum(t - 1, more + 4)]))
    grey = _gray_frames(frames[used])
    at = {j: k for k, j in enumerate(used.tolist())}
    middle_rows = grey[:, h // 4 : h - h // 4].astype(np.float32)
    middle = {j: middle_rows[k] for j, k in at.items()}
    # A pair across a change of light (a camera flash, a strobe, a cut to white) is not a measure of
    # motion: on a picture with little texture, the flow and the phase correlation between a frame and a
    # white one are whatever the noise makes of them. Such pairs are left out, unless every pair is one.
    level = {j: float(grey[k].mean()) for j, k in at.items()}

    def lit(i: int, j: int) -> bool:
        return abs(level[i] - level[j]) <= LIGHT_STEP

    starts_ok = [p for p, i in enumerate(starts.tolist()) if lit(i, i + 1)] or list(range(len(starts)))
    more_ok = [i for i in more.tolist() if lit(i, i + 1)] or more.tolist()
    window = cv2.createHanningWindow((w, h - 2 * (h // 4)), cv2.CV_32F)
    shifts = [_camera_shift(frames, i, window, middle=middle) for i in more_ok]
    # A fade scales the colours from one frame to the next, and on smooth shading a ramp made brighter
    # looks like the ramp moved: each pair's second frame is brought to the first one's light (the ratio
    # of their mean grey, held to [0.5, 2]) before the flow between them is measured.
    offset = projection[1]
    gain = np.array([min(max(level[i] / max(level[i + 1], 1.0), 0.5), 2.0) for i in starts.tolist()], np.float32)
    lit_seconds = (chan[second] + offset) * gain[:, None, None] - offset
    pairs = len(starts)
    stretched = filter_stacked(
        np.clip((np.concatenate([chan[first], lit_seconds]) - lo) * scale + 28.0, 0, 255),
        4,
        lambda x: cv2.GaussianBlur(x, (0, 0), 1.0),
    ).astype(np.uint8)
    a_frames = stretched[:pairs]
    gx = filter_stacked(a_frames, 1, lambda x: cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3))
    gy = filter_stacked(a_frames, 1, lambda x: cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3))
    grad = np.sqrt(gx * gx + gy * gy)
    textured = grad > 40.0
    pos = np.array([at[j] for j in starts.tolist()])
    # `used` holds i + 1 right after i
    diffs = cv2.absdiff(_planes(grey[pos]), _planes(grey[pos + 1])).reshape(len(pos), h, w).mean(axis=(1, 2))
    share = textured.mean(axis=(1, 2))
    mags = []
    for p in starts_ok:
        # three pyramid levels: motions beyond their reach are the camera's, which phase correlation takes
        a, b = stretched[p], stretched[pairs + p]
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        if share[p] < 0.002:
            mags.append(0.0)
            continue
        # Normal flow: the flow's component along the image gradient, the only one an edge defines (along
        # a straight edge, the flow is whatever the smoothing makes of it: the aperture problem).
        on = textured[p]
        normal = np.abs(flow[..., 0] * gx[p] + flow[..., 1] * gy[p])[on] / grad[p][on]
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


def black_bars(frames: np.ndarray, max_level: float = 16.0, tolerance: float = 0.02) -> tuple[float, float, float, float]:
    """The black bars a video shows throughout, as shares of the height (top, bottom) and width (left,
    right) of ``frames`` (``[T, H, W, 3]``: pictures sampled across the video, :func:`t2v.video.sample_pictures`),
    each 0 where there is none.

    Bars are runs of lines from opposite edges whose brightest channel stays under ``max_level`` in
    every picture (95th percentile over the line and the pictures), of about the same size on both sides
    (within ``tolerance`` of the dimension: letterbox and pillarbox are centred), each at least
    ``tolerance`` and at most 40 % of it, with picture between them (95th percentile at least
    ``2 * max_level``). A dark scene has no such thing in every picture at once; a night sky over a lit
    street is one-sided. The shares found are widened by half a percent, so the bars' soft edge (the
    scaling of the sampled pictures) is cut off too."""
    m = brightest_channel(frames)  # [T, H, W]
    shares = []
    for axis in (1, 2):  # rows (letterbox), columns (pillarbox)
        lines = np.moveaxis(m, axis, 0).reshape(m.shape[axis], -1)  # [lines, T * pixels]
        dark = rank(lines, 95, axis=1) < max_level
        n = len(dark)
        if dark.all() or not dark[0] or not dark[-1]:
            shares.append((0.0, 0.0))
            continue
        lead, trail = int(np.argmax(~dark)), int(np.argmax(~dark[::-1]))
        inner = lines[lead : n - trail]
        balanced = abs(lead - trail) <= max(1.0, tolerance * n)
        sized = min(lead, trail) >= max(1.0, tolerance * n) and max(lead, trail) <= 0.4 * n
        if balanced and sized and inner.size and rank(inner, 95) >= 2.0 * max_level:
            shares.append((lead / n + 0.005, trail / n + 0.005))
        else:
            shares.append((0.0, 0.0))
    (top, bottom), (left, right) = shares
    return top, bottom, left, right


def bright_strokes(frame: np.ndarray, kernel: int = 3, min_contrast: float = 30.0) -> np.ndarray:
    """Mask of bright structures thinner than ``kernel`` pixels (a white top-hat of the luma): the strokes
    of burnt-in text and logos. Filled shapes and flat backgrounds give nothing."""
    return stroke_masks(frame[None], kernel, min_contrast)[0]


def stroke_masks(frames: np.ndarray, kernel: int = 3, min_contrast: float = 30.0) -> np.ndarray:
    """:func:`bright_strokes` of every frame of ``[T, H, W, 3]``, bool ``[T, H, W]``, in one pass: the
    top-hat (the grey minus its opening, an erosion then a dilation) of the stacked frames, each between
    rows of the neutral value of the operation (white for the erosion, black for the dilation: what the
    default border of each stands for), so that it equals the top-hat frame by frame."""
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (kernel, kernel))
    grey = _gray_frames(frames)
    pad = kernel // 2
    eroded = filter_stacked(grey, pad, lambda x: cv2.erode(x, k), border=255)
    opened = filter_stacked(eroded, pad, lambda x: cv2.dilate(x, k), border=0)
    return cv2.subtract(_planes(grey), _planes(opened)).reshape(grey.shape) > min_contrast


def _stroke_kernel(h: int, w: int) -> int:
    return max(3, round(min(h, w) / 32) | 1)


def subtitle_score(frames: np.ndarray, band_fraction: float = 0.25) -> float:
    """Subtitles: density of bright thin strokes in the centre half of the bottom band, minus the density
    in the rest of the frame above it (median over frames). Subtitles are centred lines of light glyphs;
    a corner logo lies outside the centre half and texture everywhere cancels out."""
    _, h, w, _ = frames.shape
    band = max(2, round(h * band_fraction))
    if band >= h:  # a picture a few rows high has no band apart from the rest
        return 0.0
    k = _stroke_kernel(h, w)
    strokes = stroke_masks(frames, k)
    bottom = strokes[:, h - band :, w // 4 : w - w // 4].mean(axis=(1, 2))
    rest = strokes[:, : h - band].mean(axis=(1, 2))
    return float(np.median(bottom - rest))


def watermark_score(frames: np.ndarray, corner_fraction: float = 0.25, max_texture: float = 0.55) -> float:
    """Watermark: bright thin strokes that stay put in (nearly) every frame, in a corner. The score is the
    largest, over the four corners, of the density of persistent strokes minus the density in the middle
    part of the same rows (so a centred subtitle line that persists is not a watermark, and a static
    filled shape gives no strokes). A corner that is stroke texture through and through (more than
    ``max_texture`` of its pixels are strokes in the median frame: fine foliage, cellular patterns) scores
    0: there, strokes persist at random, and no logo can be told from the texture by strokes alone."""
    _, h, w, _ = frames.shape
    k = _stroke_kernel(h, w)
    strokes = stroke_masks(frames, k)
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
    """Mean HSV saturation in 0..1 (the mean over frames of each frame's mean; one conversion for all)."""
    hsv = cv2.cvtColor(_as_image(frames), cv2.COLOR_RGB2HSV).reshape(len(frames), -1, 3)
    return float(np.mean(hsv[..., 1].mean(axis=1)) / 255.0)


def phash(frame: np.ndarray, hash_size: int = 8) -> np.ndarray:
    """Perceptual hash of one RGB frame by ``imagehash.phash`` (DCT of a grey thumbnail, low frequencies
    against their median) as a boolean vector of ``hash_size**2`` bits."""
    import imagehash
    from PIL import Image

    return np.asarray(imagehash.phash(Image.fromarray(np.ascontiguousarray(frame)), hash_size=hash_size).hash).ravel()


def clip_hashes(frames: np.ndarray, hash_size: int = 8, count: int = 5) -> np.ndarray:
    """Perceptual hashes of ``count`` evenly spaced frames: bool ``[count', bits]``, :func:`phash` of each
    (``imagehash.phash``'s steps: the grey thumbnail by PIL, then the DCTs and the medians of all the
    frames at once)."""
    import scipy.fftpack
    from PIL import Image

    size = hash_size * 4  # imagehash's default highfreq_factor
    def thumb(frame: np.ndarray) -> np.ndarray:
        grey = Image.fromarray(np.ascontiguousarray(frame)).convert("L")
        return np.asarray(grey.resize((size, size), Image.Resampling.LANCZOS))

    pixels = np.stack([thumb(frames[i]) for i in sample_indices(len(frames), count)])
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=1), axis=2)[:, :hash_size, :hash_size]
    low = dct.reshape(len(dct), -1)
    return low > np.median(low, axis=1, keepdims=True)


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
    small = np.stack(
        [cv2.resize(np.ascontiguousarray(frames[i]), (grid, grid), interpolation=cv2.INTER_AREA)
         for i in sample_indices(len(frames), count)]
    )
    lab = cv2.cvtColor(_as_image(small).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).reshape(small.shape)
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
    sharp, lap_var, contrast = timed("sharpness", sharpness, picked)
    mean_luma, highlight = timed("brightness", brightness, picked)
    flow, diff = timed("motion", motion, small, cfg.motion_pairs)
    return {
        "brightness": round(mean_luma, 4),
        "highlight": round(highlight, 4),
        "sharpness": round(sharp, 5),
        "laplacian_var": round(lap_var, 3),
        "contrast": round(contrast, 3),
        "motion": round(flow, 4),
        "frame_diff": round(diff, 4),
        "border_fraction": round(timed("borders", border_fraction, picked, cfg.border_max_level), 4),
        "subtitle": round(timed("subtitles", subtitle_score, picked, cfg.text_band_fraction), 5),
        "watermark": round(timed("watermark", watermark_score, picked, cfg.watermark_corner_fraction), 5),
        "saturation": round(timed("saturation", saturation, picked), 4),
    }


#: Mean luma change between frames (grey levels) under which a featureless clip is a frozen picture.
STILL_FRAME_DIFF = 0.1


def decide(scores: dict[str, Any], cfg: CurateConfig) -> list[str]:
    """Drop reasons of one clip from its scores (every reason that applies, not only the first)."""
    reasons = []
    if scores["brightness"] < cfg.dark_max_luma and scores.get("highlight", 0.0) < cfg.dark_max_highlight:
        reasons.append("dark")
    if scores["sharpness"] < cfg.blur_min_sharpness and scores.get("contrast", np.inf) >= cfg.blur_min_contrast:
        reasons.append("blurred")  # (blur is judged only where there is contrast to judge it by)
    # Motion is measured on texture: where there is none (a featureless picture, which is `blurred` where
    # it has the contrast to be judged), a motion of ~0 says nothing, and only frames that do not change
    # at all (a frozen picture) make the clip static.
    featureless = scores["sharpness"] < cfg.blur_min_sharpness
    if scores["motion"] < cfg.motion_min and (not featureless or scores.get("frame_diff", 0.0) < STILL_FRAME_DIFF):
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
