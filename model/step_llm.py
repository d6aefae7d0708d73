"""Step-LLM, the decoder LLM whose last hidden states condition the DiT (pure PyTorch, no I/O).

The module tree and parameter names are the released ``Step1Model``'s, so its state dict loads with
``load_state_dict(strict=True)``::

    tok_embeddings.word_embeddings.weight          [padded_vocab_size, hidden]
    transformer.layers.{i}.attention_norm.weight   [hidden]                      RMSNorm before attention
    transformer.layers.{i}.attention.wqkv.weight   [hidden + 2 * groups * head_dim, hidden]
    transformer.layers.{i}.attention.wo.weight     [hidden, hidden]
    transformer.layers.{i}.ffn_norm.weight         [hidden]                      RMSNorm before the MLP
    transformer.layers.{i}.feed_forward.w1.weight  [2 * ffn, hidden]             gate and up, fused
    transformer.layers.{i}.feed_forward.w2.weight  [hidden, ffn]

and nothing else: no position table, no final norm, no LM head. The encoder's output is the residual
stream after the last block.

Fused row layouts (as released):

* ``wqkv`` rows: first ``hidden`` rows are the queries (head ``h`` = rows ``h*d : (h+1)*d``); then one
  ``2*d`` slice per key/value group ``g`` holding that group's key rows followed by its value rows.
  Query head ``h`` reads group ``h // (heads // groups)``.
* ``w1`` rows: first half the SwiGLU gate (through SiLU), second half the linear "up" branch; the inner
  width is ``ffn_hidden_size`` rounded up to a multiple of 256.

Attention is causal with ALiBi. The release computes it in a closed CUDA kernel (``torch.ops.Optimus``)
that takes no slopes argument; StepFun describe it as "a variant of ALiBi" and publish its PyTorch
equivalent for the same Step1 family: slopes by the usual ALiBi rule (``alibi_slopes``) and a bias
``-slope * sqrt(i - j)`` for query ``i`` and key ``j <= i`` (``alibi_sqrt=True``; ``False`` gives classic
ALiBi, ``-slope * (i - j)``). Scores use the softmax scale ``head_dim ** -0.5``. Attention is computed in
float32 whatever the weights' dtype (the bias would lose precision in bfloat16; at 320 tokens the cost is
small). The release's kernel ignores the padding mask (right padding under a causal mask cannot reach the
real tokens); here a key padding mask is optional, and a padded query always still sees itself so no row
of the softmax is empty.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.config import StepLLMConfig
from model.norms import RMSNorm


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi slopes, float32 [num_heads].

    With ``n`` the largest power of two <= num_heads: heads ``0..n-1`` get ``2 ** (-8 * (h + 1) / n)``; the
    remaining ``num_heads - n`` heads get the odd steps of the next power of two, ``2 ** (-4 * (2j + 1) / n)``.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    n = 2 ** int(math.floor(math.log2(num_heads)))
    first = [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]
    rest = [2.0 ** (-4.0 * (2 * j + 1) / n) for j in range(num_heads - n)]
    return torch.tensor(first + rest, dtype=torch.float32)


def attention_bias(
    num_heads: int,
    length: int,
    key_mask: torch.Tensor | None = None,
    *,
    sqrt: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The additive float32 bias of every layer: ALiBi + causal (+ key padding).

    Returns [1 or B, heads, length, length]; ``-inf`` where query ``i`` may not see key ``j`` (``j > i``, or
    ``key_mask[b, j]`` false for ``j != i``).
    """
    slopes = alibi_slopes(num_heads).to(device)
    pos = torch.arange(length, device=device)
    distance = pos[:, None] - pos[None, :]  # i - j
    allowed = (distance >= 0)[None]  # [1, L, L]
    d = distance.clamp(min=0).to(torch.float32)
    if sqrt:
        d = d.sqrt()
    bias = (-slopes[:, None, None] * d)[None]  # [1, H, L, L]
    if key_mask is not None:
        if key_mask.shape[-1] != length:
            raise ValueError(f"key_mask has {key_mask.shape[-1]} positions, the input {length}")
        eye = torch.eye(length, dtype=torch.bool, device=device)
        allowed = allowed & (key_mask.to(device=device, dtype=torch.bool)[:, None, :] | eye)  # [B, L, L]
    return torch.where(allowed[:, None], bias, torch.full((), float("-inf"), device=device))


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, backend: str
) -> torch.Tensor:
    """q, k, v [B, H, L, d] (k and v already expanded to every head), bias [1|B, H, L, L] -> [B, H, L, d].

    Computed in float32, returned in q's dtype.
    """
    dtype = q.dtype
    q, k, v = q.float(), k.float(), v.float()
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    elif backend == "math":
        scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5) + bias
        out = torch.softmax(scores, dim=-1) @ v
    else:
        raise ValueError(f"unknown attention backend {backend!r} (sdpa or math)")
    return out.to(dtype)


class TokenEmbedding(nn.Module):
    """Holds ``word_embeddings`` (the release's ``LLaMaEmbedding``; no positions: ALiBi carries them)."""

    def __init__(self, cfg: StepLLMConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.padded_vocab_size, cfg.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(input_ids)


class GroupedQueryAttention(nn.Module):
    """Fused ``wqkv`` (queries, then key+value per group) and ``wo``; no biases."""

    def __init__(self, cfg: StepLLMConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.num_groups = cfg.num_attention_groups
        self.head_dim = cfg.head_dim
        self.hidden_size = cfg.hidden_size
        kv_rows = 2 * self.num_groups * self.head_dim
        self.wqkv = nn.Linear(cfg.hidden_size, cfg.hidden_size + kv_rows, bias=False)
        self.wo = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, backend: str) -> torch.Tensor:
        b, length, _ = x.shape
        h, g, d = self.num_heads, self.num_groups, self.head_dim
        q, kv = self.wqkv(x).split([self.hidden_size, 2 * g * d], dim=-1)
        q = q.view(b, length, h, d).transpose(1, 2)  # [B, H, L, d]
        k, v = kv.view(b, length, g, 2, d).unbind(dim=3)  # per group: d key rows, then d value rows
        k = k.transpose(1, 2).repeat_interleave(h // g, dim=1)  # head i reads group i // (h // g)
        v = v.transpose(1, 2).repeat_interleave(h // g, dim=1)
        out = attend(q, k, v, bias, backend)
        return self.wo(out.transpose(1, 2).reshape(b, length, h * d))


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(gate) * up)`` with gate and up the two halves of ``w1``'s output."""

    def __init__(self, cfg: StepLLMConfig):
        super().__init__()
        inner = cfg.ffn_inner_size
        self.w1 = nn.Linear(cfg.hidden_size, 2 * inner, bias=False)
        self.w2 = nn.Linear(inner, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w1(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class StepLLMBlock(nn.Module):
    """Pre-RMSNorm residual block: x + attention(norm(x)), then + feed_forward(norm(.))."""

    def __init__(self, cfg: StepLLMConfig):
        super().__init__()
        self.attention = GroupedQueryAttention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.hidden_size, cfg.layernorm_epsilon)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.layernorm_epsilon)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, backend: str) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), bias, backend)
        return h + self.feed_forward(self.ffn_norm(h))


class StepLLMTransformer(nn.Module):
    """Holds ``layers`` (the release's ``Transformer``)."""

    def __init__(self, cfg: StepLLMConfig):
        super().__init__()
        self.layers = nn.ModuleList(StepLLMBlock(cfg) for _ in range(cfg.num_layers))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, backend: str) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, bias, backend)
        return x


class StepLLM(nn.Module):
    """input_ids [B, L] (+ optional attention_mask [B, L], 1 = real token) -> last hidden states [B, L, hidden]."""

    def __init__(self, cfg: StepLLMConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = TokenEmbedding(cfg)
        self.transformer = StepLLMTransformer(cfg)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        backend: str | None = None,
    ) -> torch.Tensor:
        x = self.tok_embeddings(input_ids)
        bias = attention_bias(
            self.cfg.num_attention_heads,
            input_ids.shape[1],
            attention_mask,
            sqrt=self.cfg.alibi_sqrt,
            device=input_ids.device,
        )
        return self.transformer(x, bias, backend or self.cfg.attention_backend)


def count_parameters(cfg: StepLLMConfig) -> int:
    """The parameter count implied by the shapes above (checked against the module in the tests)."""
    hid, inner = cfg.hidden_size, cfg.ffn_inner_size
    per_layer = (
        hid * (hid + 2 * cfg.num_attention_groups * cfg.head_dim)  # wqkv
        + hid * hid  # wo
        + hid * 2 * inner  # w1
        + inner * hid  # w2
        + 2 * hid  # the two norms
    )
    return cfg.padded_vocab_size * hid + cfg.num_layers * per_layer
