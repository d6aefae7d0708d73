"""Flow matching: the release's convention, the shifted schedule, the Euler sampler and CFG."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from model.config import DiTConfig
from model.dit import StepVideoDiT
from model.flow_matching import (
    RELEASE_PRESET,
    TURBO_PRESET,
    FlowMatchEulerSampler,
    SamplerPreset,
    dit_denoiser,
    flow_matching_loss,
    make_noise,
    noisy_latents,
    sample,
    sample_training_timesteps,
    sampling_timesteps,
    shifted_sigmas,
    velocity_target,
)

ROOT = Path(__file__).resolve().parents[2]


def test_shifted_sigmas_formula():
    s = 13.0
    sig = shifted_sigmas(4, s)
    raw = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    assert torch.allclose(sig, s * raw / (1 + (s - 1) * raw))
    assert sig[0] == 1.0 and sig[-1] == 0.0
    assert sig[2] == pytest.approx(13 * 0.5 / 7.0)
    assert torch.all(sig[1:] < sig[:-1])
    assert torch.allclose(shifted_sigmas(10, 1.0), torch.linspace(1, 0, 11))
    ts = sampling_timesteps(4, s)
    assert ts[0] == 0.0 and ts[-1] == 1.0  # the DiT first sees t = 0 (pure noise)
    with pytest.raises(ValueError):
        shifted_sigmas(0, 1.0)


def test_interpolation_and_target_convention():
    data, noise = torch.full((2, 3), 2.0), torch.full((2, 3), -1.0)
    assert torch.equal(noisy_latents(data, noise, torch.zeros(2)), noise)  # t = 0: pure noise
    assert torch.equal(noisy_latents(data, noise, torch.ones(2)), data)
    mid = noisy_latents(data, noise, torch.tensor([0.25, 0.75]))
    assert torch.allclose(mid[0], torch.full((3,), 0.75 * -1 + 0.25 * 2))
    assert torch.equal(velocity_target(data, noise), data - noise)
    assert float(flow_matching_loss(data, noise)) == pytest.approx(9.0)


def test_training_sigmas_are_in_range_and_seeded():
    a = sample_training_timesteps(1000, torch.Generator().manual_seed(0))
    b = sample_training_timesteps(1000, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (1000,)
    assert 0 < float(a.min()) and float(a.max()) < 1
    assert abs(float(a.mean()) - 0.5) < 0.05  # logit-normal(0, 1) is symmetric
    shifted = sample_training_timesteps(1000, torch.Generator().manual_seed(0), shift=3.0)
    assert float(shifted.mean()) < float(a.mean())  # shift > 1: more noise
    u = sample_training_timesteps(1000, torch.Generator().manual_seed(0), distribution="uniform")
    assert 0 < float(u.min()) and float(u.max()) < 1
    with pytest.raises(ValueError):
        sample_training_timesteps(2, distribution="beta")


def test_euler_with_the_exact_velocity_reaches_the_data():
    data = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    noise = make_noise((2, 3, 4), seed=1)

    def ideal(x, t, cond):  # the straight path's velocity, written from the current state
        return (cond["data"] - x) / (1 - t).reshape(-1, 1, 1)

    out = sample(ideal, noise, {"data": data}, None, num_steps=7, guidance_scale=1.0, shift=13.0)
    assert torch.allclose(out, data, atol=1e-5)


def test_cfg_combines_branches_and_scale_one_is_conditional_only():
    noise = make_noise((1, 4), seed=0)
    calls = []

    def den(x, t, cond):
        calls.append(cond["name"])
        return torch.full_like(x, cond["v"])

    cond, uncond = {"name": "c", "v": 1.0}, {"name": "u", "v": 3.0}
    out1 = sample(den, noise, cond, uncond, num_steps=5, guidance_scale=1.0, shift=1.0)
    out_c = sample(den, noise, cond, None, num_steps=5, guidance_scale=1.0, shift=1.0)
    assert torch.equal(out1, out_c) and "u" not in calls
    out = sample(den, noise, cond, uncond, num_steps=5, guidance_scale=4.0, shift=1.0)
    # v = 3 + 4 * (1 - 3) = -5 over a total dt of 1
    assert torch.allclose(out, noise - 5.0, atol=1e-6)
    assert "u" in calls


def test_sampler_with_a_dit_is_deterministic_for_a_seed():
    cfg = DiTConfig(**yaml.safe_load((ROOT / "configs/tiny/dit.yaml").read_text()))
    torch.manual_seed(0)
    dit = StepVideoDiT(cfg).eval()
    g = torch.Generator().manual_seed(5)
    cond = {
        "llm_states": torch.randn(1, 6, cfg.caption_channels, generator=g),
        "llm_mask": torch.ones(1, 6, dtype=torch.bool),
        "clip_states": torch.randn(1, 4, cfg.clip_channels, generator=g),
        "clip_mask": torch.ones(1, 4, dtype=torch.bool),
    }
    uncond = {k: (v.flip(1) if v.is_floating_point() else v) for k, v in cond.items()}
    sampler = FlowMatchEulerSampler(SamplerPreset(num_steps=4, guidance_scale=5.0, shift=17.0))
    with torch.no_grad():
        a = sampler(dit_denoiser(dit), make_noise((1, 3, cfg.in_channels, 4, 4), seed=42), cond, uncond)
        b = sampler(dit_denoiser(dit), make_noise((1, 3, cfg.in_channels, 4, 4), seed=42), cond, uncond)
        c = sampler(dit_denoiser(dit), make_noise((1, 3, cfg.in_channels, 4, 4), seed=43), cond, uncond)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.isfinite(a).all()


def test_presets_are_the_released_values():
    assert (RELEASE_PRESET.num_steps, RELEASE_PRESET.guidance_scale, RELEASE_PRESET.shift) == (50, 9.0, 13.0)
    assert 10 <= TURBO_PRESET.num_steps <= 15
    assert (TURBO_PRESET.guidance_scale, TURBO_PRESET.shift) == (5.0, 17.0)


def test_model_timestep_is_the_training_t():
    t = torch.tensor([0.1, 0.9])
    from model.flow_matching import model_timestep

    assert torch.equal(model_timestep(t), t)
