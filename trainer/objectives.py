"""Training objectives: what a batch's loss is. The trainer calls ``objective(model, batch)`` and gets the
per-sample losses and the diffusion timesteps they were drawn at (for per-timestep-bucket metrics).

An objective draws its randomness from the batch's per-sample seeds (:mod:`trainer.data`), so the loss
of a sample does not depend on which rank computes it. Video-DPO will be a second objective here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model import flow_matching as fm
from trainer.data import Batch


@dataclass
class ObjectiveOutput:
    per_sample: torch.Tensor  # [B] fp32
    timesteps: torch.Tensor  # [B] in [0, 1] (0 = pure noise)


class FlowMatching:
    """Rectified flow: x_t = (1 - t) noise + t data, the DiT predicts the velocity data - noise (MSE)."""

    def __init__(self, stage_cfg, autocast_bf16: bool = False):
        # bf16 autocast where the weights are fp32 (single process, DDP); FSDP2 gathers bf16 weights itself
        self.cfg, self.autocast_bf16 = stage_cfg, autocast_bf16

    def draw(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise [B, F, C, h, w], t [B]) from the per-sample seeds, on the CPU then moved to the data."""
        noises, times = [], []
        for seed in batch.seeds:
            g = torch.Generator().manual_seed(seed)
            times.append(
                fm.sample_training_timesteps(
                    1, generator=g, distribution=self.cfg.timestep_sampling,
                    logit_mean=self.cfg.logit_mean, logit_std=self.cfg.logit_std,
                )
            )
            noises.append(torch.randn(batch.latents.shape[1:], generator=g))
        device = batch.latents.device
        return torch.stack(noises).to(device), torch.cat(times).to(device)

    def __call__(self, model, batch: Batch) -> ObjectiveOutput:
        data = batch.latents
        noise, t = self.draw(batch)
        noisy = fm.noisy_latents(data, noise, t)
        with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            prediction = model(
                noisy,
                fm.model_timestep(t),
                llm_states=batch.llm_states,
                llm_mask=batch.llm_mask,
                clip_states=batch.clip_states,
                clip_mask=batch.clip_mask,
            )
        err = (prediction.float() - fm.velocity_target(data, noise).float()).pow(2)
        return ObjectiveOutput(err.reshape(err.shape[0], -1).mean(dim=1), t.detach())


OBJECTIVES = {"flow_matching": FlowMatching}
