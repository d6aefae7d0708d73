"""StepVideoDiT: shapes, gradients, RoPE-3D, masks, backends, checkpointing, overfitting, released layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from model.attention import attention
from model.config import DiTConfig
from model.dit import (
    SelfAttention,
    StepVideoDiT,
    apply_rope_3d,
    rope_cos_sin,
    rope_positions,
)
from model.flow_matching import flow_matching_loss, noisy_latents, velocity_target

ROOT = Path(__file__).resolve().parents[2]


def tiny_cfg(**over) -> DiTConfig:
    base = yaml.safe_load((ROOT / "configs/tiny/dit.yaml").read_text())
    base.update(over)
    return DiTConfig(**base)


def inputs(cfg: DiTConfig, b=2, f=3, h=4, w=4, lc=5, n_llm=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(b, f, cfg.in_channels, h, w, generator=g)
    t = torch.rand(b, generator=g)
    llm = torch.randn(b, n_llm, cfg.caption_channels, generator=g)
    clip = torch.randn(b, lc, cfg.clip_channels, generator=g)
    llm_mask = torch.ones(b, n_llm, dtype=torch.bool)
    llm_mask[0, 4:] = False  # sample 0 has 4 real LLM tokens
    clip_mask = torch.ones(b, lc, dtype=torch.bool)
    clip_mask[1, 3:] = False
    return latents, t, llm, llm_mask, clip, clip_mask


def test_tiny_yaml_matches_the_tiny_text_encoders_and_vae():
    cfg = tiny_cfg()
    text = yaml.safe_load((ROOT / "configs/tiny/text_encoders.yaml").read_text())
    vae = yaml.safe_load((ROOT / "configs/tiny/vae_model.yaml").read_text())
    assert (cfg.caption_channels, cfg.clip_channels) == (text["llm_dim"], text["clip_dim"])
    assert cfg.in_channels == cfg.out_channels == vae["z_channels"]


def test_config_rejects_bad_rope_split_naming_it():
    with pytest.raises(ValueError, match="rope_split"):
        DiTConfig(num_attention_heads=2, attention_head_dim=16, rope_split=(8, 4, 2))
    with pytest.raises(ValueError, match="num_layers"):
        DiTConfig(num_layers=0)
    with pytest.raises(ValueError, match="extra"):
        DiTConfig(not_a_field=1)


def test_output_shape_and_gradient_flow():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = StepVideoDiT(cfg)
    latents, t, llm, llm_mask, clip, clip_mask = inputs(cfg)
    latents.requires_grad_(True)
    out = model(latents, t, llm, llm_mask, clip, clip_mask)
    assert out.shape == latents.shape
    out.square().mean().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"


def test_patch_size_two_round_trips_shape():
    cfg = tiny_cfg(patch_size=2)
    model = StepVideoDiT(cfg)
    latents, t, llm, llm_mask, clip, clip_mask = inputs(cfg, h=4, w=6)
    assert model(latents, t, llm, llm_mask, clip, clip_mask).shape == latents.shape


def test_rope_positions_follow_token_order():
    pos = rope_positions(2, 3, 4)
    assert pos.shape == (24, 3)
    for f in range(2):
        for h in range(3):
            for w in range(4):
                assert pos[f * 12 + h * 4 + w].tolist() == [f, h, w]


def test_rope_3d_scores_depend_only_on_relative_position():
    dims = (8, 4, 4)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 1, 1, 16, generator=g)
    k = torch.randn(1, 1, 1, 16, generator=g)

    def score(pq, pk):
        pos = torch.tensor([pq, pk])
        cos, sin = rope_cos_sin(pos, dims, 1e4)
        qr = apply_rope_3d(q.expand(1, 2, 1, 16), cos, sin, dims)[0, 0, 0]
        kr = apply_rope_3d(k.expand(1, 2, 1, 16), cos, sin, dims)[0, 1, 0]
        return float(qr @ kr)

    base = score([1, 2, 3], [0, 1, 1])
    assert score([5, 4, 7], [4, 3, 5]) == pytest.approx(base, abs=1e-4)  # same offsets
    assert abs(score([1, 2, 3], [0, 1, 2]) - base) > 1e-3  # a different width offset
    # each axis rotates only its own channel slice: frame offset leaves height/width channels alone
    pos = torch.tensor([[0, 0, 0], [3, 0, 0]])
    cos, sin = rope_cos_sin(pos, dims, 1e4)
    x = torch.randn(1, 2, 1, 16, generator=g).expand(1, 2, 1, 16).clone()
    x[:, 1] = x[:, 0]
    y = apply_rope_3d(x, cos, sin, dims)
    assert torch.allclose(y[0, 0, 0, 8:], y[0, 1, 0, 8:])
    assert not torch.allclose(y[0, 0, 0, :8], y[0, 1, 0, :8])


def test_wqkv_is_interleaved_per_head():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    attn = SelfAttention(cfg)
    x = torch.randn(1, 6, cfg.hidden_size)
    cos, sin = rope_cos_sin(rope_positions(1, 2, 3), cfg.rope_split, cfg.rope_theta)
    hd, nh = cfg.attention_head_dim, cfg.num_attention_heads
    w = attn.wqkv.weight  # rows: head 0 [q; k; v], head 1 [q; k; v], ...
    qs, ks, vs = [], [], []
    for h in range(nh):
        rows = w[3 * hd * h : 3 * hd * (h + 1)]
        qs.append(x @ rows[:hd].T)
        ks.append(x @ rows[hd : 2 * hd].T)
        vs.append(x @ rows[2 * hd :].T)
    q = apply_rope_3d(attn.q_norm(torch.stack(qs, 2)), cos, sin, cfg.rope_split)
    k = apply_rope_3d(attn.k_norm(torch.stack(ks, 2)), cos, sin, cfg.rope_split)
    expected = attn.wo(attention(q, k, torch.stack(vs, 2), None, "math").reshape(1, 6, -1))
    assert torch.allclose(attn(x, cos, sin), expected, atol=1e-5)


def test_padding_tokens_do_not_change_outputs():
    torch.manual_seed(0)
    cfg = tiny_cfg(mask_clip_padding=True)
    model = StepVideoDiT(cfg).eval()
    latents, t, llm, llm_mask, clip, clip_mask = inputs(cfg)
    with torch.no_grad():
        ref = model(latents, t, llm, llm_mask, clip, clip_mask)
        llm2, clip2 = llm.clone(), clip.clone()
        llm2[0, 4:] = 100.0 * torch.randn_like(llm2[0, 4:])
        clip2[1, 3:] = 100.0 * torch.randn_like(clip2[1, 3:])
        out = model(latents, t, llm2, llm_mask, clip2, clip_mask)
        assert torch.allclose(out, ref, atol=1e-5)
        llm3 = llm.clone()
        llm3[0, 1] = torch.randn_like(llm3[0, 1])  # a real token does matter (LayerNorm ignores offsets)
        assert not torch.allclose(model(latents, t, llm3, llm_mask, clip, clip_mask)[0], ref[0], atol=1e-4)


def test_release_mode_attends_every_clip_position():
    torch.manual_seed(0)
    cfg = tiny_cfg(mask_clip_padding=False)
    model = StepVideoDiT(cfg).eval()
    latents, t, llm, llm_mask, clip, clip_mask = inputs(cfg)
    with torch.no_grad():
        ref = model(latents, t, llm, llm_mask, clip, clip_mask)
        clip2 = clip.clone()
        clip2[1, 3:] += 5.0 * torch.randn_like(clip2[1, 3:])
        assert not torch.allclose(model(latents, t, llm, llm_mask, clip2, clip_mask)[1], ref[1], atol=1e-4)


def test_sdpa_and_math_reference_agree():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = StepVideoDiT(cfg).eval()
    args = inputs(cfg)
    with torch.no_grad():
        model.set_attention_backend("sdpa")
        a = model(*args)
        model.set_attention_backend("math")
        b = model(*args)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(RuntimeError, match="flash"):
        model.set_attention_backend("flash")
        model(*args)


def test_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    plain = StepVideoDiT(cfg).train()
    ckpt = StepVideoDiT(cfg, activation_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    args = inputs(cfg)
    for m in (plain, ckpt):
        m(*args).square().mean().backward()
    for (name, p1), (_, p2) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-6, rtol=1e-5), name


def test_bf16_forward_runs():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = StepVideoDiT(cfg).to(torch.bfloat16)
    latents, t, llm, llm_mask, clip, clip_mask = inputs(cfg)
    out = model(latents.bfloat16(), t, llm.bfloat16(), llm_mask, clip.bfloat16(), clip_mask)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_tiny_dit_overfits_one_batch():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = StepVideoDiT(cfg).train()
    data, t, llm, llm_mask, clip, clip_mask = inputs(cfg, b=2, f=2, h=4, w=4)
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(3))
    x_t = noisy_latents(data, noise, t)
    target = velocity_target(data, noise)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(60):
        loss = flow_matching_loss(model(x_t, t, llm, llm_mask, clip, clip_mask), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-10:]) * 10 <= losses[0], (losses[0], losses[-10:])


def test_full_config_on_meta_has_released_names_and_count():
    cfg = DiTConfig(**yaml.safe_load((ROOT / "configs/step-video-t2v-30b/dit.yaml").read_text()))
    with torch.device("meta"):
        model = StepVideoDiT(cfg)
    sd = model.state_dict()
    assert len(sd) == 785
    assert sum(p.numel() for p in model.parameters()) == 29_342_478_400
    expected = {
        "pos_embed.proj.weight": (6144, 64, 1, 1),
        "adaln_single.emb.timestep_embedder.linear_1.weight": (6144, 256),
        "adaln_single.linear.weight": (36864, 6144),
        "caption_projection.linear_1.weight": (6144, 6144),
        "clip_projection.weight": (6144, 1024),
        "transformer_blocks.0.attn1.wqkv.weight": (18432, 6144),
        "transformer_blocks.0.attn1.q_norm.weight": (128,),
        "transformer_blocks.0.attn2.wkv.weight": (12288, 6144),
        "transformer_blocks.47.ff.net.0.proj.weight": (24576, 6144),
        "transformer_blocks.47.ff.net.2.weight": (6144, 24576),
        "transformer_blocks.47.scale_shift_table": (6, 6144),
        "scale_shift_table": (2, 6144),
        "proj_out.weight": (64, 6144),
    }
    for name, shape in expected.items():
        assert tuple(sd[name].shape) == shape, name
    assert "caption_norm.weight" not in sd and "norm_out.weight" not in sd  # non-affine norms
