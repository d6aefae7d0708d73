"""CausalVideoVAE: shapes and compression, causality, chunk blending, released layout, loss, config checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from model.config import VAEConfig
from model.losses import kl_divergence, vae_loss
from model.vae import CausalVideoVAE, pixel_shuffle_3d, pixel_unshuffle_3d

ROOT = Path(__file__).resolve().parents[2]


def tiny_cfg(**over) -> VAEConfig:
    """The tiny profile's widths with the released level structure (one spatial-only downsample, two
    causal 3D downsamples, the dual-path head): 16x spatial, 8x temporal."""
    base = yaml.safe_load((ROOT / "configs/tiny/vae_model.yaml").read_text())
    base.update(encoder_channel_mult=[1, 1, 2, 4], decoder_channel_mult=[1, 1, 2, 4], num_spatial_only_downsamples=1)
    base.update(over)
    return VAEConfig(**base)


def test_tiny_profile_vae_is_8x_spatial_8x_temporal():
    cfg = VAEConfig(**yaml.safe_load((ROOT / "configs/tiny/vae_model.yaml").read_text()))
    assert (cfg.spatial_compression, cfg.temporal_compression) == (8, 8)
    with torch.no_grad():
        mean, _ = CausalVideoVAE(cfg).eval().encode_distribution(video(17, size=32))
    assert mean.shape == (1, 3, cfg.z_channels, 4, 4)


@pytest.fixture(scope="module")
def vae() -> CausalVideoVAE:
    torch.manual_seed(0)
    return CausalVideoVAE(tiny_cfg()).eval()


def video(frames: int, size: int = 64, b: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, frames, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_tiny_compression_is_the_released_one():
    cfg = tiny_cfg()
    assert (cfg.spatial_compression, cfg.temporal_compression) == (16, 8)
    assert cfg.latent_frames(17) == 3 and cfg.latent_frames(34) == 6 and cfg.latent_frames(204) == 36
    assert cfg.frames_for_latents(36) == 204


@pytest.mark.parametrize("frames,latent_frames,b", [(17, 3, 2), (34, 6, 2), (204, 36, 1)])
def test_shapes_round_trip(vae, frames, latent_frames, b):
    """16x spatial, 8x temporal with a causal first frame: 17 -> 3, 34 -> 6, 204 -> 36 latent frames."""
    x = video(frames, b=b)
    with torch.no_grad():
        mean, logvar = vae.encode_distribution(x)
        assert mean.shape == logvar.shape == (b, latent_frames, 8, 4, 4)
        z = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
        assert z.shape == mean.shape and not torch.allclose(z, mean)
        assert torch.equal(vae.encode(x, sample=False), mean)
        out = vae.decode(z)
    assert out.shape == x.shape


def test_one_generator_per_sample_makes_a_samples_draw_its_own(vae, monkeypatch):
    """A list of generators, one per sample: a sample's posterior draw follows its generator, not its
    place in the batch (the encode stage seeds one per clip)."""
    x = video(17, b=2)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # batch-invariant CPU convolutions
    with torch.no_grad():
        mean, logvar = vae.encode_distribution(x)
        ab = vae.encode(x, generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
        ba = vae.encode(x.flip(0), generator=[torch.Generator().manual_seed(2), torch.Generator().manual_seed(1)])
        assert torch.equal(ab, ba.flip(0)) and not torch.equal(ab, mean)
        noise = torch.randn(mean.shape[1:], generator=torch.Generator().manual_seed(2))
        assert torch.allclose(ab[1], mean[1] + torch.exp(0.5 * logvar[1]) * noise)
        with pytest.raises(ValueError, match="1 generators for a batch of 2"):
            vae.encode(x, generator=[torch.Generator()])

def test_spatial_only_knob_gives_8x_spatial():
    cfg = tiny_cfg(num_spatial_only_downsamples=0, dual_path=False, encoder_channel_mult=[1, 1, 2, 4])
    assert (cfg.spatial_compression, cfg.temporal_compression) == (8, 8)
    model = CausalVideoVAE(cfg).eval()
    with torch.no_grad():
        mean, _ = model.encode_distribution(video(17, size=32))
        assert mean.shape == (1, 3, 8, 4, 4)
        assert model.decode(mean).shape == (1, 17, 3, 32, 32)


def test_encoding_is_causal(vae):
    x = video(34)
    with torch.no_grad():
        ref, _ = vae.encode_distribution(x)
        later = x.clone()
        later[:, 20] = -later[:, 20]  # a frame of the second chunk
        m, _ = vae.encode_distribution(later)
        assert torch.equal(m[:, :3], ref[:, :3])  # the first chunk's latents do not move
        assert not torch.allclose(m[:, 3:], ref[:, 3:])
        inside = x.clone()
        inside[:, 5] = -inside[:, 5]  # a later frame of the first chunk
        m, _ = vae.encode_distribution(inside)
        assert torch.allclose(m[:, 0], ref[:, 0], atol=1e-6)  # causal first frame: latent 0 sees frame 0 only
        assert not torch.allclose(m[:, 1], ref[:, 1])


def test_decoding_is_causal_within_a_chunk(vae):
    z = torch.randn(1, 3, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = vae.decode(z)
        z2 = z.clone()
        z2[:, 2] += 1.0
        out = vae.decode(z2)
    assert torch.allclose(out[:, :9], ref[:, :9], atol=1e-6)  # frames before latent 2's span
    assert not torch.allclose(out[:, 9:], ref[:, 9:])


def test_chunk_boundaries_are_blended_like_the_release(vae):
    z = torch.randn(1, 6, 8, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        raw = vae.decode_chunks(z)
        out = vae.decode(z)
    first = 0.6 * raw[:, 17] + 0.4 * raw[:, 16]
    last = 0.6 * raw[:, 16] + 0.4 * first
    assert torch.allclose(out[:, 17], first, atol=1e-6)
    assert torch.allclose(out[:, 16], last, atol=1e-6)
    assert torch.equal(out[:, :16], raw[:, :16]) and torch.equal(out[:, 18:], raw[:, 18:])


def test_pixel_shuffle_inverts_unshuffle_after_the_causal_pad():
    x = torch.randn(1, 4, 5, 4, 4)
    y = pixel_unshuffle_3d(x, 2)
    assert y.shape == (1, 32, 3, 2, 2)
    assert torch.equal(pixel_shuffle_3d(y, 2), x)


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    model = CausalVideoVAE(tiny_cfg()).train()
    x = video(17, size=32, b=1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(4):
        recon, mean, logvar = model(x, generator=torch.Generator().manual_seed(0))
        loss, parts = vae_loss(recon, x, mean, logvar, kl_weight=1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(parts) >= {"l1", "kl", "total"}
    assert losses[-1] < losses[0]


def test_vae_loss_parts_and_flags():
    x = torch.zeros(1, 2, 3, 4, 4)
    mean = torch.zeros(1, 1, 2, 1, 1)
    logvar = torch.zeros_like(mean)
    total, parts = vae_loss(x + 0.5, x, mean, logvar, kl_weight=1.0)
    assert parts["l1"] == pytest.approx(0.5) and parts["kl"] == pytest.approx(0.0)
    assert float(kl_divergence(mean + 2.0, logvar)) == pytest.approx(2.0)
    total, parts = vae_loss(x + 0.5, x, mean, logvar, kl_weight=0.0, mse_weight=2.0)
    assert float(total) == pytest.approx(0.5 + 2.0 * 0.25)
    with pytest.raises(ValueError, match="perceptual_fn"):
        vae_loss(x, x, mean, logvar, perceptual_weight=1.0)


def test_config_rejects_inconsistent_values_naming_the_field():
    with pytest.raises(ValueError, match="chunk_frames"):
        tiny_cfg(chunk_frames=16)
    with pytest.raises(ValueError, match="decoder_channel_mult"):
        tiny_cfg(decoder_channel_mult=[1, 2])
    with pytest.raises(ValueError, match="norm_groups"):
        tiny_cfg(norm_groups=3)
    with pytest.raises(ValueError, match="num_spatial_only_downsamples"):
        tiny_cfg(num_spatial_only_downsamples=4)
    with pytest.raises(ValueError, match="z_channels"):
        tiny_cfg(z_channels=64)
    with pytest.raises(ValueError, match="num_frames"):
        tiny_cfg().latent_frames(20)


def test_full_config_on_meta_has_released_names_and_count():
    cfg = VAEConfig(**yaml.safe_load((ROOT / "configs/step-video-t2v-30b/vae_model.yaml").read_text()))
    assert cfg == VAEConfig()  # the defaults are the release
    with torch.device("meta"):
        model = CausalVideoVAE(cfg)
    sd = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 498_818_819
    expected = {
        "encoder.conv_in.conv.weight": (32, 3, 3, 3, 3),
        "encoder.down.0.block.0.nin_shortcut.conv.weight": (128, 32, 1, 1, 1),
        "encoder.down.0.downsample.conv.weight": (128, 128, 3, 3),
        "encoder.down.1.downsample.conv.conv.weight": (256, 256, 3, 3, 3),
        "encoder.down.1.block.0.nin_shortcut.conv.weight": (256, 128, 1, 1, 1),
        "encoder.mid.attn_1.q.conv.weight": (512, 512, 1, 1, 1),
        "encoder.conv_patchify.conv.conv.weight": (256, 512, 3, 3, 3),
        "encoder.conv_out.conv.weight": (128, 2048, 3, 3, 3),
        "decoder.conv_in.conv.weight": (2048, 64, 3, 3, 3),
        "decoder.conv_unpatchify.conv.conv.weight": (4096, 2048, 3, 3, 3),
        "decoder.up.3.upsample.conv3d.conv1.conv.weight": (512, 512, 3, 3, 3),
        "decoder.up.1.upsample.conv.weight": (256, 256, 3, 3),
        "decoder.up.0.block.2.conv2.conv.weight": (128, 128, 3, 3, 3),
        "decoder.conv_out.weight": (3, 128, 3, 3, 3),
    }
    for name, shape in expected.items():
        assert tuple(sd[name].shape) == shape, name
