"""The Step-Video-T2V diffusion transformer (DiT), readable top to bottom.

Shapes (B batch, F latent frames, C latent channels, H x W latent grid, D hidden size):

    latents [B, F, C, H, W] --1x1 patch embed per frame--> tokens [B, F*H*W, D]   (all frames, one sequence)
    timestep t [B] in [0, 1] (0 = pure noise) --sinusoid(t * 1000)--> MLP --> AdaLN-Single modulation
    LLM states [B, L, 6144] --LayerNorm (no affine)--> Linear-GELU(tanh)-Linear --> [B, L, D]
    CLIP states [B, Lc, 1024] --Linear--> [B, Lc, D];  text keys = concat(CLIP, LLM) (CLIP first)
    N x block:
        x = x + gate_msa * SelfAttn(modulate(LayerNorm(x), shift_msa, scale_msa))   # RoPE-3D, q/k RMSNorm
        x = x + CrossAttn(x, text)                                                   # plain residual
        x = x + gate_mlp * FFN(modulate(LayerNorm(x), shift_mlp, scale_mlp))         # tanh-GELU, no bias
    out = Linear(modulate(LayerNorm_no_affine(x), shift, scale)) --unpatchify--> [B, F, C, H, W]

AdaLN-Single: one shared Linear maps the timestep embedding to 6 x D; each block adds its own learnable
(6, D) table to it and reads (shift, scale, gate) for attention then for the FFN. The output layer adds a
(2, D) table to the (un-projected) timestep embedding and reads (shift, scale).

Module and parameter names follow the release (``stepvideo/modules/model.py``), so the full configuration's
``state_dict`` has exactly the released keys and shapes. Two layouts matter for loading released weights:
``attn1.wqkv`` is interleaved per head (rows ``[q_h; k_h; v_h]`` for each head h) and ``attn2.wkv`` likewise
(``[k_h; v_h]``).

Timestep convention: the release's scheduler feeds the network t = 1 - sigma in [0, 1) (t = 0 pure noise,
t -> 1 clean data) and ``AdaLayerNormSingle`` multiplies by 1000 inside; this module does the same
(``cfg.timestep_scale``). See ``model/flow_matching.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.attention import attention
from model.config import DiTConfig
from model.norms import RMSNorm

# --------------------------------------------------------------------------------------------------------
# small pieces


def timestep_sinusoid(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[B] -> [B, dim]: cos then sin of t * exp(-ln(max_period) * i / (dim/2)), i = 0 .. dim/2-1."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


# --------------------------------------------------------------------------------------------------------
# RoPE-3D


def rope_positions(frames: int, height: int, width: int, device=None) -> torch.Tensor:
    """[F*H*W, 3] integer (frame, row, column) of each token, in the token order of the sequence."""
    f, h, w = torch.meshgrid(
        torch.arange(frames, device=device),
        torch.arange(height, device=device),
        torch.arange(width, device=device),
        indexing="ij",
    )
    return torch.stack([f, h, w], dim=-1).reshape(-1, 3)


def rope_cos_sin(positions: torch.Tensor, dims: tuple[int, int, int], theta: float):
    """cos/sin tables [S, head_dim] for rotate-half RoPE: the head dim is split over (frame, height, width)."""
    cos_parts, sin_parts = [], []
    for axis, d in enumerate(dims):
        inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=positions.device) / d)
        angles = positions[:, axis].float()[:, None] * inv_freq[None, :]  # [S, d/2]
        angles = torch.cat([angles, angles], dim=-1)  # rotate-half layout: [S, d]
        cos_parts.append(angles.cos())
        sin_parts.append(angles.sin())
    return torch.cat(cos_parts, dim=-1), torch.cat(sin_parts, dim=-1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope_3d(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dims: tuple[int, ...]
) -> torch.Tensor:
    """x [B, S, heads, head_dim]; each axis' channel slice is rotated on its own (rotate-half within it)."""
    cos = cos[None, :, None, :].to(x.dtype)
    sin = sin[None, :, None, :].to(x.dtype)
    out = []
    start = 0
    for d in dims:
        xs, c, s = x[..., start : start + d], cos[..., start : start + d], sin[..., start : start + d]
        out.append(xs * c + _rotate_half(xs) * s)
        start += d
    return torch.cat(out, dim=-1)


# --------------------------------------------------------------------------------------------------------
# attention and feed-forward


class AttentionCore(nn.Module):
    """softmax(q k^T / sqrt(d)) v over ``[B, S, heads, head_dim]`` by the chosen backend; no parameters.

    A module rather than a bare call so that a parallelism can wrap it without touching the network:
    Ulysses sequence parallel (``trainer.sequence_parallel``) puts an all-to-all on either side of it."""

    def __init__(self):
        super().__init__()
        self.backend = "auto"  # a runtime choice, set by StepVideoDiT.set_attention_backend

    def forward(self, q, k, v, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        return attention(q, k, v, key_mask, self.backend)


class SelfAttention(nn.Module):
    """Fused, per-head-interleaved qkv; RMSNorm on q and k per head; RoPE-3D; no bias anywhere."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        dim, self.head_dim = cfg.hidden_size, cfg.attention_head_dim
        self.n_heads = cfg.num_attention_heads
        self.rope_split = tuple(cfg.rope_split)
        self.core = AttentionCore()
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, cfg.qk_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.qk_norm_eps)

    def forward(self, x: torch.Tensor, rope_cos: torch.Tensor, rope_sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        qkv = self.wqkv(x).view(b, s, self.n_heads, 3 * self.head_dim)  # per head: [q_h | k_h | v_h]
        q, k, v = qkv.split(self.head_dim, dim=-1)
        q = apply_rope_3d(self.q_norm(q), rope_cos, rope_sin, self.rope_split)
        k = apply_rope_3d(self.k_norm(k), rope_cos, rope_sin, self.rope_split)
        out = self.core(q, k, v)
        return self.wo(out.reshape(b, s, -1))


class CrossAttention(nn.Module):
    """Queries from the video tokens, fused per-head-interleaved kv from the text; q/k RMSNorm; no RoPE."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        dim, self.head_dim = cfg.hidden_size, cfg.attention_head_dim
        self.n_heads = cfg.num_attention_heads
        self.core = AttentionCore()
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wkv = nn.Linear(dim, 2 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, cfg.qk_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.qk_norm_eps)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_norm(self.wq(x).view(b, s, self.n_heads, self.head_dim))
        kv = self.wkv(text).view(b, text.shape[1], self.n_heads, 2 * self.head_dim)  # per head: [k_h | v_h]
        k, v = kv.split(self.head_dim, dim=-1)
        out = self.core(q, self.k_norm(k), v, text_mask)
        return self.wo(out.reshape(b, s, -1))


class GELUProj(nn.Module):
    """Linear then tanh-GELU (named ``proj`` as in the release's ``ff.net.0.proj``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """D -> ffn_mult*D (tanh-GELU) -> D, no bias; ``net`` = [GELUProj, Identity, Linear] as released."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.net = nn.ModuleList([GELUProj(dim, inner), nn.Identity(), nn.Linear(inner, dim, bias=False)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class StepVideoTransformerBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        dim = cfg.hidden_size
        self.dim = dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.block_norm_eps)
        self.attn1 = SelfAttention(cfg)
        self.attn2 = CrossAttention(cfg)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.block_norm_eps)
        self.ff = FeedForward(dim, cfg.ffn_mult * dim)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(self, x, t_mod, text, text_mask, rope_cos, rope_sin):
        # t_mod [B, 6*D] from the shared AdaLN-Single linear; each chunk is [B, 1, D]
        mods = self.scale_shift_table[None] + t_mod.view(-1, 6, self.dim)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods.chunk(6, dim=1)

        x = x + gate_msa * self.attn1(modulate(self.norm1(x), shift_msa, scale_msa), rope_cos, rope_sin)
        x = x + self.attn2(x, text, text_mask)
        x = x + gate_mlp * self.ff(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


# --------------------------------------------------------------------------------------------------------
# embeddings (names nested as in the release: pos_embed.proj, adaln_single.emb.timestep_embedder.linear_1 ...)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, h*w, D]
        return self.proj(frames).flatten(2).transpose(1, 2)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class _TimestepEmbedder(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(256, dim)


class AdaLayerNormSingle(nn.Module):
    """t [B] -> (6*D modulation for the blocks, D embedding for the output layer)."""

    def __init__(self, dim: int, timestep_scale: float):
        super().__init__()
        self.timestep_scale = timestep_scale
        self.emb = _TimestepEmbedder(dim)
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight_dtype = self.linear.weight.dtype
        freq = timestep_sinusoid(t * self.timestep_scale).to(weight_dtype)
        embedded = self.emb.timestep_embedder(freq)
        return self.linear(F.silu(embedded)), embedded


class CaptionProjection(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


# --------------------------------------------------------------------------------------------------------
# the model


class StepVideoDiT(nn.Module):
    """The network of ``cfg`` (architecture only). How it runs is chosen per use, not saved with it:
    ``attention_backend`` (auto, sdpa, flash or math) and ``activation_checkpointing`` (recompute each
    block in the backward pass) are arguments here and can be changed later with the setters."""

    def __init__(self, cfg: DiTConfig, attention_backend: str = "auto", activation_checkpointing: bool = False):
        super().__init__()
        self.cfg = cfg
        dim = cfg.hidden_size
        self.patch_size = cfg.patch_size
        self.out_channels = cfg.out_channels

        self.pos_embed = PatchEmbed(cfg.patch_size, cfg.in_channels, dim)
        self.adaln_single = AdaLayerNormSingle(dim, cfg.timestep_scale)
        self.caption_norm = nn.LayerNorm(cfg.caption_channels, eps=cfg.norm_eps, elementwise_affine=False)
        self.caption_projection = CaptionProjection(cfg.caption_channels, dim)
        self.clip_projection = nn.Linear(cfg.clip_channels, dim)
        self.transformer_blocks = nn.ModuleList(
            [StepVideoTransformerBlock(cfg) for _ in range(cfg.num_layers)]
        )
        self.norm_out = nn.LayerNorm(dim, eps=cfg.norm_eps, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.proj_out = nn.Linear(dim, cfg.patch_size**2 * cfg.out_channels)

        self.activation_checkpointing = activation_checkpointing
        self.set_attention_backend(attention_backend)

    def set_attention_backend(self, backend: str) -> None:
        for module in self.modules():
            if isinstance(module, AttentionCore):
                module.backend = backend

    def set_activation_checkpointing(self, enabled: bool) -> None:
        self.activation_checkpointing = enabled

    def text_tokens(self, llm_states, llm_mask, clip_states, clip_mask):
        """Project both text streams and join them, CLIP first. Returns keys [B, Lc+L, D] and mask [B, Lc+L]."""
        llm = self.caption_projection(self.caption_norm(llm_states))
        clip = self.clip_projection(clip_states)
        if clip_mask is None or not self.cfg.mask_clip_padding:
            # the release attends to every CLIP position (its caption server pads the mask with ones)
            clip_mask = torch.ones(clip.shape[:2], dtype=torch.bool, device=clip.device)
        if llm_mask is None:
            llm_mask = torch.ones(llm.shape[:2], dtype=torch.bool, device=llm.device)
        text = torch.cat([clip, llm], dim=1)
        mask = torch.cat([clip_mask.bool(), llm_mask.bool()], dim=1)
        return text, mask

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        llm_states: torch.Tensor,
        llm_mask: torch.Tensor | None,
        clip_states: torch.Tensor,
        clip_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, f, c, height, width = latents.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"latent size {height}x{width} is not divisible by patch_size={p}")
        h, w = height // p, width // p
        dtype = self.proj_out.weight.dtype

        x = self.pos_embed(latents.reshape(b * f, c, height, width).to(dtype))  # [B*F, h*w, D]
        x = x.reshape(b, f * h * w, -1)

        t_mod, t_emb = self.adaln_single(timestep.reshape(b))
        text, text_mask = self.text_tokens(llm_states.to(dtype), llm_mask, clip_states.to(dtype), clip_mask)
        cos, sin = rope_cos_sin(
            rope_positions(f, h, w, device=x.device), self.cfg.rope_split, self.cfg.rope_theta
        )

        for block in self.transformer_blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, t_mod, text, text_mask, cos, sin, use_reentrant=False)
            else:
                x = block(x, t_mod, text, text_mask, cos, sin)

        shift, scale = (self.scale_shift_table[None] + t_emb[:, None]).chunk(2, dim=1)
        x = self.proj_out(modulate(self.norm_out(x), shift, scale))  # [B, F*h*w, p*p*C]

        # unpatchify: (h, w, p, q, c) -> (c, h*p, w*q)
        x = x.reshape(b, f, h, w, p, p, self.out_channels)
        x = x.permute(0, 1, 6, 2, 4, 3, 5).reshape(b, f, self.out_channels, h * p, w * p)
        return x


# --------------------------------------------------------------------------------------------------------
# initialisation one tensor at a time (for networks built on the meta device and sharded before they exist)


def initial_value(
    module: nn.Module, param_name: str, shape, generator: torch.Generator, weight_shape=None
) -> torch.Tensor:
    """The initial value of ``module.<param_name>``, drawn from ``generator`` with the same distributions
    the constructors use (PyTorch's Linear/Conv defaults, unit norms, the AdaLN tables' N(0, 1/D)).
    Drawn whole on the CPU for one tensor, so a sharded network gets the same weights on any layout.
    ``weight_shape``: the whole shape of ``module.weight`` where the module holds only a partition of it."""
    shape = tuple(shape)
    if param_name == "scale_shift_table":
        return torch.randn(shape, generator=generator) / shape[-1] ** 0.5
    if isinstance(module, (nn.LayerNorm, RMSNorm)):
        return torch.ones(shape) if param_name == "weight" else torch.zeros(shape)
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        fan_in = math.prod(tuple(weight_shape or module.weight.shape)[1:])
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        return torch.empty(shape).uniform_(-bound, bound, generator=generator)
    raise TypeError(f"no initialisation rule for {type(module).__name__}.{param_name}")
