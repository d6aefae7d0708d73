"""Video-DPO: the flow-matching DPO loss against a hand computation, its gradient's direction, the
objective on a tiny DiT, and how candidates become preference pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model import flow_matching as fm
from model.dit import StepVideoDiT
from t2v.config import ConfigError, load_config
from trainer.data import Batch
from trainer.objectives import FlowMatchingDPO


def test_the_loss_matches_a_hand_computation():
    pw, pl = torch.tensor([0.30, 0.50]), torch.tensor([0.40, 0.45])
    rw, rl = torch.tensor([0.35, 0.50]), torch.tensor([0.38, 0.40])
    beta = 20.0
    loss, margin = fm.flow_dpo_loss(pw, pl, rw, rl, beta)
    # pair 0: (0.30 - 0.35) - (0.40 - 0.38) = -0.07 -> margin = -10 * -0.07 = 0.7
    # pair 1: (0.50 - 0.50) - (0.45 - 0.40) = -0.05 -> margin = 0.5
    assert margin.tolist() == pytest.approx([0.7, 0.5], abs=1e-6)
    expected = [math.log(1 + math.exp(-0.7)), math.log(1 + math.exp(-0.5))]  # -log sigmoid(margin)
    assert loss.tolist() == pytest.approx(expected, abs=1e-6)


def test_the_gradient_pushes_the_preferred_error_down_relative_to_the_rejected():
    pw = torch.tensor([0.4, 0.2], requires_grad=True)
    pl = torch.tensor([0.3, 0.6], requires_grad=True)
    loss, _ = fm.flow_dpo_loss(pw, pl, torch.tensor([0.4, 0.2]), torch.tensor([0.3, 0.6]), beta=10.0)
    loss.sum().backward()
    assert (pw.grad > 0).all() and (pl.grad < 0).all()  # descent lowers the preferred error, raises the rejected
    assert torch.allclose(pw.grad, -pl.grad)
    # identical policy and reference: margin 0, loss log 2, gradient beta / 4
    assert torch.allclose(pw.grad, torch.full((2,), 10.0 / 4))


def _pairs_batch(cfg, b=2):
    g = torch.Generator().manual_seed(0)
    te = cfg.text_encoders
    shape = (b, 2, cfg.dit.in_channels, 4, 4)
    return Batch(
        latents=torch.randn(shape, generator=g),
        llm_states=torch.randn(b, te.llm_max_length, cfg.dit.caption_channels, generator=g),
        llm_mask=torch.ones(b, te.llm_max_length, dtype=torch.bool),
        clip_states=torch.randn(b, te.clip_max_length, cfg.dit.clip_channels, generator=g),
        clip_mask=torch.ones(b, te.clip_max_length, dtype=torch.bool),
        seeds=[3, 4],
        rejected=torch.randn(shape, generator=g),
    )


def test_the_objective_starts_at_log_2_and_a_few_steps_prefer_the_preferred():
    cfg = load_config("tiny")
    torch.manual_seed(0)
    policy = StepVideoDiT(cfg.dit).train()
    reference = StepVideoDiT(cfg.dit).eval()
    reference.load_state_dict(policy.state_dict())
    reference.requires_grad_(False)
    objective = FlowMatchingDPO(cfg.dpo.model_copy(update={"beta": 2000.0}))
    objective.reference = reference
    batch = _pairs_batch(cfg)
    out = objective(policy, batch)
    assert out.per_sample.tolist() == pytest.approx([math.log(2)] * 2, abs=1e-5)
    assert out.extras["dpo/accuracy"].tolist() == [0.0, 0.0]
    assert out.extras["dpo/divergence_from_reference"].abs().max() < 1e-10
    optimizer = torch.optim.SGD(policy.parameters(), lr=1e-3)
    for _ in range(5):
        optimizer.zero_grad()
        objective(policy, batch).per_sample.mean().backward()
        optimizer.step()
    with torch.no_grad():
        after = objective(policy, batch)
    assert (after.extras["dpo/reward_margin"] > 0).all() and after.per_sample.mean() < math.log(2)
    assert after.extras["dpo/divergence_from_reference"].min() > 0


def test_the_objective_refuses_samples_without_a_rejected_video():
    cfg = load_config("tiny")
    objective = FlowMatchingDPO(cfg.dpo)
    objective.reference = StepVideoDiT(cfg.dit)
    batch = _pairs_batch(cfg)
    batch.rejected = None
    with pytest.raises(ValueError, match="preference pairs"):
        objective(StepVideoDiT(cfg.dit), batch)


def test_pairs_take_the_best_against_the_worst_above_the_margin():
    from components.dpo.stage import preference_pairs

    rewards = np.array([
        [0.2, 0.9, 0.5, 0.1],  # gap 0.8: pair (1, 3)
        [0.5, 0.52, 0.5, 0.51],  # gap 0.02 < margin: none
        [0.7, 0.7, 0.7, 0.7],  # all equal: none
        [0.0, 0.3, 0.3, 0.0],  # ties: the first best, the first worst
    ])
    assert preference_pairs(rewards, 0.05) == [(0, 1, 3), (3, 1, 0)]
    assert preference_pairs(rewards, 0.0) == [(0, 1, 3), (1, 1, 0), (3, 1, 0)]


def test_more_pairs_per_prompt_pair_the_ranks_from_the_outside_in():
    from components.dpo.stage import preference_pairs

    rewards = np.array([
        [0.2, 0.9, 0.5, 0.1, 0.6, 0.3],  # ranked 1 4 2 5 0 3: pairs (1, 3), (4, 0), (2, 5)
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.0],  # (0, 5); the next ranks tie: none
    ])
    pairs = preference_pairs(rewards, 0.0, per_prompt=3)
    assert pairs == [(0, 1, 3), (0, 4, 0), (0, 2, 5), (1, 0, 5)]
    assert preference_pairs(rewards, 0.25, per_prompt=3) == [(0, 1, 3), (0, 4, 0), (1, 0, 5)]
    assert preference_pairs(rewards, 0.0, per_prompt=1) == preference_pairs(rewards, 0.0) == [(0, 1, 3), (1, 0, 5)]
    for prompt in (0, 1):
        used = [c for p, w, r in pairs if p == prompt for c in (w, r)]
        assert len(used) == len(set(used))  # no candidate in two pairs


def test_more_pairs_than_half_the_candidates_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match="pairs_per_prompt"):
        load_config("tiny", ["dpo.pairs_per_prompt=3", "dpo.samples_per_prompt=4"])
    assert load_config("tiny", ["dpo.pairs_per_prompt=2", "dpo.samples_per_prompt=4"]).dpo.pairs_per_prompt == 2


def test_a_clip_reward_without_a_model_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="reward_model_uri"):
        load_config("tiny", ["dpo.reward=clip"])
