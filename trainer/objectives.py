"""Training objectives: what a batch's loss is. The trainer calls ``objective(model, batch)`` and gets the
per-sample losses and the diffusion timesteps they were drawn at (for per-timestep-bucket metrics).

An objective draws its randomness from the batch's per-sample seeds (:mod:`trainer.data`), so the loss
of a sample does not depend on which rank computes it. ``flow_dpo`` (Video-DPO) is the second one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from model import flow_matching as fm
from trainer.data import Batch


@dataclass
class ObjectiveOutput:
    per_sample: torch.Tensor  # [B] fp32
    timesteps: torch.Tensor  # [B] in [0, 1] (0 = pure noise)
    # per-sample figures the trainer averages over the step and logs (MLflow key -> [B])
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


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

    def predict(self, model, noisy: torch.Tensor, t: torch.Tensor, text: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.autocast(noisy.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            return model(noisy, fm.model_timestep(t), **text).float()

    def __call__(self, model, batch: Batch) -> ObjectiveOutput:
        data = batch.latents
        noise, t = self.draw(batch)
        prediction = self.predict(model, fm.noisy_latents(data, noise, t), t, batch.text())
        err = (prediction - fm.velocity_target(data, noise).float()).pow(2)
        return ObjectiveOutput(err.reshape(err.shape[0], -1).mean(dim=1), t.detach())


def _per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    err = (a.float() - b.float()).pow(2)
    return err.reshape(err.shape[0], -1).mean(dim=1)


class FlowMatchingDPO(FlowMatching):
    """Video-DPO: Diffusion-DPO on flow matching (:func:`model.flow_matching.flow_dpo_loss`).

    A batch holds pairs: ``latents`` the preferred videos, ``rejected`` the rejected ones, with the same
    text. Both videos of a pair get the same noise and ``t`` (drawn from the pair's seed); the policy
    (``model``) and the frozen reference (the trainer sets :attr:`reference`, the weights the stage
    started from) predict the velocity on all 2B noisy latents, in one forward each. The per-pair loss is
    what the trainer averages and backpropagates; it logs, per step, the preference accuracy (share of
    pairs with a positive implicit reward margin), the mean margin, the policy's errors on each side,
    and the divergence from the reference (mean squared difference of the two velocity predictions)."""

    needs_reference = True
    # FLOPs against plain flow matching on B samples: policy forward + backward on 2B (2 x 3 units) and
    # the reference's forward on 2B (2 units), over 3 units
    flops_factor = 8.0 / 3.0

    def __init__(self, stage_cfg, autocast_bf16: bool = False):
        super().__init__(stage_cfg, autocast_bf16)
        self.beta = float(stage_cfg.beta)
        self.reference = None

    def __call__(self, model, batch: Batch) -> ObjectiveOutput:
        if batch.rejected is None:
            raise ValueError("Video-DPO needs preference pairs: the latent samples carry no rejected video")
        if self.reference is None:
            raise RuntimeError("FlowMatchingDPO.reference is not set")
        noise, t = self.draw(batch)
        both = torch.cat([batch.latents, batch.rejected])
        noise2, t2 = torch.cat([noise, noise]), torch.cat([t, t])
        noisy = fm.noisy_latents(both, noise2, t2)
        text = {k: torch.cat([v, v]) for k, v in batch.text().items()}
        target = fm.velocity_target(both, noise2)
        policy = self.predict(model, noisy, t2, text)
        with torch.no_grad():
            reference = self.predict(self.reference, noisy, t2, text)
        policy_err, reference_err = _per_sample_mse(policy, target), _per_sample_mse(reference, target)
        pw, pl = policy_err.chunk(2)
        rw, rl = reference_err.chunk(2)
        loss, margin = fm.flow_dpo_loss(pw, pl, rw, rl, self.beta)
        divergence = _per_sample_mse(policy.detach(), reference).reshape(2, -1).mean(dim=0)
        extras = {
            "dpo/accuracy": (margin > 0).float().detach(),
            "dpo/reward_margin": margin.detach(),
            "dpo/policy_error_preferred": pw.detach(),
            "dpo/policy_error_rejected": pl.detach(),
            "dpo/divergence_from_reference": divergence,
        }
        return ObjectiveOutput(loss, t.detach(), extras)


OBJECTIVES = {"flow_matching": FlowMatching, "flow_dpo": FlowMatchingDPO}
