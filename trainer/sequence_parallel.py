"""Ulysses sequence parallelism for the DiT's 3D full attention, applied over an unchanged network.

A group of ``P`` ranks shares one sample. Each holds ``S / P`` of its video tokens through every block:

    patch embed (whole, cheap)  -> keep my token shard            (pre-hook on each block, idempotent)
    RoPE-3D cos/sin [S, d]      -> the rows of my shard           (the same hook: positions stay consistent)
    self-attention: q, k, v [B, S/P, H, d] --all-to-all--> [B, S, H/P, d] -> attention over all tokens
                    out        [B, S, H/P, d] --all-to-all--> [B, S/P, H, d]   (wraps ``attn1.core``)
    cross-attention: local queries against the whole text (text keys/values are on every rank already)
    proj_out [B, S/P, p*p*C]    --all-gather--> [B, S, p*p*C]     (forward hook, before unpatchify)

Every rank of the group then holds the whole prediction and computes the same loss. The collectives'
backward passes are their adjoints (all-to-all reversed; all-gather -> reduce-scatter), so each rank's
parameter gradients are its tokens' share of the sum of the group's losses; averaging gradients over the
data-parallel x sequence-parallel ranks (FSDP's reduce-scatter, or DDP) gives the data-parallel mean.

Limits, checked with a clear error: ``P`` must divide the number of attention heads (at parallelize time)
and the number of tokens frames x (height/p) x (width/p) of every batch (at the first block).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllToAll(torch.autograd.Function):
    """[B, S/P, H, d] (scatter heads, gather tokens) <-> [B, S, H/P, d]; the backward is the reverse."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group, scatter_dim: int, gather_dim: int) -> torch.Tensor:
        ctx.group, ctx.scatter_dim, ctx.gather_dim = group, scatter_dim, gather_dim
        return _all_to_all(x, group, scatter_dim, gather_dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _all_to_all(grad.contiguous(), ctx.group, ctx.gather_dim, ctx.scatter_dim), None, None, None


def _all_to_all(x: torch.Tensor, group, scatter_dim: int, gather_dim: int) -> torch.Tensor:
    world = dist.get_world_size(group)
    inputs = [part.contiguous() for part in x.chunk(world, dim=scatter_dim)]
    outputs = [torch.empty_like(inputs[0]) for _ in range(world)]
    dist.all_to_all(outputs, inputs, group=group)
    return torch.cat(outputs, dim=gather_dim)


class _GatherTokens(torch.autograd.Function):
    """All-gather along the token dim; backward: reduce-scatter (sum), the adjoint."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        world = dist.get_world_size(group)
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        world = dist.get_world_size(ctx.group)
        parts = [part.contiguous() for part in grad.chunk(world, dim=1)]
        out = torch.empty_like(parts[0])
        dist.reduce_scatter(out, parts, op=dist.ReduceOp.SUM, group=ctx.group)
        return out, None


class UlyssesAttention(nn.Module):
    """Wraps a DiT ``AttentionCore``: heads are scattered and tokens gathered around it."""

    def __init__(self, core: nn.Module, group):
        super().__init__()
        self.core, self.group = core, group

    @property
    def backend(self) -> str:
        return self.core.backend

    def forward(self, q, k, v, key_mask=None):
        if key_mask is not None:
            raise ValueError("Ulysses self-attention takes no key mask (video tokens are never padded)")
        q, k, v = (_AllToAll.apply(t, self.group, 2, 1) for t in (q, k, v))  # -> [B, S, H/P, d]
        out = self.core(q, k, v)
        return _AllToAll.apply(out, self.group, 1, 2)  # -> [B, S/P, H, d]


def apply_sequence_parallel(dit: nn.Module, group) -> None:
    """Make ``dit`` (a :class:`model.dit.StepVideoDiT`) run its blocks on this rank's token shard."""
    degree = dist.get_world_size(group)
    if degree == 1:
        return
    heads = dit.cfg.num_attention_heads
    if heads % degree:
        raise ValueError(f"sequence_parallel={degree} must divide the DiT's {heads} attention heads")
    rank = dist.get_rank(group)

    def shard(tokens: torch.Tensor, dim: int) -> torch.Tensor:
        return tokens.chunk(degree, dim=dim)[rank]

    def keep_my_tokens(block, args):
        x, t_mod, text, text_mask, cos, sin = args
        total = cos.shape[0]
        if total % degree:
            raise ValueError(
                f"sequence_parallel={degree} must divide the number of video tokens per sample ({total} = "
                "latent frames x (height / patch) x (width / patch)); choose frames or resolution it divides"
            )
        if x.shape[1] == total:  # the first block gets the whole sequence; later ones get my shard already
            x = shard(x, 1)
        return x, t_mod, text, text_mask, shard(cos, 0), shard(sin, 0)

    for block in dit.transformer_blocks:
        block.register_forward_pre_hook(keep_my_tokens)
        block.attn1.core = UlyssesAttention(block.attn1.core, group)
    dit.proj_out.register_forward_hook(lambda module, args, out: _GatherTokens.apply(out, group))
