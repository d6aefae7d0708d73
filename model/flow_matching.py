"""Flow matching: the training objective and the Euler sampler, in the released convention.

Convention (checked against the release's ``FlowMatchDiscreteScheduler`` with ``reverse=False`` and its
pipeline):

* ``t`` in [0, 1] is the fraction of data: ``x_t = (1 - t) * noise + t * data``; ``t = 0`` is pure noise,
  ``t = 1`` clean data. The noise level is ``sigma = 1 - t``.
* The DiT receives ``t`` itself as ``timestep`` (``StepVideoDiT`` multiplies it by 1000 inside, as the
  release's ``AdaLayerNormSingle`` does).
* The network predicts the velocity ``dx_t/dt = data - noise``; the training target is exactly that.
* Sampling: noise levels ``sigma = linspace(1, 0, N + 1)`` are shifted ``sigma' = s*sigma / (1 + (s-1)*sigma)``
  (more steps at high noise), ``t_i = 1 - sigma'_i``, and the Euler update, in fp32, is
  ``x_{i+1} = x_i + v(x_i, t_i) * (t_{i+1} - t_i)``, so after N steps t = 1 (data).
* Classifier-free guidance: ``v = v_uncond + g * (v_cond - v_uncond)`` where the unconditional branch is the
  negative ("magic") prompt, not an empty one; the release skips it when ``g <= 1``.

Training functions take and return ``t`` (the DiT timestep); only the sampler's schedule speaks of noise
levels ``sigma``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SamplerPreset:
    num_steps: int
    guidance_scale: float
    shift: float


#: the release's pipeline defaults (its command line defaults shift to 7.0 when not given)
RELEASE_PRESET = SamplerPreset(num_steps=50, guidance_scale=9.0, shift=13.0)
#: Step-Video-T2V-Turbo (distilled): 10-15 steps, CFG 5.0, shift 17.0
TURBO_PRESET = SamplerPreset(num_steps=15, guidance_scale=5.0, shift=17.0)
TURBO_MIN_STEPS = 10


# --------------------------------------------------------------------------------------------------------
# training


def time_shift(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 shift of a noise level: s*sigma / (1 + (s-1)*sigma); maps 0 -> 0 and 1 -> 1."""
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def sample_training_timesteps(
    batch: int,
    generator: torch.Generator | None = None,
    distribution: str = "logit_normal",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    shift: float = 1.0,
    eps: float = 1e-5,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw the DiT timestep ``t`` (fraction of data, 0 = noise) for a batch, shape [batch], float32.

    ``logit_normal``: t = sigmoid(N(logit_mean, logit_std)) (SD3's choice; the report gives none);
    ``uniform``: t ~ U(0, 1). ``shift`` > 1 moves mass to high noise the same way the sampler does.
    """
    if distribution == "logit_normal":
        u = torch.randn(batch, generator=generator, dtype=torch.float32) * logit_std + logit_mean
        t = torch.sigmoid(u)
    elif distribution == "uniform":
        t = torch.rand(batch, generator=generator, dtype=torch.float32)
    else:
        raise ValueError(f"unknown timestep distribution {distribution!r}; use 'logit_normal' or 'uniform'")
    if shift != 1.0:
        t = 1.0 - time_shift(1.0 - t, shift)
    return t.clamp(eps, 1.0 - eps).to(device)


def model_timestep(t: torch.Tensor) -> torch.Tensor:
    """The value to pass to ``StepVideoDiT`` as ``timestep`` for a training draw: ``t`` itself (the DiT
    applies the release's x1000 inside). Kept as a function so callers state the conversion explicitly."""
    return t


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float32, device=like.device)
    return t.reshape(t.shape + (1,) * (like.ndim - t.ndim)) if t.ndim else t


def noisy_latents(data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) * noise + t * data, with ``t`` per sample ([B]) or a scalar."""
    t = _expand(t, data)
    return ((1.0 - t) * noise.float() + t * data.float()).to(data.dtype)


def velocity_target(data: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the DiT learns: data - noise."""
    return data - noise


def flow_matching_loss(
    prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error in fp32, optionally weighted per sample ([B])."""
    err = (prediction.float() - target.float()).pow(2)
    per_sample = err.reshape(err.shape[0], -1).mean(dim=1)
    if weights is not None:
        per_sample = per_sample * weights.float()
    return per_sample.mean()


def flow_dpo_loss(
    policy_preferred: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_preferred: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Diffusion-DPO (Wallace et al., 2023) on flow-matching velocity errors.

    Each argument is [B]: a model's mean squared velocity error on the preferred or the rejected video
    of a pair, both noised with the same noise at the same ``t``; the policy's carry gradients, the frozen
    reference's do not. The implicit reward margin of a pair is

        margin = -beta / 2 * ((policy_preferred - reference_preferred) - (policy_rejected - reference_rejected))

    (positive when the policy has improved on the preferred video more than on the rejected one, relative
    to the reference) and the loss is ``-log sigmoid(margin)``. Returns (loss [B], margin [B]), fp32."""
    improvement = (policy_preferred.float() - reference_preferred.float()) - (
        policy_rejected.float() - reference_rejected.float()
    )
    margin = -0.5 * beta * improvement
    return torch.nn.functional.softplus(-margin), margin


# --------------------------------------------------------------------------------------------------------
# sampling


def shifted_sigmas(num_steps: int, shift: float) -> torch.Tensor:
    """Noise levels for sampling: ``num_steps + 1`` values from 1 down to 0, shifted. float32."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return time_shift(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float32), shift)


def sampling_timesteps(num_steps: int, shift: float) -> torch.Tensor:
    """The DiT timesteps t = 1 - sigma' (``num_steps + 1`` values from 0 to 1; the last is never fed)."""
    return 1.0 - shifted_sigmas(num_steps, shift)


Denoiser = Callable[[torch.Tensor, torch.Tensor, Mapping[str, Any]], torch.Tensor]


def sample(
    denoiser: Denoiser,
    noise: torch.Tensor,
    cond: Mapping[str, Any],
    uncond: Mapping[str, Any] | None = None,
    num_steps: int = RELEASE_PRESET.num_steps,
    guidance_scale: float = RELEASE_PRESET.guidance_scale,
    shift: float = RELEASE_PRESET.shift,
    model_dtype: torch.dtype | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Integrate from ``noise`` (t = 0) to data (t = 1) with Euler steps and CFG.

    ``denoiser(latents, timestep[B], cond_dict) -> velocity``. With ``guidance_scale > 1`` and an
    ``uncond`` dict the unconditional (negative prompt) branch runs too; otherwise only the conditional one.
    The state is kept in fp32; ``model_dtype`` (e.g. bf16) is what the denoiser is fed. Deterministic for a
    given ``noise``.
    """
    ts = sampling_timesteps(num_steps, shift).to(noise.device)
    x = noise.float()
    b = x.shape[0]
    use_cfg = uncond is not None and guidance_scale > 1.0
    in_dtype = model_dtype or noise.dtype
    for i in range(num_steps):
        t = ts[i].expand(b)
        x_in = x.to(in_dtype)
        v = denoiser(x_in, t.to(in_dtype), cond).float()
        if use_cfg:
            v_uncond = denoiser(x_in, t.to(in_dtype), uncond).float()
            v = v_uncond + guidance_scale * (v - v_uncond)
        x = x + v * (ts[i + 1] - ts[i])
        if callback is not None:
            callback(i, x)
    return x


class FlowMatchEulerSampler:
    """Object form of :func:`sample` with a preset: ``FlowMatchEulerSampler(TURBO_PRESET)(denoiser, ...)``."""

    def __init__(self, preset: SamplerPreset = RELEASE_PRESET, model_dtype: torch.dtype | None = None):
        self.preset = preset
        self.model_dtype = model_dtype

    def timesteps(self) -> torch.Tensor:
        return sampling_timesteps(self.preset.num_steps, self.preset.shift)

    def __call__(
        self,
        denoiser: Denoiser,
        noise: torch.Tensor,
        cond: Mapping[str, Any],
        uncond: Mapping[str, Any] | None = None,
        callback: Callable[[int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        p = self.preset
        return sample(
            denoiser, noise, cond, uncond, p.num_steps, p.guidance_scale, p.shift, self.model_dtype, callback
        )


def make_noise(shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal noise from a seed (drawn on CPU so the same seed gives the same noise anywhere)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float32).to(device)


def dit_denoiser(dit: torch.nn.Module) -> Denoiser:
    """Adapt a :class:`~model.dit.StepVideoDiT` to the sampler: cond holds llm_states/llm_mask/clip_states/clip_mask."""

    def fn(latents: torch.Tensor, timestep: torch.Tensor, cond: Mapping[str, Any]) -> torch.Tensor:
        return dit(
            latents,
            timestep,
            cond["llm_states"],
            cond.get("llm_mask"),
            cond["clip_states"],
            cond.get("clip_mask"),
        )

    return fn


__all__ = [
    "RELEASE_PRESET",
    "TURBO_PRESET",
    "TURBO_MIN_STEPS",
    "SamplerPreset",
    "FlowMatchEulerSampler",
    "dit_denoiser",
    "flow_matching_loss",
    "make_noise",
    "model_timestep",
    "noisy_latents",
    "sample",
    "sample_training_timesteps",
    "sampling_timesteps",
    "shifted_sigmas",
    "time_shift",
    "velocity_target",
]
