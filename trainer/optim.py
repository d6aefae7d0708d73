"""Optimizer, learning-rate schedule and EMA of the weights."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(model: nn.Module, stage_cfg) -> torch.optim.Optimizer:
    return torch.optim.AdamW(  # the trainable weights only (LoRA freezes the base)
        [p for p in model.parameters() if p.requires_grad], lr=stage_cfg.lr, betas=stage_cfg.betas, weight_decay=stage_cfg.weight_decay
    )


def lr_factor(step: int, stage_cfg) -> float:
    """The lr of optimizer step ``step`` (1-based) as a share of ``lr``: linear warmup, then constant or a
    cosine down to ``min_lr_ratio`` at the last step."""
    warmup, total = stage_cfg.warmup_steps, stage_cfg.steps
    if warmup and step <= warmup:
        return step / warmup
    if stage_cfg.lr_schedule == "constant" or total <= warmup:
        return 1.0
    progress = (step - warmup) / (total - warmup)
    floor = stage_cfg.min_lr_ratio
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_lr_scheduler(optimizer: torch.optim.Optimizer, stage_cfg):
    """A LambdaLR stepped once per optimizer step; its state is the step count (saved in checkpoints)."""
    # LambdaLR calls the lambda with the number of steps taken (0 first): the lr of step n+1
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda taken: lr_factor(taken + 1, stage_cfg))


class EMA:
    """Exponential moving average of the trainable weights, kept in fp32 and sharded like them."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            self.shadow = [p.detach().clone().float() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, tensor in zip(self.names, self.shadow):
            tensor.copy_(state[name])
