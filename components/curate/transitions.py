"""Gradual transitions between two shots (a dissolve, a cross-fade): no two neighbouring frames differ
by a cut's change, so a cut detector sees nothing, or a cut somewhere in the middle. Each frame of one is
a mix of the outgoing shot's picture and the incoming one's, the weight rising steadily:
:func:`blend_transition` tests a window of small pictures for that, :class:`TransitionFinder` runs the test
over a stream of analysis frames (:class:`components.curate.video_pass.SceneStream` feeds it)."""

from __future__ import annotations

import cv2
import numpy as np

from components.curate.filters import aligned_difference

TRANSITION_THUMB = (16, 12)  # (width, height) of the pictures the test reads: the blend, not the detail
TRANSITION_STILL = 0.1  # mix weights within this of 0 and 1 are the shots themselves
TRANSITION_END_STEP = 0.3  # a step between the two pictures at either end, against the change: more is no shot yet
TRANSITION_MAX_RESIDUAL = 0.3  # a picture further from the line between the two shots is no mix of them
TRANSITION_MAX_STEP = 0.5  # a weight that jumps by more between neighbours is a cut, not a transition
TRANSITION_MIN_CHANGE = 12.0  # RMS RGB difference of the two shots: less is one shot changing
TRANSITION_MIN_CONTRAST = 8.0  # each shot's RGB standard deviation: a fade to or from black is no dissolve
TRANSITION_MAX_LIKENESS = 0.5  # correlation of the two shots' pictures: more is one view moving or relit
TRANSITION_MAX_DETAIL = 1.35  # the middle picture's gradient energy against a mix of the ends': more is a moved view


def _grey_gradients(frame: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.stack([cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)])


def transition_thumb(frame: np.ndarray) -> np.ndarray:
    """The picture :func:`blend_transition` reads: ``frame`` (RGB) reduced by area averaging to
    ``TRANSITION_THUMB``, as float32 values in one row."""
    w, h = TRANSITION_THUMB
    fh, fw = frame.shape[:2]
    if fw >= w and fh >= h:  # cropped to whole blocks: OpenCV's area averaging at a whole ratio is its
        # fast path, a fifth of the cost of the general one, and the few rows and columns left out at the
        # edges do not matter to a mix of two shots
        bw, bh = fw // w, fh // h
        x0, y0 = (fw - bw * w) // 2, (fh - bh * h) // 2
        frame = frame[y0 : y0 + bh * h, x0 : x0 + bw * w]
    return cv2.resize(frame, TRANSITION_THUMB, interpolation=cv2.INTER_AREA).astype(np.float32).ravel()


def blend_transition(thumbs: np.ndarray) -> tuple[int, int] | None:
    """Whether the pictures ``thumbs`` (``[n, d]``, :func:`transition_thumb`, in order) are a gradual
    transition from the shot of the first into the shot of the last: ``(first, last)``, the indices of the
    first and last mixed picture, else None. The two shots must be different pictures (their correlation
    at most ``TRANSITION_MAX_LIKENESS``): a slow zoom, pan or change of light over a smooth view also
    moves each pixel nearly along a line between the window's ends, but its ends are one view.

    Each picture is read as ``first + w (last - first)``: a dissolve moves ``w`` from 0 to 1 in steps
    none of which is a cut (at most ``TRANSITION_MAX_STEP``), with every picture close to that line (its
    distance from it, relative to the distance between the two shots, at most
    ``TRANSITION_MAX_RESIDUAL``). The window must open and close on the shots themselves (two pictures at
    each end with ``w`` within ``TRANSITION_STILL`` of 0 and of 1) and hold at least three mixed ones. Not
    a transition: two shots too alike (``TRANSITION_MIN_CHANGE``), a fade to or from a flat picture
    (``TRANSITION_MIN_CONTRAST``: black, white; the cut check handles those), a window that opens or
    closes on a picture still changing fast (the two pictures at either end further apart than
    ``TRANSITION_END_STEP`` of the change)."""
    n = len(thumbs)
    if n < 7:
        return None
    first, last = thumbs[0], thumbs[-1]
    change = last - first
    power = float(change @ change)
    if power < change.size * TRANSITION_MIN_CHANGE**2:  # RMS change
        return None
    if min(float(first.std()), float(last.std())) < TRANSITION_MIN_CONTRAST:
        return None
    a, b = first - first.mean(), last - last.mean()
    if float(a @ b) > TRANSITION_MAX_LIKENESS * float(np.sqrt((a @ a) * (b @ b))):
        return None
    for x, y in ((thumbs[0], thumbs[1]), (thumbs[-2], thumbs[-1])):
        if float((y - x) @ (y - x)) > TRANSITION_END_STEP**2 * power:
            return None
    return _mixed_span(thumbs, change, power)


def _mixed_span(thumbs: np.ndarray, change: np.ndarray, power: float) -> tuple[int, int] | None:
    """The mixing test of :func:`blend_transition` (its cheap conditions already met)."""
    rel = thumbs - thumbs[0]
    weights = rel @ change / power
    if not (weights[:2].max() <= TRANSITION_STILL and weights[-2:].min() >= 1.0 - TRANSITION_STILL):
        return None
    steps = np.diff(weights)
    if steps.max() > TRANSITION_MAX_STEP or steps.min() < -TRANSITION_STILL:
        return None
    residual = rel - weights[:, None] * change[None, :]
    if float(np.sqrt((residual * residual).sum(axis=1).max() / power)) > TRANSITION_MAX_RESIDUAL:
        return None
    mixed = np.flatnonzero((weights > TRANSITION_STILL) & (weights < 1.0 - TRANSITION_STILL))
    if len(mixed) < 3:
        return None
    return int(mixed[0]), int(mixed[-1])


class TransitionFinder:
    """Gradual transitions in a stream of analysis frames, :meth:`push` one at a time: each frame's
    picture (:func:`transition_thumb`) is kept for ``max_frames`` (the longest transition looked for,
    plus two pictures of each shot), and the windows ending at every other frame are tested
    (:func:`blend_transition`: a window may end anywhere after a transition, so half of them find what
    all of them do, at half the cost), the longest first; a window that is one view moving (:meth:`_one_view`:
    a pan or zoom over a smooth picture) is none. Overlapping finds are one transition, reported as
    ``(first, end)`` (frames ``first`` .. ``end - 1`` are mixed) once no window has grown it for
    ``max_frames`` frames."""

    def __init__(self, max_frames: int):
        self.max_frames = max(7, int(max_frames))
        lengths, n = [], 7
        while n < self.max_frames:
            lengths.append(n)
            n = max(n + 1, round(n * 1.5))
        self.lengths = np.array(sorted(set(lengths + [self.max_frames]), reverse=True))
        self.ring: np.ndarray | None = None  # thumbnails of frames base .. count - 1, one row each
        self.centred: np.ndarray | None = None  # the same less each row's mean
        self.spread: np.ndarray | None = None  # each row's standard deviation
        self.steps: np.ndarray | None = None  # each row less the row before
        self.step: np.ndarray | None = None  # each row's squared distance from the row before
        self.base = 0
        self.frames: dict[int, np.ndarray] = {}
        self.count = 0
        self.candidate: tuple[int, int] | None = None
        self.reported_end = -1

    def _thumb(self, i: int) -> np.ndarray:
        return self.ring[i - self.base]

    def _append(self, thumb: np.ndarray) -> None:
        if self.ring is None:
            self.ring = np.empty((2 * self.max_frames, thumb.size), np.float32)
            self.centred, self.steps = np.empty_like(self.ring), np.zeros_like(self.ring)
            self.spread, self.step = np.empty(len(self.ring), np.float32), np.zeros(len(self.ring), np.float32)
        if self.count - self.base == len(self.ring):  # full: keep the newest max_frames - 1 rows
            keep = self.max_frames - 1
            for arr in (self.ring, self.centred, self.steps, self.spread, self.step):
                arr[:keep] = arr[len(arr) - keep :]
            self.base = self.count - keep
        row = self.count - self.base
        self.ring[row] = thumb
        self.centred[row] = thumb - thumb.mean()
        self.spread[row] = np.sqrt(self.centred[row] @ self.centred[row] / thumb.size)
        if row:
            d = self.steps[row] = thumb - self.ring[row - 1]
            self.step[row] = d @ d

    def _windows(self, t: int) -> list[tuple[int, np.ndarray, float]]:
        """``(length, change, power)`` of the windows ending at frame ``t`` that may hold a transition,
        longest first: the cheap conditions of :func:`blend_transition` (the shots far enough apart,
        unlike, not flat, both ends still and on the shots) for all of them at once."""
        lengths = self.lengths[(self.lengths <= t + 1) & (t - self.lengths + 1 > self.reported_end)]
        if not len(lengths):
            return []
        row = t - self.base
        starts = row - lengths + 1
        if self.spread[row] < TRANSITION_MIN_CONTRAST:
            return []
        change = self.ring[row] - self.ring[starts]
        power = np.einsum("ij,ij->i", change, change)
        still = TRANSITION_END_STEP**2 * power
        spread = self.spread[starts]
        likeness = self.centred[starts] @ self.centred[row]
        ok = (
            (power >= change.shape[1] * TRANSITION_MIN_CHANGE**2)
            & (self.step[row] <= still)
            & (self.step[starts + 1] <= still)
            & (spread >= TRANSITION_MIN_CONTRAST)
            & (likeness <= TRANSITION_MAX_LIKENESS * spread * self.spread[row] * change.shape[1])
        )
        if not ok.any():
            return []
        keep = np.flatnonzero(ok)
        change, power, starts = change[keep], power[keep], starts[keep]
        # each step's share of the change (its mix weight's rise), every window at once: the second and
        # the last but one picture are the shots themselves, and no step is a cut
        lo = int(starts.min())
        rises = self.steps[lo + 1 : row + 1] @ change.T / power  # [steps, windows]
        rises[np.arange(lo + 1, row + 1)[:, None] <= starts[None, :]] = 0.0  # steps before a window
        second = rises[starts - lo, np.arange(len(starts))]
        ends = (second <= TRANSITION_STILL) & (rises[-1] <= TRANSITION_STILL) & (rises.max(axis=0) <= TRANSITION_MAX_STEP)
        return [(int(lengths[keep[i]]), change[i], float(power[i])) for i in np.flatnonzero(ends)]

    def push(self, frame: np.ndarray) -> list[tuple[int, int]]:
        t = self.count
        self._append(transition_thumb(frame))
        self.frames[t] = frame
        self.frames.pop(t - self.max_frames, None)
        self.count += 1
        found: tuple[int, int] | None = None
        for n, change, power in self._windows(t) if t >= 6 and t % 2 == 0 else []:
            a = t - n + 1
            span = _mixed_span(self.ring[a - self.base : t + 1 - self.base], change, power)
            if span is not None and not self._one_view(a, t, a + (span[0] + span[1]) // 2):
                found = (a + span[0], a + span[1] + 1)
                break
        out: list[tuple[int, int]] = []
        cand = self.candidate
        if found is not None:
            if cand is not None and found[0] <= cand[1]:
                self.candidate = (min(cand[0], found[0]), max(cand[1], found[1]))
            else:
                if cand is not None:
                    out.append(self._report(cand))
                self.candidate = found
        elif cand is not None and t - cand[1] >= self.max_frames:
            out.append(self._report(cand))
        return out

    def _one_view(self, a: int, b: int, m: int) -> bool:
        """Whether frames ``a`` .. ``b`` are one view moving rather than a mix of two: the end frames
        are alike once the camera's shift is undone (:func:`aligned_difference`, less than half their
        plain difference), or the middle frame ``m`` holds more detail than a mix of the ends could (the
        energy of its grey gradients over ``TRANSITION_MAX_DETAIL`` times that of the same mix of the
        ends' gradients: a mix of two unrelated pictures is about half as detailed as either, a moved
        view as detailed as ever; gradients mix as the pictures do, so a dissolve keeps the ratio near
        1 while both shots move)."""
        fa, fb, fm = self.frames[a], self.frames[b], self.frames[m]
        raw = float(np.abs(fa.astype(np.float32) - fb.astype(np.float32)).mean())
        if aligned_difference(fa, fb) < 0.5 * raw:
            return True
        ta, tb, tm = self._thumb(a), self._thumb(b), self._thumb(m)
        change = tb - ta
        w = float(np.clip((tm - ta) @ change / max(float(change @ change), 1e-6), 0.0, 1.0))
        ga, gb, gm = (_grey_gradients(f) for f in (fa, fb, fm))
        mix = (1.0 - w) * ga + w * gb
        return float((gm * gm).sum()) > TRANSITION_MAX_DETAIL * max(float((mix * mix).sum()), 1e-6)

    def _report(self, span: tuple[int, int]) -> tuple[int, int]:
        self.candidate = None
        self.reported_end = span[1] - 1
        return span

    def finish(self) -> list[tuple[int, int]]:
        return [self._report(self.candidate)] if self.candidate is not None else []
