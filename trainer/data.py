"""Batches of latents for the DiT stages, the same whatever the number of ranks.

Every random choice is a pure function of ``(seed, optimizer step, position in the step's global batch)``:
which sample sits at a position (epochs are seeded permutations of the data set), image or video for the
step, caption dropout, and the seed the objective draws noise and timesteps from. A step's global batch
is ``batch_size x data-parallel ranks x grad_accum_steps`` samples; micro-batch m of rank r takes
positions ``m * (B * ranks) + r * B + [0, B)``. So

* 1 rank with batch ``4B``, 2 ranks with ``2B``, or 2 ranks with ``B`` and 2 accumulation steps see the
  same samples with the same noise in each optimizer step;
* the loader's position is the number of micro-batches drawn; a resumed run, on any number of ranks,
  continues with the batches an uninterrupted run would have drawn.

Ranks of one sequence-parallel group share a ``dp_rank`` and so the same samples.

Samples are bucketed by their latent grid (frames, height, width): a step draws image or video, then a
bucket (in proportion to its samples), and every sample of the step comes from that bucket, with the
bucket's batch size (``batch_size_per_bucket``, else ``batch_size``). Each bucket is its own stream of
seeded epoch permutations; the loader's position is the micro-batch count and each bucket's cursor.

Drawing a micro-batch is two steps: :meth:`LatentBatches.plan` (cheap, in order: which samples, dropout,
seeds) and :meth:`LatentBatches.load` (the storage reads). :class:`ReadAhead` runs the loads of the next
micro-batches on worker threads (``<stage>.data_workers``) while the current one trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from t2v.shards import LatentSample


def _video_shape(samples, index: int) -> tuple[int, ...]:
    shape = getattr(samples, "shape", None)  # IndexedLatents knows shapes from its index
    return tuple(shape(index)) if shape is not None else tuple(samples[index].video.shape)


@dataclass
class Batch:
    latents: torch.Tensor  # [B, F, C, h, w]
    llm_states: torch.Tensor
    llm_mask: torch.Tensor
    clip_states: torch.Tensor
    clip_mask: torch.Tensor
    seeds: list[int] = field(default_factory=list)  # one per sample: the objective's noise and timestep
    rejected: torch.Tensor | None = None  # [B, F, C, h, w]: preference pairs' rejected videos (Video-DPO)

    def to(self, device) -> Batch:
        moved = {k: getattr(self, k).to(device, non_blocking=True) for k in ("latents", "llm_states", "llm_mask", "clip_states", "clip_mask")}
        rejected = self.rejected.to(device, non_blocking=True) if self.rejected is not None else None
        return Batch(**moved, seeds=self.seeds, rejected=rejected)

    def text(self) -> dict[str, torch.Tensor]:
        """The DiT's text inputs, by keyword."""
        return {k: getattr(self, k) for k in ("llm_states", "llm_mask", "clip_states", "clip_mask")}

    @property
    def tokens(self) -> int:
        """Video tokens in the batch (patch size 1): samples x frames x height x width."""
        b, f, _, h, w = self.latents.shape
        return b * f * h * w


def mixed_seed(*key: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> np.uint64(1))


# stream tags keep the random choices of one micro-batch independent of each other
_ORDER, _KIND, _SAMPLE, _DROPOUT, _BUCKET = 1, 2, 3, 4, 5


def select_samples(samples: list[LatentSample], stage_cfg) -> list[LatentSample]:
    """The stage's share of the data: t2v fine-tunes on clips whose curation quality is high enough."""
    return [s for s in samples if float(s.meta.get("quality", 1.0)) >= stage_cfg.min_quality]


class LatentBatches:
    """Micro-batches for one data-parallel rank over a sequence of latent samples (a list in memory, or
    :class:`t2v.shards.IndexedLatents` reading on demand)."""

    def __init__(
        self,
        samples,
        negative: dict[str, np.ndarray],
        stage_cfg,
        dp_rank: int = 0,
        dp_size: int = 1,
        batch_sizes: dict[tuple[int, int, int], int] | None = None,
    ):
        if not samples:
            raise ValueError("no latent samples")
        self.samples, self.negative, self.cfg = samples, negative, stage_cfg
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.accum = stage_cfg.grad_accum_steps
        self.global_batch = stage_cfg.batch_size * dp_size * self.accum  # samples per optimizer step
        self.drawn = 0  # micro-batches drawn so far: the loader's position
        grids: dict[tuple[int, int, int], list[int]] = {}
        for index in range(len(samples)):
            frames, _, height, width = _video_shape(samples, index)
            grids.setdefault((frames, height, width), []).append(index)
        self.buckets = sorted(grids)
        self.members = {key: np.array(grids[key]) for key in self.buckets}
        self.batch_sizes = dict(batch_sizes or {})
        self.cursors = dict.fromkeys(self.buckets, 0)  # global positions used in each bucket's stream
        self._orders: dict[tuple, np.ndarray] = {}

    # position ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "micro_batches_drawn": self.drawn,
            "global_batch": self.global_batch,
            "cursors": {"x".join(map(str, key)): value for key, value in self.cursors.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["global_batch"]) != self.global_batch:
            raise ValueError(
                f"the checkpoint was trained with a global batch of {state['global_batch']} samples, this run "
                f"has {self.global_batch} (batch_size x data-parallel ranks x grad_accum_steps); resuming would "
                "change the data"
            )
        self.drawn = int(state["micro_batches_drawn"])
        saved = {tuple(int(v) for v in key.split("x")): value for key, value in state.get("cursors", {}).items()}
        if saved and set(saved) != set(self.buckets):
            raise ValueError(f"the checkpoint's data has buckets {sorted(saved)}, this run's {self.buckets}")
        self.cursors.update(saved)

    # drawing ----------------------------------------------------------------------------------------
    def _index_at(self, bucket: tuple[int, int, int], position: int) -> int:
        members = self.members[bucket]
        epoch, within = divmod(position, len(members))
        tag = () if len(self.buckets) == 1 else (self.buckets.index(bucket) + 1,)
        key = (bucket, epoch)
        if key not in self._orders:
            if len(self._orders) > 4 * len(self.buckets):
                self._orders.clear()
            order = np.random.default_rng(mixed_seed(self.cfg.seed, _ORDER, epoch, *tag)).permutation(len(members))
            self._orders[key] = members[order]
        return int(self._orders[key][within])

    def kind(self, step: int) -> str:
        if self.cfg.data == "images":
            return "image"
        if self.cfg.data == "videos":
            return "video"
        draw = np.random.default_rng(mixed_seed(self.cfg.seed, _KIND, step)).random()
        return "video" if draw < self.cfg.video_fraction else "image"

    def bucket(self, step: int) -> tuple[int, int, int]:
        if len(self.buckets) == 1:
            return self.buckets[0]
        sizes = np.array([len(self.members[key]) for key in self.buckets], dtype=np.float64)
        draw = np.random.default_rng(mixed_seed(self.cfg.seed, _BUCKET, step)).choice(len(self.buckets), p=sizes / sizes.sum())
        return self.buckets[int(draw)]

    def batch_size(self, bucket: tuple[int, int, int], kind: str) -> int:
        frames, height, width = bucket
        return self.batch_sizes.get((1 if kind == "image" else frames, height, width), self.cfg.batch_size)

    def plan(self) -> BatchPlan:
        """Advance the position by one micro-batch and say what it holds, without reading any sample."""
        step, micro = divmod(self.drawn, self.accum)  # step counts from 0 here
        self.drawn += 1
        kind, bucket = self.kind(step), self.bucket(step)
        size = self.batch_size(bucket, kind)
        first = micro * size * self.dp_size + self.dp_rank * size
        positions = range(first, first + size)  # within the step's global batch
        cursor = self.cursors[bucket]
        indices = [self._index_at(bucket, cursor + j) for j in positions]
        if micro == self.accum - 1:
            self.cursors[bucket] = cursor + size * self.dp_size * self.accum
        drop = [
            np.random.default_rng(mixed_seed(self.cfg.seed, _DROPOUT, step, j)).random() < self.cfg.caption_dropout
            for j in positions
        ]
        seeds = [mixed_seed(self.cfg.seed, _SAMPLE, step, j) for j in positions]
        return BatchPlan(kind, indices, drop, seeds)

    def load(self, plan: BatchPlan) -> Batch:
        """Read a planned micro-batch's samples (the slow part: storage reads) and stack them."""
        picked = [self.samples[i] for i in plan.indices]

        def text(name: str) -> torch.Tensor:
            rows = [self.negative[name] if d else getattr(s, name) for s, d in zip(picked, plan.drop)]
            return torch.from_numpy(np.stack(rows))

        latents = torch.from_numpy(np.stack([s.video if plan.kind == "video" else s.image for s in picked]))
        rejected = None
        if plan.kind == "video" and all(s.rejected is not None for s in picked):
            rejected = torch.from_numpy(np.stack([s.rejected for s in picked])).float()
        return Batch(
            latents.float(),
            text("llm_states").float(),
            text("llm_mask").bool(),
            text("clip_states").float(),
            text("clip_mask").bool(),
            seeds=plan.seeds,
            rejected=rejected,
        )

    def next(self) -> Batch:
        return self.load(self.plan())


@dataclass(frozen=True)
class BatchPlan:
    """What one micro-batch holds: image or video, the samples' indices, their caption dropout and seeds."""

    kind: str
    indices: list[int]
    drop: list[bool]
    seeds: list[int]


class ReadAhead:
    """:class:`LatentBatches` with the next micro-batches read by ``workers`` threads while the current one
    trains (storage reads release the GIL). Plans are made in order on the calling thread, so the batches
    and the saved position are exactly those of the plain loader; the position saved is that of the
    batches handed out, not of those read ahead."""

    def __init__(self, batches: LatentBatches, workers: int, depth: int | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self.batches, self.depth = batches, depth or 2 * workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="latent-reader")
        self._queue: list[tuple[Any, dict]] = []  # (future batch, the loader's state once it is handed out)
        self._handed_out = batches.state_dict()

    def __getattr__(self, name):  # samples, buckets, global_batch, ... of the loader
        return getattr(self.batches, name)

    def _fill(self) -> None:
        while len(self._queue) < self.depth:
            plan = self.batches.plan()
            self._queue.append((self._pool.submit(self.batches.load, plan), self.batches.state_dict()))

    def next(self) -> Batch:
        self._fill()
        future, state = self._queue.pop(0)
        batch = future.result()
        self._handed_out = state
        self._fill()
        return batch

    def _rewind(self) -> None:
        for future, _ in self._queue:
            future.cancel()
        self._queue.clear()
        self.batches.load_state_dict(self._handed_out)

    def state_dict(self) -> dict:
        return dict(self._handed_out)

    def load_state_dict(self, state: dict) -> None:
        self._rewind()
        self.batches.load_state_dict(state)
        self._handed_out = self.batches.state_dict()

    @property
    def drawn(self) -> int:
        return int(self._handed_out["micro_batches_drawn"])

    @drawn.setter
    def drawn(self, value: int) -> None:
        self._rewind()
        self.batches.drawn = value
        self._handed_out = self.batches.state_dict()

    def close(self) -> None:
        self._rewind()
        self._pool.shutdown(wait=True)
