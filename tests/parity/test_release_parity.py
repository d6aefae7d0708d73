"""Numerical parity with the released Step-Video-T2V implementation (stepfun-ai/Step-Video-T2V, MIT).

The release is not vendored: point ``STEPVIDEO_RELEASE_SRC`` at a checkout of it (the folder that holds
``stepvideo/``) and run ``make test-release-parity STEPVIDEO_RELEASE_SRC=...``. Without it these tests are
skipped. The release's networks need ``diffusers`` and ``einops`` (``pip install diffusers einops``).

What is compared, in fp32, at small configurations with identical weights (our ``state_dict`` loaded into
the released classes with ``strict=True``, so names and shapes match too):

* DiT: ``StepVideoModel`` (``attention_type='torch'``) vs :class:`model.dit.StepVideoDiT`, with a batch whose
  prompts have different LLM lengths (the release's prefix-length key mask), patch sizes 1 and 2, and
  non-trivial norm weights; tolerance 1e-5 relative to the output's scale.
* VAE: ``AutoencoderKL(version=2)`` vs :class:`model.vae.CausalVideoVAE` at the released widths (17-frame
  chunks, dual-path head): posterior mean/log-variance, the sampled latents for one seed, and ``decode``
  of two chunks with the 0.6 / 0.4 boundary blend.
* Checkpoints: a DiT saved by :func:`t2v.checkpoints.save_dit` (sharded) is read by the release's
  ``StepVideoModel.from_pretrained``, a VAE saved by :func:`t2v.checkpoints.save_vae` by its
  ``AutoencoderKL(model_path=...)``, and both give our outputs: the released inference code serves them.
* Sampler: ``FlowMatchDiscreteScheduler`` timesteps and Euler steps, and a whole CFG denoising loop driven
  the way the release's ``StepVideoPipeline.__call__`` drives it, against :func:`model.flow_matching.sample`.

Only the network modules are imported: the package ``__init__`` (which builds the serving pipeline) is not
run, and where ``xfuser`` (sequence parallelism) or ``imageio`` are absent a stand-in reporting a world of
one process is put in their place for the duration of the module.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from model.config import DiTConfig, VAEConfig
from model.dit import StepVideoDiT
from model.flow_matching import dit_denoiser, sample, sampling_timesteps
from model.vae import CausalVideoVAE
from t2v import checkpoints, storage

RELEASE_SRC = os.environ.get("STEPVIDEO_RELEASE_SRC", "")

pytestmark = pytest.mark.skipif(
    not RELEASE_SRC,
    reason="set STEPVIDEO_RELEASE_SRC to a checkout of stepfun-ai/Step-Video-T2V to compare with the release",
)


def _single_process_xfuser() -> types.ModuleType:
    """What ``stepvideo.parallel`` asks of xfuser when nothing is sequence-parallel: world size 1, rank 0."""
    state = types.SimpleNamespace(
        get_sequence_parallel_world_size=lambda: 1,
        get_sequence_parallel_rank=lambda: 0,
    )
    module = types.ModuleType("xfuser")
    module.core = types.SimpleNamespace(distributed=types.SimpleNamespace(parallel_state=state))
    return module


@pytest.fixture(scope="module")
def release():
    src = Path(RELEASE_SRC).expanduser().resolve()
    if not (src / "stepvideo").is_dir():
        pytest.fail(f"STEPVIDEO_RELEASE_SRC={RELEASE_SRC}: no stepvideo/ package there")
    for needed in ("diffusers", "einops"):
        pytest.importorskip(needed, reason=f"the released networks import {needed}")

    with pytest.MonkeyPatch.context() as mp:
        for name, stand_in in (
            ("xfuser", _single_process_xfuser),
            ("imageio", lambda: types.ModuleType("imageio")),
        ):
            try:
                importlib.import_module(name)
            except ImportError:
                mp.setitem(sys.modules, name, stand_in())
        package = types.ModuleType("stepvideo")
        package.__path__ = [str(src / "stepvideo")]
        mp.setitem(sys.modules, "stepvideo", package)
        mp.syspath_prepend(str(src))
        try:
            modules = types.SimpleNamespace(
                dit=importlib.import_module("stepvideo.modules.model"),
                vae=importlib.import_module("stepvideo.vae.vae"),
                scheduler=importlib.import_module("stepvideo.diffusion.scheduler"),
            )
        except ImportError as err:
            pytest.skip(f"cannot import the release's networks from {src}: {err}")
        yield modules
        for name in [m for m in sys.modules if m == "stepvideo" or m.startswith("stepvideo.")]:
            sys.modules.pop(name, None)


def _perturb_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Move every parameter off its initial value so unit norm gains and zero biases are exercised too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def assert_parity(ours: torch.Tensor, theirs: torch.Tensor, rtol: float = 1e-5) -> None:
    assert ours.shape == theirs.shape
    scale = theirs.abs().max().item()
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=rtol, atol=rtol * scale)


# --------------------------------------------------------------------------------------------------------
# DiT


def _dit_pair(release, patch_size: int):
    cfg = DiTConfig(
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=128,  # the release fixes RoPE's split at 64/32/32, so 128 per head
        in_channels=8,
        out_channels=8,
        patch_size=patch_size,
        caption_channels=48,
        clip_channels=32,
    )
    torch.manual_seed(0)
    ours = StepVideoDiT(cfg, attention_backend="sdpa").eval()
    _perturb_(ours, seed=1)
    theirs = release.dit.StepVideoModel(
        num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        num_layers=cfg.num_layers,
        patch_size=patch_size,
        caption_channels=[cfg.caption_channels, cfg.clip_channels],
        attention_type="torch",
    )
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs.eval()


def _text_batch(cfg: DiTConfig, llm_lengths: list[int], max_llm: int = 12, clip_len: int = 5, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    b = len(llm_lengths)
    llm = torch.randn(b, max_llm, cfg.caption_channels, generator=g)
    llm_mask = torch.arange(max_llm)[None, :] < torch.tensor(llm_lengths)[:, None]
    clip = torch.randn(b, clip_len, cfg.clip_channels, generator=g)
    # the release's caption server prepends ones for every CLIP position to the LLM mask
    release_mask = torch.cat([torch.ones(b, clip_len, dtype=torch.long), llm_mask.long()], dim=1)
    return llm, llm_mask, clip, release_mask


def _release_forward(theirs, latents, timestep, llm, clip, release_mask):
    """The released ``StepVideoModel.forward`` called as its pipeline calls it."""
    return theirs(
        hidden_states=latents,
        timestep=timestep,
        encoder_hidden_states=llm,
        encoder_attention_mask=release_mask,
        encoder_hidden_states_2=clip,
        return_dict=False,
    )


def assert_same_forward(ours, theirs, frames: int, width: int, timestep: list[float], llm_lengths: list[int]):
    cfg = ours.cfg
    latents = torch.randn(
        len(llm_lengths), frames, cfg.in_channels, 4, width, generator=torch.Generator().manual_seed(2)
    )
    t = torch.tensor(timestep)
    llm, llm_mask, clip, release_mask = _text_batch(cfg, llm_lengths=llm_lengths)
    expected = _release_forward(theirs, latents, t, llm, clip, release_mask)
    with torch.no_grad():
        got = ours(latents, t, llm, llm_mask, clip)
    assert_parity(got, expected)


@pytest.mark.parametrize("patch_size", [1, 2])
def test_dit_forward_matches_release(release, patch_size):
    ours, theirs = _dit_pair(release, patch_size)
    assert_same_forward(ours, theirs, frames=3, width=6, timestep=[0.3, 0.85], llm_lengths=[12, 7])


def test_dit_cfg_sampling_loop_matches_release(release):
    """Three CFG Euler steps driven as the release's pipeline drives them (cond and uncond in one batch)."""
    ours, theirs = _dit_pair(release, patch_size=1)
    cfg = ours.cfg
    steps, guidance, shift = 3, 9.0, 13.0
    llm, llm_mask, clip, release_mask = _text_batch(cfg, llm_lengths=[10, 4])  # [prompt, negative prompt]
    noise = torch.randn(1, 3, cfg.in_channels, 4, 4, generator=torch.Generator().manual_seed(5))

    scheduler = release.scheduler.FlowMatchDiscreteScheduler()
    scheduler.set_timesteps(num_inference_steps=steps, time_shift=shift, device="cpu")
    latents = noise.clone()
    for t in scheduler.timesteps:
        model_input = torch.cat([latents] * 2)
        pred = _release_forward(theirs, model_input, t.expand(model_input.shape[0]), llm, clip, release_mask)
        pred_text, pred_uncond = pred.chunk(2)
        latents = scheduler.step(
            model_output=pred_uncond + guidance * (pred_text - pred_uncond), timestep=t, sample=latents
        )

    cond = {"llm_states": llm[:1], "llm_mask": llm_mask[:1], "clip_states": clip[:1]}
    uncond = {"llm_states": llm[1:], "llm_mask": llm_mask[1:], "clip_states": clip[1:]}
    with torch.no_grad():
        got = sample(
            dit_denoiser(ours), noise, cond, uncond, num_steps=steps, guidance_scale=guidance, shift=shift
        )
    assert_parity(got, latents)


def test_released_code_serves_a_dit_checkpoint_saved_here(release, tmp_path):
    """``StepVideoModel.from_pretrained`` (diffusers) reads our checkpoint folder, sharded, as it is."""
    ours, _ = _dit_pair(release, patch_size=1)
    checkpoints.save_dit(ours, storage.to_uri(tmp_path / "transformer"), max_shard_size=2_000_000)
    assert len(list((tmp_path / "transformer").glob("diffusion_pytorch_model-*-of-*.safetensors"))) > 1
    served = release.dit.StepVideoModel.from_pretrained(
        str(tmp_path / "transformer"), attention_type="torch"
    ).eval()

    assert_same_forward(ours, served, frames=2, width=4, timestep=[0.1, 0.6], llm_lengths=[9, 12])


# --------------------------------------------------------------------------------------------------------
# VAE


@pytest.fixture(scope="module")
def vae_pair(release):
    cfg = VAEConfig(z_channels=16, num_res_blocks=1)  # released widths, fewer blocks and latent channels
    torch.manual_seed(0)
    ours = CausalVideoVAE(cfg).eval()
    _perturb_(ours, seed=1, scale=0.02)
    theirs = release.vae.AutoencoderKL(
        z_channels=cfg.z_channels, num_res_blocks=cfg.num_res_blocks, version=2
    )
    # the released file names the decoder's last conv ``decoder.conv_out.*``; the class nests it one deeper
    state = {
        k.replace("decoder.conv_out.", "decoder.conv_out.conv.")
        if k.startswith("decoder.conv_out.")
        else k: v
        for k, v in ours.state_dict().items()
    }
    theirs.load_state_dict(state, strict=True)
    return ours, theirs.eval()


@pytest.fixture(scope="module")
def two_chunk_video():
    g = torch.Generator().manual_seed(4)
    return torch.rand(1, 34, 3, 32, 32, generator=g) * 2 - 1


def test_vae_posterior_matches_release(release, vae_pair, two_chunk_video):
    ours, theirs = vae_pair
    params = torch.cat([theirs.naive_encode(chunk) for chunk in two_chunk_video.split(17, dim=1)], dim=1)
    posterior = release.vae.DiagonalGaussianDistribution(params)
    with torch.no_grad():
        mean, logvar = ours.encode_distribution(two_chunk_video)
    assert mean.shape == (1, 6, 16, 2, 2)
    assert_parity(mean, posterior.mean)
    assert_parity(logvar, posterior.logvar)


def test_vae_sampled_latents_match_release(vae_pair, two_chunk_video):
    ours, theirs = vae_pair
    torch.manual_seed(7)
    expected = theirs.encode(two_chunk_video)
    with torch.no_grad():
        got = ours.encode(two_chunk_video, sample=True, generator=torch.Generator().manual_seed(7))
    assert_parity(got, expected)


def test_released_code_serves_a_vae_checkpoint_saved_here(release, vae_pair, tmp_path):
    """The release's server builds ``AutoencoderKL(model_path=<vae dir>/vae_v2.safetensors, version=2)``."""
    ours, _ = vae_pair
    checkpoints.save_vae(ours, storage.to_uri(tmp_path / "vae"))
    served = release.vae.AutoencoderKL(
        z_channels=ours.cfg.z_channels,
        num_res_blocks=ours.cfg.num_res_blocks,
        model_path=str(tmp_path / "vae" / checkpoints.VAE_WEIGHTS),
        version=2,
    ).eval()
    latents = torch.randn(1, 3, ours.cfg.z_channels, 2, 2, generator=torch.Generator().manual_seed(10))
    expected = served.decode(latents.clone())
    with torch.no_grad():
        got = ours.decode(latents)
    assert_parity(got, expected)


def test_vae_decode_with_boundary_blend_matches_release(vae_pair):
    ours, theirs = vae_pair
    latents = torch.randn(1, 6, 16, 2, 2, generator=torch.Generator().manual_seed(8))
    expected = theirs.decode(latents.clone())
    with torch.no_grad():
        got = ours.decode(latents)
    assert got.shape == (1, 34, 3, 32, 32)
    assert_parity(got, expected)


# --------------------------------------------------------------------------------------------------------
# sampler


@pytest.mark.parametrize(("steps", "shift"), [(50, 13.0), (15, 17.0), (7, 1.0)])
def test_sampling_timesteps_match_release(release, steps, shift):
    scheduler = release.scheduler.FlowMatchDiscreteScheduler()
    scheduler.set_timesteps(num_inference_steps=steps, time_shift=shift, device="cpu")
    torch.testing.assert_close(sampling_timesteps(steps, shift), scheduler.sigmas, rtol=0, atol=1e-7)
