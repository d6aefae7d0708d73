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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from t2v.shards import LatentSample


@dataclass
class Batch:
    latents: torch.Tensor  # [B, F, C, h, w]
    llm_states: torch.Tensor
    llm_mask: torch.Tensor
    clip_states: torch.Tensor
    clip_mask: torch.Tensor
    seeds: list[int] = field(default_factory=list)  # one per sample: the objective's noise and timestep

    def to(self, device) -> Batch:
        moved = {k: getattr(self, k).to(device, non_blocking=True) for k in ("latents", "llm_states", "llm_mask", "clip_states", "clip_mask")}
        return Batch(**moved, seeds=self.seeds)

    @property
    def tokens(self) -> int:
        """Video tokens in the batch (patch size 1): samples x frames x height x width."""
        b, f, _, h, w = self.latents.shape
        return b * f * h * w


def mixed_seed(*key: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> np.uint64(1))


# stream tags keep the random choices of one micro-batch independent of each other
_ORDER, _KIND, _SAMPLE, _DROPOUT = 1, 2, 3, 4


def select_samples(samples: list[LatentSample], stage_cfg) -> list[LatentSample]:
    """The stage's share of the data: t2v fine-tunes on clips whose curation quality is high enough."""
    return [s for s in samples if float(s.meta.get("quality", 1.0)) >= stage_cfg.min_quality]


class LatentBatches:
    """Micro-batches for one data-parallel rank over latents held in memory."""

    def __init__(self, samples, negative: dict[str, np.ndarray], stage_cfg, dp_rank: int = 0, dp_size: int = 1):
        if not samples:
            raise ValueError("no latent samples")
        self.samples, self.negative, self.cfg = samples, negative, stage_cfg
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.accum = stage_cfg.grad_accum_steps
        self.global_batch = stage_cfg.batch_size * dp_size * self.accum  # samples per optimizer step
        self.drawn = 0  # micro-batches drawn so far: the loader's position
        self._orders: dict[int, np.ndarray] = {}

    # position ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        return {"micro_batches_drawn": self.drawn, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["global_batch"]) != self.global_batch:
            raise ValueError(
                f"the checkpoint was trained with a global batch of {state['global_batch']} samples, this run "
                f"has {self.global_batch} (batch_size x data-parallel ranks x grad_accum_steps); resuming would "
                "change the data"
            )
        self.drawn = int(state["micro_batches_drawn"])

    # drawing ----------------------------------------------------------------------------------------
    def _sample_at(self, position: int) -> LatentSample:
        epoch, within = divmod(position, len(self.samples))
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng(mixed_seed(self.cfg.seed, _ORDER, epoch)).permutation(len(self.samples))}
        return self.samples[int(self._orders[epoch][within])]

    def kind(self, step: int) -> str:
        if self.cfg.data == "images":
            return "image"
        if self.cfg.data == "videos":
            return "video"
        draw = np.random.default_rng(mixed_seed(self.cfg.seed, _KIND, step)).random()
        return "video" if draw < self.cfg.video_fraction else "image"

    def next(self) -> Batch:
        step, micro = divmod(self.drawn, self.accum)  # step counts from 0 here
        self.drawn += 1
        kind = self.kind(step)
        size = self.cfg.batch_size
        first = micro * size * self.dp_size + self.dp_rank * size
        positions = range(first, first + size)
        picked = [self._sample_at(step * self.global_batch + j) for j in positions]
        drop = [
            np.random.default_rng(mixed_seed(self.cfg.seed, _DROPOUT, step, j)).random() < self.cfg.caption_dropout
            for j in positions
        ]

        def text(name: str) -> torch.Tensor:
            rows = [self.negative[name] if d else getattr(s, name) for s, d in zip(picked, drop)]
            return torch.from_numpy(np.stack(rows))

        latents = torch.from_numpy(np.stack([s.video if kind == "video" else s.image for s in picked]))
        return Batch(
            latents.float(),
            text("llm_states").float(),
            text("llm_mask").bool(),
            text("clip_states").float(),
            text("clip_mask").bool(),
            seeds=[mixed_seed(self.cfg.seed, _SAMPLE, step, j) for j in positions],
        )
