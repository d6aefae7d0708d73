"""FLOPs of one StepVideoDiT forward pass, attention included (pure arithmetic on the configuration).

Per block, with S video tokens, L text tokens (CLIP + LLM), hidden size D and a 4D feed-forward (a
multiply-add counts 2):

    self-attention projections   qkv 6 S D^2 + out 2 S D^2          =  8 S D^2
    self-attention               q k^T 2 S^2 D + (attn) v 2 S^2 D   =  4 S^2 D
    cross-attention projections  q 2 S D^2 + kv 4 L D^2 + out 2 S D^2 =  4 S D^2 + 4 L D^2
    cross-attention              4 S L D
    feed-forward                 2 x 2 S D (4D)                      = 16 S D^2
    block                        28 S D^2 + 4 L D^2 + 4 S^2 D + 4 S L D

plus the patch embedding (2 S C p^2 D), the caption and CLIP projections, AdaLN-Single and the output
projection (2 S D p^2 C). A training step costs 3 forwards (the backward is twice the forward); activation
checkpointing recomputes the blocks' forward once more, which MFU does not count (it is hardware FLOPs).
Norms, RoPE, softmax and elementwise work are left out (well under 1 % at the released size).
"""

from __future__ import annotations

from model.config import DiTConfig


def block_flops(cfg: DiTConfig, video_tokens: int, text_tokens: int) -> int:
    s, tl, d = video_tokens, text_tokens, cfg.hidden_size
    inner = cfg.ffn_mult * d
    self_proj = 8 * s * d * d
    self_attn = 4 * s * s * d
    cross_proj = 4 * s * d * d + 4 * tl * d * d
    cross_attn = 4 * s * tl * d
    ffn = 4 * s * d * inner
    return self_proj + self_attn + cross_proj + cross_attn + ffn


def dit_forward_flops(cfg: DiTConfig, video_tokens: int, llm_tokens: int, clip_tokens: int) -> int:
    """FLOPs of one sample's forward: ``video_tokens`` = latent frames x (H / p) x (W / p)."""
    d, p2 = cfg.hidden_size, cfg.patch_size**2
    s = video_tokens
    embed = 2 * s * cfg.in_channels * p2 * d
    captions = 2 * llm_tokens * (cfg.caption_channels * d + d * d) + 2 * clip_tokens * cfg.clip_channels * d
    adaln = 2 * (256 * d + d * d + d * 6 * d)
    out = 2 * s * d * p2 * cfg.out_channels
    blocks = cfg.num_layers * block_flops(cfg, s, llm_tokens + clip_tokens)
    return embed + captions + adaln + blocks + out


def training_flops(cfg: DiTConfig, video_tokens: int, llm_tokens: int, clip_tokens: int) -> int:
    """Model FLOPs of one sample's training step (forward + backward = 3 forwards)."""
    return 3 * dit_forward_flops(cfg, video_tokens, llm_tokens, clip_tokens)
