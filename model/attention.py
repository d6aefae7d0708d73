"""Scaled dot-product attention behind one switch.

``attention(q, k, v, key_mask, backend)`` takes tensors laid out ``[batch, seq, heads, head_dim]`` (the
layout the DiT produces) and returns the same layout.

Backends:
  * ``"math"``  - the plain reference: softmax(q k^T / sqrt(d)) v written out, computed in fp32.
  * ``"sdpa"``  - ``torch.nn.functional.scaled_dot_product_attention`` (CPU and GPU).
  * ``"flash"`` - flash-attn 2 (``flash_attn_func``); only on CUDA, fp16/bf16, and without a key mask.
  * ``"auto"``  - flash when it is installed and applicable, otherwise SDPA.

``key_mask`` is a boolean ``[batch, kv_seq]`` tensor: ``True`` marks a real key, ``False`` padding that no
query may attend to. A query row whose keys are all padding would be undefined; callers never build one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

try:  # optional at import time: GPU images install flash-attn, CPU ones do not
    from flash_attn import flash_attn_func as _flash_attn_func
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _flash_attn_func = None

BACKENDS = ("auto", "sdpa", "flash", "math")


def flash_available() -> bool:
    return _flash_attn_func is not None and torch.cuda.is_available()


def _flash_applicable(q: torch.Tensor, key_mask: torch.Tensor | None) -> bool:
    return flash_available() and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and key_mask is None


def attention_math(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference attention, [B, S, H, D] in and out, computed in fp32."""
    dtype = q.dtype
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))  # [B, H, S, D]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :].bool(), float("-inf"))
    out = scores.softmax(dim=-1) @ v
    return out.transpose(1, 2).to(dtype)


def attention_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    mask = None if key_mask is None else key_mask[:, None, None, :].bool()
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention over ``[B, S, H, D]`` tensors with an optional boolean key-padding mask ``[B, S_kv]``."""
    if backend == "math":
        return attention_math(q, k, v, key_mask)
    if backend == "flash":
        if not _flash_applicable(q, key_mask):
            raise RuntimeError(
                "attention_backend='flash' needs flash-attn installed, CUDA tensors in fp16/bf16 and no key "
                "mask; use 'auto' to fall back to SDPA"
            )
        return _flash_attn_func(q, k, v)
    if backend == "auto":
        if _flash_applicable(q, key_mask):
            return _flash_attn_func(q, k, v)
        return attention_sdpa(q, k, v, key_mask)
    if backend == "sdpa":
        return attention_sdpa(q, k, v, key_mask)
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
