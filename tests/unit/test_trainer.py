"""The DiT trainer's pieces in one process: the objective honours the stage's training settings
(precision, attention backend, activation checkpointing), which are not part of the network's config;
batches and schedules are pure functions of the seed and the step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.dit import StepVideoDiT
from t2v.config import load_config
from trainer.data import Batch
from trainer.objectives import FlowMatching
from trainer.parallel import apply_activation_checkpointing


def _batch(cfg) -> Batch:
    g = torch.Generator().manual_seed(0)
    te = cfg.text_encoders
    return Batch(
        latents=torch.randn(2, 1, cfg.dit.in_channels, 4, 4, generator=g),
        llm_states=torch.randn(2, te.llm_max_length, cfg.dit.caption_channels, generator=g),
        llm_mask=torch.ones(2, te.llm_max_length, dtype=torch.bool),
        clip_states=torch.randn(2, te.clip_max_length, cfg.dit.clip_channels, generator=g),
        clip_mask=torch.ones(2, te.clip_max_length, dtype=torch.bool),
        seeds=[11, 12],
    )


def _loss_and_grads(cfg, stage_cfg):
    torch.manual_seed(0)
    dit = StepVideoDiT(cfg.dit, attention_backend=stage_cfg.attention_backend).train()
    apply_activation_checkpointing(dit, stage_cfg.activation_checkpointing)
    objective = FlowMatching(stage_cfg, autocast_bf16=stage_cfg.precision == "bf16")
    loss = objective(dit, _batch(cfg)).per_sample.mean()
    loss.backward()
    return loss.detach(), {name.replace("_checkpoint_wrapped_module.", ""): p.grad for name, p in dit.named_parameters()}


def test_bf16_precision_runs_the_forward_in_bf16_and_keeps_fp32_weights_and_grads():
    cfg = load_config("tiny")
    fp32_loss, fp32_grads = _loss_and_grads(cfg, cfg.t2i)
    bf16_loss, bf16_grads = _loss_and_grads(cfg, cfg.t2i.model_copy(update={"precision": "bf16"}))
    assert fp32_loss.dtype == bf16_loss.dtype == torch.float32
    assert torch.isfinite(bf16_loss)
    assert float(bf16_loss) != float(fp32_loss)  # autocast really changed the arithmetic
    assert abs(float(bf16_loss) - float(fp32_loss)) < 0.05 * float(fp32_loss)
    assert all(g.dtype == torch.float32 for g in bf16_grads.values())


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_checkpointing_and_backend_from_the_stage_settings_give_the_same_loss(mode):
    cfg = load_config("tiny")
    plain, plain_grads = _loss_and_grads(cfg, cfg.t2i)
    other = cfg.t2i.model_copy(update={"activation_checkpointing": mode, "attention_backend": "math"})
    loss, grads = _loss_and_grads(cfg, other)
    assert torch.allclose(loss, plain, rtol=1e-5)
    assert grads.keys() == plain_grads.keys()
    for name in ("transformer_blocks.0.attn1.wqkv.weight", "transformer_blocks.2.ff.net.2.weight", "pos_embed.proj.weight"):
        assert torch.allclose(grads[name], plain_grads[name], rtol=1e-4, atol=1e-6), name


def test_activation_checkpointing_keeps_the_released_names():
    cfg = load_config("tiny")
    dit = StepVideoDiT(cfg.dit)
    names = list(dit.state_dict())
    apply_activation_checkpointing(dit, "full")
    assert list(dit.state_dict()) == names


def test_booleans_still_name_activation_checkpointing_modes():
    cfg = load_config("tiny", ["t2i.activation_checkpointing=true", "t2v.activation_checkpointing=false"])
    assert (cfg.t2i.activation_checkpointing, cfg.t2v.activation_checkpointing) == ("full", "none")


def test_lr_schedules():
    from trainer.optim import lr_factor

    cfg = load_config("tiny").t2i.model_copy(update={"steps": 100, "warmup_steps": 10, "lr_schedule": "cosine", "min_lr_ratio": 0.1})
    assert lr_factor(5, cfg) == pytest.approx(0.5)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, cfg) == pytest.approx(0.1)
    constant = cfg.model_copy(update={"lr_schedule": "constant"})
    assert lr_factor(100, constant) == 1.0


def _tiny_samples(n: int = 10):
    from t2v.shards import LatentSample

    rng = np.random.default_rng(0)
    return [
        LatentSample(f"s{i}", rng.normal(size=(2, 8, 4, 4)).astype(np.float32), rng.normal(size=(1, 8, 4, 4)).astype(np.float32),
                     np.full((3, 4), i, np.float32), np.ones(3, bool), np.full((5, 4), i, np.float32), np.ones(5, bool), {})
        for i in range(n)
    ]


def test_one_rank_with_batch_2b_sees_what_two_ranks_with_b_see():
    from trainer.data import LatentBatches

    samples = _tiny_samples()
    negative = {k: np.zeros_like(getattr(samples[0], k)) for k in ("llm_states", "llm_mask", "clip_states", "clip_mask")}
    cfg = load_config("tiny").t2i.model_copy(update={"batch_size": 4, "data": "images+videos"})
    whole = LatentBatches(samples, negative, cfg, 0, 1)
    halves = [LatentBatches(samples, negative, cfg.model_copy(update={"batch_size": 2}), r, 2) for r in (0, 1)]
    for _ in range(7):  # past an epoch (10 samples, 4 a step)
        big = whole.next()
        parts = [h.next() for h in halves]
        assert torch.equal(big.latents, torch.cat([p.latents for p in parts]))
        assert torch.equal(big.llm_states, torch.cat([p.llm_states for p in parts]))
        assert big.seeds == parts[0].seeds + parts[1].seeds


def test_the_loader_resumes_at_its_position_and_refuses_another_global_batch():
    from trainer.data import LatentBatches

    samples = _tiny_samples()
    negative = {k: np.zeros_like(getattr(samples[0], k)) for k in ("llm_states", "llm_mask", "clip_states", "clip_mask")}
    cfg = load_config("tiny").t2i.model_copy(update={"batch_size": 3})
    first = LatentBatches(samples, negative, cfg)
    for _ in range(5):
        first.next()
    state = first.state_dict()
    expected = first.next()
    again = LatentBatches(samples, negative, cfg)
    again.load_state_dict(state)
    assert torch.equal(again.next().latents, expected.latents)
    other = LatentBatches(samples, negative, cfg.model_copy(update={"batch_size": 2}))
    with pytest.raises(ValueError, match="global batch"):
        other.load_state_dict(state)


def test_initial_values_follow_the_constructors_distributions():
    from model.dit import initial_value

    cfg = load_config("tiny")
    dit = StepVideoDiT(cfg.dit)
    modules = dict(dit.named_modules())
    g = torch.Generator().manual_seed(0)
    for name, param in dit.named_parameters():
        module_name, _, param_name = name.rpartition(".")
        value = initial_value(modules[module_name], param_name, param.shape, g)
        assert value.shape == param.shape, name
        if param.numel() > 1000:  # the same spread as PyTorch's own init of this parameter
            assert value.std().item() == pytest.approx(param.detach().std().item(), rel=0.1), name


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


def _two_bucket_samples():
    from t2v.shards import LatentSample

    rng = np.random.default_rng(1)
    out = []
    for i in range(14):
        frames, size = (2, 4) if i % 3 else (3, 6)  # 9 samples of 2x4x4, 5 of 3x6x6
        out.append(LatentSample(f"s{i}", rng.normal(size=(frames, 8, size, size)).astype(np.float32),
                                rng.normal(size=(1, 8, size, size)).astype(np.float32),
                                np.full((3, 4), i, np.float32), np.ones(3, bool), np.full((5, 4), i, np.float32), np.ones(5, bool), {}))
    return out


def test_batches_come_from_one_shape_bucket_with_its_own_batch_size():
    from trainer.data import LatentBatches

    samples = _two_bucket_samples()
    negative = {k: np.zeros_like(getattr(samples[0], k)) for k in ("llm_states", "llm_mask", "clip_states", "clip_mask")}
    cfg = load_config("tiny").t2i.model_copy(update={"batch_size": 4, "data": "images+videos"})
    sizes = {(3, 6, 6): 2, (1, 6, 6): 3}  # latent grids: big clips 2 a batch, their images 3
    loader = LatentBatches(samples, negative, cfg, batch_sizes=sizes)
    assert loader.buckets == [(2, 4, 4), (3, 6, 6)]
    seen = {}
    for _ in range(40):
        kind = loader.kind(loader.drawn)
        batch = loader.next()
        shape = tuple(batch.latents.shape)
        expected = {("video", 6): 2, ("image", 6): 3}.get((kind, shape[-1]), 4)
        assert shape[0] == expected, (kind, shape)
        seen[shape[1:]] = seen.get(shape[1:], 0) + 1
    assert {(2, 8, 4, 4), (3, 8, 6, 6), (1, 8, 4, 4), (1, 8, 6, 6)} <= set(seen)

    # two ranks with half the per-bucket batch sizes see the same samples, step by step
    halves = [LatentBatches(samples, negative, cfg.model_copy(update={"batch_size": 2}), r, 2,
                            batch_sizes={k: max(1, v // 2) for k, v in {(3, 6, 6): 2, (1, 6, 6): 2}.items()}) for r in (0, 1)]
    whole = LatentBatches(samples, negative, cfg, batch_sizes={(3, 6, 6): 2, (1, 6, 6): 2})
    for _ in range(25):
        big = whole.next()
        parts = [h.next() for h in halves]
        assert torch.equal(big.latents, torch.cat([p.latents for p in parts]))
        assert big.seeds == parts[0].seeds + parts[1].seeds

    # the position (micro-batches and every bucket's cursor) resumes exactly
    state = whole.state_dict()
    expected = [whole.next().latents for _ in range(6)]
    again = LatentBatches(samples, negative, cfg, batch_sizes={(3, 6, 6): 2, (1, 6, 6): 2})
    again.load_state_dict(state)
    assert all(torch.equal(again.next().latents, e) for e in expected)


def test_bucket_batch_sizes_are_validated_naming_the_field():
    from t2v.config import ConfigError

    with pytest.raises(ConfigError, match="batch_size_per_bucket"):
        load_config("tiny", ["t2v.batch_size_per_bucket={204x544: 1}"])
    cfg = load_config("tiny", ["t2v.batch_size_per_bucket={204x544x992: 1, 1x544x992: 8}"])
    assert cfg.t2v.batch_size_per_bucket == {"204x544x992": 1, "1x544x992": 8}


def test_reading_ahead_on_threads_hands_out_the_plain_loaders_batches_and_position():
    import threading
    import time

    from trainer.data import LatentBatches, ReadAhead

    samples = _two_bucket_samples()
    negative = {k: np.zeros_like(getattr(samples[0], k)) for k in ("llm_states", "llm_mask", "clip_states", "clip_mask")}
    cfg = load_config("tiny").t2i.model_copy(update={"batch_size": 2, "data": "images+videos", "grad_accum_steps": 2})
    readers: set[str] = set()

    class SlowStorage(list):  # a read takes a while, as from S3, and says which thread did it
        def __getitem__(self, index):
            readers.add(threading.current_thread().name)
            time.sleep(0.002)
            return list.__getitem__(self, index)

    plain = LatentBatches(samples, negative, cfg)
    ahead = ReadAhead(LatentBatches(SlowStorage(samples), negative, cfg), workers=3)
    try:
        for i in range(30):
            a, b = plain.next(), ahead.next()
            assert torch.equal(a.latents, b.latents) and torch.equal(a.llm_states, b.llm_states) and a.seeds == b.seeds
            # the saved position is that of the batches handed out, not of those read ahead
            assert ahead.state_dict() == plain.state_dict(), i
        assert any(name.startswith("latent-reader") for name in readers)
        state = ahead.state_dict()
        expected = [plain.next().latents for _ in range(5)]
        ahead.load_state_dict(state)  # a resume (or a reload) rewinds what was read ahead
        assert all(torch.equal(ahead.next().latents, e) for e in expected)
        ahead.drawn = 3  # the non-finite reload's "go on from here"
        plain.load_state_dict(ahead.state_dict())
        assert torch.equal(ahead.next().latents, plain.next().latents)
    finally:
        ahead.close()
