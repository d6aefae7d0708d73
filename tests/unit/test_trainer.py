"""The DiT trainer's loss step honours the training settings of its stage (precision, attention backend,
activation checkpointing), which are not part of the network's config."""

from __future__ import annotations

import torch

from model.dit import StepVideoDiT
from t2v.config import load_config
from trainer.dit_worker import Batch, training_loss


def _batch(cfg) -> Batch:
    g = torch.Generator().manual_seed(0)
    te = cfg.text_encoders
    return Batch(
        latents=torch.randn(2, 1, cfg.dit.in_channels, 4, 4, generator=g),
        llm_states=torch.randn(2, te.llm_max_length, cfg.dit.caption_channels, generator=g),
        llm_mask=torch.ones(2, te.llm_max_length, dtype=torch.bool),
        clip_states=torch.randn(2, te.clip_max_length, cfg.dit.clip_channels, generator=g),
        clip_mask=torch.ones(2, te.clip_max_length, dtype=torch.bool),
    )


def _loss_and_grads(cfg, stage_cfg):
    torch.manual_seed(0)
    dit = StepVideoDiT(
        cfg.dit,
        attention_backend=stage_cfg.attention_backend,
        activation_checkpointing=stage_cfg.activation_checkpointing,
    ).train()
    loss = training_loss(dit, _batch(cfg), stage_cfg, torch.Generator().manual_seed(1))
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in dit.named_parameters()}


def test_bf16_precision_runs_the_forward_in_bf16_and_keeps_fp32_weights_and_grads():
    cfg = load_config("tiny")
    fp32_loss, fp32_grads = _loss_and_grads(cfg, cfg.t2i)
    bf16_loss, bf16_grads = _loss_and_grads(cfg, cfg.t2i.model_copy(update={"precision": "bf16"}))
    assert fp32_loss.dtype == bf16_loss.dtype == torch.float32
    assert torch.isfinite(bf16_loss)
    assert float(bf16_loss) != float(fp32_loss)  # autocast really changed the arithmetic
    assert abs(float(bf16_loss) - float(fp32_loss)) < 0.05 * float(fp32_loss)
    assert all(g.dtype == torch.float32 for g in bf16_grads.values())


def test_checkpointing_and_backend_from_the_stage_settings_give_the_same_loss():
    cfg = load_config("tiny")
    plain, plain_grads = _loss_and_grads(cfg, cfg.t2i)
    other = cfg.t2i.model_copy(update={"activation_checkpointing": True, "attention_backend": "math"})
    loss, grads = _loss_and_grads(cfg, other)
    assert torch.allclose(loss, plain, rtol=1e-5)
    name = "transformer_blocks.0.attn1.wqkv.weight"
    assert torch.allclose(grads[name], plain_grads[name], rtol=1e-4, atol=1e-6)


def test_a_checkpoint_config_holds_the_architecture_only(tmp_path):
    import json

    from t2v import checkpoints

    cfg = load_config("tiny")
    dit = StepVideoDiT(cfg.dit, attention_backend="math", activation_checkpointing=True)
    checkpoints.save_dit(dit, str(tmp_path / "ckpt"))
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())["_t2v_config"]
    assert "attention_backend" not in saved and "activation_checkpointing" not in saved
    # a checkpoint written before the runtime knobs moved out still loads
    legacy = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    legacy["_t2v_config"].update(attention_backend="sdpa", activation_checkpointing=False)
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(legacy))
    loaded = checkpoints.load_dit(str(tmp_path / "ckpt"))
    assert loaded.cfg == cfg.dit
