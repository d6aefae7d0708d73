"""The batched clip scores of components.curate.filters equal straightforward per-frame references.

The scores stack a clip's frames into one tall image (reflection padding between them) to filter them in
one call, and take percentiles in one partition per rank; these tests redo the same sums frame by frame
with plain OpenCV calls and demand the same bits."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from components.curate import filters


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (5, 37, 53, 3), dtype=np.uint8)
    structured = np.zeros((6, 64, 64, 3), np.uint8)
    structured[:, 16:40, 8:30] = (200, 40, 40)  # a red square moving right over a dark ramp
    structured[..., 2] += np.linspace(0, 60, 64, dtype=np.uint8)[None, None, :]
    for i in range(len(structured)):
        structured[i] = np.roll(structured[i], 2 * i, axis=1)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in structured])
    tiny = rng.integers(0, 256, (3, 8, 9, 3), dtype=np.uint8)
    low = rng.integers(0, 256, (2, 3, 40, 3), dtype=np.uint8)  # lower than the padding
    # wider than OpenCV's channel limit: a stack of grey frames [T, H, W] passed as a 3-D array would be
    # read as a W-channel image, which OpenCV 5.1 refuses beyond 128 channels
    wide = np.roll(np.repeat(structured, 5, axis=2)[:, :40], 3, axis=2)
    return [noise, structured, blurred, tiny, low, wide]


CLIPS = range(len(_clips()))


def _reference_terms(frames: np.ndarray, chan: np.ndarray, min_channel_range: float = 24.0):
    """The per-frame loop that sharpness_terms batches (the original implementation)."""
    edge, lap = [], []
    for frame, c in zip(frames, chan, strict=True):
        f = frame.astype(np.float32)
        lap.append(cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_32F, ksize=3).var())
        stack = cv2.GaussianBlur(np.dstack([c, f]), (0, 0), 0.7)
        gx = cv2.Sobel(stack, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(stack, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        channels = stack.reshape(-1, 4).T
        lo, hi = np.sort(channels, axis=1)[:, [round(0.005 * (channels.shape[1] - 1)), round(0.995 * (channels.shape[1] - 1))]].T
        mags = np.sort(cv2.magnitude(gx, gy).reshape(-1, 4).T, axis=1)
        steep = mags[:, round(0.995 * (mags.shape[1] - 1))]
        spread = hi - lo
        slopes = steep / np.maximum(spread, 1e-3)
        usable = np.concatenate([[True], spread[1:] >= min_channel_range])
        edge.append(slopes[usable].max())
    return np.array(edge, np.float32), np.array(lap, np.float32)


@pytest.mark.parametrize("index", CLIPS)
def test_sharpness_terms_equal_per_frame(index):
    frames = _clips()[index]
    chan = filters.contrast_channel(frames)
    edge, lap = filters.sharpness_terms(frames, chan)
    _, _, contrast = filters.sharpness_terms(frames, chan, with_contrast=True)
    assert contrast.shape == edge.shape and (contrast >= 0).all()
    ref_edge, ref_lap = _reference_terms(frames, chan)
    np.testing.assert_array_equal(edge, ref_edge)
    np.testing.assert_array_equal(lap, ref_lap)


@pytest.mark.parametrize("index", CLIPS)
def test_edge_filters_equal_per_frame(index):
    """sharpness's blur and gradients, batched, against cv2 frame by frame (every pixel; the magnitude to
    one unit in the last place: cv2.magnitude's rounding depends on its inputs' addresses)."""
    frames = _clips()[index]
    f, chan = frames.astype(np.float32), filters.contrast_channel(frames)
    blurred, grad = filters._edge_filters(f, chan)
    ref_blur, ref_grad = [], []
    for frame, c in zip(f, chan, strict=True):
        b = cv2.GaussianBlur(np.dstack([c, frame]), (0, 0), 0.7)
        ref_blur.append(b)
        ref_grad.append(cv2.magnitude(cv2.Sobel(b, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(b, cv2.CV_32F, 0, 1, ksize=3)))
    np.testing.assert_array_equal(blurred, np.stack(ref_blur))
    np.testing.assert_array_max_ulp(grad, np.stack(ref_grad), maxulp=1)
    # the Sobels themselves, to the bit (the chain blur -> Sobel across the padding rows)
    pad = 4
    tall = cv2.GaussianBlur(filters.stack_rows(np.concatenate([chan[..., None], f], axis=-1), pad), (0, 0), 0.7)
    for dx, dy in ((1, 0), (0, 1)):
        got = filters.unstack_rows(cv2.Sobel(tall, cv2.CV_32F, dx, dy, ksize=3), len(f), pad)
        np.testing.assert_array_equal(got, np.stack([cv2.Sobel(b, cv2.CV_32F, dx, dy, ksize=3) for b in ref_blur]))


@pytest.mark.parametrize("index", CLIPS)
def test_stacked_filters_equal_per_frame(index):
    frames = _clips()[index]
    f = frames.astype(np.float32)
    chains = [
        (4, lambda x: cv2.Sobel(cv2.GaussianBlur(x, (0, 0), 0.7), cv2.CV_32F, 0, 1, ksize=3)),
        (4, lambda x: cv2.GaussianBlur(x, (0, 0), 1.0)),
        (1, lambda x: cv2.Laplacian(x, cv2.CV_32F, ksize=3)),
    ]
    for pad, fn in chains:
        np.testing.assert_array_equal(filters.filter_stacked(f, pad, fn), np.stack([fn(x) for x in f]))
    grey = filters._gray_frames(frames)
    np.testing.assert_array_equal(grey, np.stack([cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in frames]))
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    tophat = np.stack([cv2.morphologyEx(g, cv2.MORPH_TOPHAT, k) for g in grey]) > 30.0
    np.testing.assert_array_equal(filters.stroke_masks(frames, 3), tophat)
    proj = filters.contrast_channel(frames, only=np.arange(0, len(frames), 2))
    assert proj.shape == (len(range(0, len(frames), 2)), *frames.shape[1:3])


def test_padding_is_needed():
    """The check can fail: without padding between the frames, the frames' edge rows differ."""
    f = _clips()[0].astype(np.float32)

    def blur(x):
        return cv2.GaussianBlur(x, (0, 0), 0.7)

    unpadded = blur(f.reshape(-1, *f.shape[2:])).reshape(f.shape)
    assert not np.array_equal(unpadded, np.stack([blur(x) for x in f]))


def test_rank_equals_sorted_order_statistics():
    rng = np.random.default_rng(3)
    for x in (rng.integers(0, 256, (7, 301), dtype=np.uint8), rng.normal(size=(5, 4, 999)).astype(np.float32)):
        n = x.shape[-1]
        got = filters.rank(x, [0.5, 50, 99.5], axis=-1)
        ks = [round(q / 100 * (n - 1)) for q in (0.5, 50, 99.5)]
        np.testing.assert_array_equal(got, np.sort(x, axis=-1)[..., ks])
        assert got.dtype == x.dtype
        assert filters.rank(x, 95) == float(np.sort(x, axis=None)[round(0.95 * (x.size - 1))])


def test_scores_match_per_frame_formulas():
    for frames in _clips():
        means = [float(frames[..., k].mean(dtype=np.float64)) for k in range(3)]
        np.testing.assert_array_equal(filters._channel_means(frames), means)
        hsv = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2HSV)[..., 1].mean() for f in frames]
        assert filters.saturation(frames) == float(np.mean(hsv) / 255.0)
        assert np.array_equal(filters.brightest_channel(frames), frames.max(axis=-1))
        hashes = np.stack([filters.phash(frames[i]) for i in filters.sample_indices(len(frames), 5)])
        np.testing.assert_array_equal(filters.clip_hashes(frames), hashes)


@pytest.mark.parametrize("index", CLIPS)
def test_every_score_runs_on_any_frame_size(index):
    """score_clip on each clip (a 320-px-wide one among them), and motion's frame difference equals the
    mean absolute luma change of its pairs computed frame by frame."""
    from t2v.config import CurateConfig

    frames = _clips()[index]
    cfg = CurateConfig(analysis_size=max(32, *frames.shape[1:3]))
    scores = filters.score_clip(frames, cfg)
    assert all(np.isfinite(v) for v in scores.values()), scores
    _, diff = filters.motion(frames, max_pairs=len(frames))
    grey = filters._gray_frames(frames).astype(np.int16)
    assert diff == pytest.approx(float(np.mean([np.abs(grey[i + 1] - grey[i]).mean() for i in range(len(grey) - 1)])))


@pytest.mark.parametrize("n", [511, 512, 4096, 36864])
def test_rank_by_sampled_bounds_equals_a_partition_on_rows_that_mislead_the_sample(n):
    """The sampled bounds of filters._select_ranks give the partition's value on every kind of row:
    smooth, a few flat colours (ties: the whole-row fallback), mostly one value with a sparse tail, sorted
    (the sample's positions are not spread over the values), with NaN and infinities."""
    rng = np.random.default_rng(n)
    rows = [
        rng.random((3, n)).astype(np.float32),
        np.round(rng.random((3, n)) * 3).astype(np.float32),
        np.where(rng.random((4, n)) < 0.97, 0.0, rng.random((4, n))).astype(np.float32),
        np.sort(rng.normal(size=(2, n)), axis=1),
        np.zeros((2, n), np.float32),
    ]
    special = rng.random((3, n)).astype(np.float32)
    special[0, ::7] = np.nan
    special[1, : n // 40] = np.inf
    special[2, : n // 40] = -np.inf
    rows.append(special)
    rows += [rng.integers(0, 256, (5, n), dtype=np.uint8), np.full((2, n), 7, np.uint8),  # (8-bit: histograms)
             np.where(rng.random((3, n)) < 0.9, 0, 255).astype(np.uint8)]
    for x in rows:
        for qs in ([0.5, 99.5], [50], [90, 95], [0, 100]):
            ks = [round(q / 100 * (n - 1)) for q in qs]
            want = np.stack([np.partition(x, k, axis=1)[:, k] for k in ks], axis=1)
            got = filters.rank(x, qs, axis=1)
            np.testing.assert_array_equal(got, want)
            assert got.dtype == x.dtype
    # and through another axis of a 3-D array, as sharpness and the border test use it
    x = rng.random((4, n, 3)).astype(np.float32)
    np.testing.assert_array_equal(filters.rank(x, [0.5, 99.5], axis=1), np.sort(x, axis=1)[:, [round(0.005 * (n - 1)), round(0.995 * (n - 1))], :])
