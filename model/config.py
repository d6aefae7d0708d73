"""Configuration of the networks (pydantic v2, validated up front).

One class per network. Every field is flat so that a YAML file under ``configs/<profile>/`` maps onto it
one to one; a bad value fails at load time naming the field and its allowed range.

The defaults are the released Step-Video-T2V shapes (``configs/step-video-t2v-30b``); the ``tiny`` profile
overrides the sizes so that a training step takes well under a second on two CPU cores.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

AttentionBackend = Literal["auto", "sdpa", "flash", "math"]


class DiTConfig(BaseModel):
    """The Step-Video-T2V diffusion transformer (released: 48 layers x 48 heads x 128 = 6144 wide)."""

    model_config = ConfigDict(extra="forbid")

    num_layers: int = Field(48, ge=1, le=512)
    num_attention_heads: int = Field(48, ge=1, le=1024)
    attention_head_dim: int = Field(128, ge=2, le=1024)
    in_channels: int = Field(64, ge=1, le=4096)
    out_channels: int = Field(64, ge=1, le=4096)
    patch_size: int = Field(1, ge=1, le=16)
    caption_channels: int = Field(6144, ge=1, le=65536, description="width of the LLM's hidden states")
    clip_channels: int = Field(1024, ge=1, le=65536, description="width of the CLIP (BERT) hidden states")
    ffn_mult: int = Field(4, ge=1, le=16, description="FFN inner width = ffn_mult * hidden size")
    rope_split: tuple[int, int, int] = Field(
        (64, 32, 32), description="head-dim channels given to RoPE over (frame, height, width)"
    )
    rope_theta: float = Field(1e4, gt=1.0, le=1e9)
    norm_eps: float = Field(1e-6, gt=0.0, le=1e-2, description="eps of the caption norm and the output norm")
    block_norm_eps: float = Field(1e-5, gt=0.0, le=1e-2, description="eps of the in-block LayerNorms")
    qk_norm_eps: float = Field(1e-6, gt=0.0, le=1e-2)
    timestep_scale: float = Field(
        1000.0, gt=0.0, le=1e6, description="the DiT takes t in [0, 1] and embeds t * timestep_scale"
    )
    mask_clip_padding: bool = Field(
        False,
        description="False (release): every CLIP position is a key, padding included; True: honour clip_mask",
    )

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @model_validator(mode="after")
    def _check(self) -> DiTConfig:
        if sum(self.rope_split) != self.attention_head_dim:
            raise ValueError(
                f"rope_split {list(self.rope_split)} must sum to attention_head_dim={self.attention_head_dim}"
            )
        if any(d <= 0 or d % 2 for d in self.rope_split):
            raise ValueError(f"rope_split {list(self.rope_split)}: every part must be a positive even number")
        return self


class VAEConfig(BaseModel):
    """The causal video VAE (released: ``AutoencoderKL(z_channels=64, version=2)``).

    Encoder levels have widths ``encoder_base_channels * encoder_channel_mult[i]``; every level but the last
    halves the resolution. The first ``num_spatial_only_downsamples`` of those halve height and width only
    (a 2D conv per frame), the rest are causal 3D stride-2 convs. With ``dual_path`` the released head adds a
    further 2x2x2 pixel-unshuffle (conv path beside a channel-averaging shortcut). The decoder mirrors it.
    """

    model_config = ConfigDict(extra="forbid")

    in_channels: int = Field(3, ge=1, le=16)
    out_channels: int = Field(3, ge=1, le=16)
    z_channels: int = Field(64, ge=1, le=1024)
    encoder_base_channels: int = Field(32, ge=1, le=1024)
    encoder_channel_mult: tuple[int, ...] = Field((4, 8, 16, 16), min_length=1, max_length=8)
    decoder_base_channels: int = Field(128, ge=1, le=1024)
    decoder_channel_mult: tuple[int, ...] = Field((1, 2, 4, 4), min_length=1, max_length=8)
    num_res_blocks: int = Field(2, ge=1, le=8)
    num_spatial_only_downsamples: int = Field(1, ge=0, le=7)
    dual_path: bool = Field(True, description="the released v2 head: 2x2x2 pixel (un)shuffle with shortcuts")
    norm_groups: int = Field(32, ge=1, le=1024)
    chunk_frames: int = Field(17, ge=1, le=1024, description="frames encoded independently per chunk")
    blend_keep: float = Field(0.6, ge=0.0, le=1.0, description="decoded chunk boundaries: keep 0.6, mix 0.4")
    logvar_min: float = Field(-30.0, ge=-100.0, le=0.0)
    logvar_max: float = Field(20.0, ge=0.0, le=100.0)
    scaling_factor: float = Field(1.0, gt=0.0, le=100.0, description="latent = (z - shift) * scaling_factor")
    shift_factor: float = Field(0.0, ge=-100.0, le=100.0)

    @property
    def num_levels(self) -> int:
        return len(self.encoder_channel_mult)

    @property
    def num_temporal_downsamples(self) -> int:
        """Causal stride-2 steps in time (the 3D downsample levels, plus the dual-path head)."""
        return (self.num_levels - 1 - self.num_spatial_only_downsamples) + int(self.dual_path)

    @property
    def spatial_compression(self) -> int:
        return 2 ** (self.num_levels - 1 + int(self.dual_path))

    @property
    def temporal_compression(self) -> int:
        return 2**self.num_temporal_downsamples

    @property
    def latent_frames_per_chunk(self) -> int:
        return (self.chunk_frames - 1) // self.temporal_compression + 1

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for a clip of ``num_frames`` (a whole number of chunks, or one shorter chunk)."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        full, rest = divmod(num_frames, self.chunk_frames)
        count = full * self.latent_frames_per_chunk
        if rest:
            if (rest - 1) % self.temporal_compression:
                raise ValueError(
                    f"num_frames={num_frames}: a trailing chunk of {rest} frames is not 1 + k * "
                    f"{self.temporal_compression}; use multiples of chunk_frames={self.chunk_frames}"
                )
            count += (rest - 1) // self.temporal_compression + 1
        return count

    def frames_for_latents(self, latent_frames: int) -> int:
        full, rest = divmod(latent_frames, self.latent_frames_per_chunk)
        return full * self.chunk_frames + ((rest - 1) * self.temporal_compression + 1 if rest else 0)

    @model_validator(mode="after")
    def _check(self) -> VAEConfig:
        if len(self.decoder_channel_mult) != self.num_levels:
            raise ValueError(
                f"decoder_channel_mult has {len(self.decoder_channel_mult)} levels, "
                f"encoder_channel_mult has {self.num_levels}: they must match"
            )
        if self.num_spatial_only_downsamples > self.num_levels - 1:
            raise ValueError(
                f"num_spatial_only_downsamples={self.num_spatial_only_downsamples} exceeds the "
                f"{self.num_levels - 1} downsampling levels of encoder_channel_mult"
            )
        if (self.chunk_frames - 1) % self.temporal_compression:
            raise ValueError(
                f"chunk_frames={self.chunk_frames} must be 1 + k * temporal_compression "
                f"({self.temporal_compression})"
            )
        widths = [self.encoder_base_channels, self.decoder_base_channels]
        widths += [self.encoder_base_channels * m for m in self.encoder_channel_mult]
        widths += [self.decoder_base_channels * m for m in self.decoder_channel_mult]
        for w in widths:
            if w % self.norm_groups:
                raise ValueError(f"norm_groups={self.norm_groups} must divide every block width (found {w})")
        if self.dual_path:
            head = 4 * self.z_channels * 8
            enc_top = self.encoder_base_channels * self.encoder_channel_mult[-1]
            dec_top = self.decoder_base_channels * self.decoder_channel_mult[-1]
            if (enc_top * 8) % head or (dec_top * 8) % head or head % (2 * self.z_channels):
                raise ValueError(
                    f"dual_path: z_channels={self.z_channels} gives a {head}-channel head, which must divide "
                    f"8 x the top block widths (encoder {enc_top}, decoder {dec_top})"
                )
        if self.logvar_min >= self.logvar_max:
            raise ValueError("logvar_min must be below logvar_max")
        return self


# Keys of the released ``step_llm/config.json`` that set the network's shapes (the release's ``Step1Model``
# reads them as attributes of a plain ``transformers.PretrainedConfig``). Its other keys (``seq_length``,
# ``use_flash_attn``, dropouts, ``params_dtype``, ...) do not change the inference network.
STEP_LLM_RELEASE_SHAPE_KEYS = (
    "hidden_size",
    "num_layers",
    "num_attention_heads",
    "num_attention_groups",
    "ffn_hidden_size",
    "padded_vocab_size",
    "layernorm_epsilon",
)

# The release rounds the SwiGLU width up to a multiple of this (hard-coded, not a config key).
STEP_LLM_FFN_MULTIPLE_OF = 256


class StepLLMConfig(BaseModel):
    """The Step-LLM text encoder (released: 48 layers, 6144 wide, 48 heads sharing 8 key/value groups).

    Field names are the keys of the released ``step_llm/config.json`` (``from_release_config`` reads that
    dict); ``alibi_sqrt`` and ``attention_backend`` are this project's. ``layernorm_epsilon`` defaults to
    1e-5 (the Step1 family's value); the released file's own value wins when it is read.
    """

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(6144, ge=1, le=65536)
    num_layers: int = Field(48, ge=1, le=512)
    num_attention_heads: int = Field(48, ge=1, le=1024)
    num_attention_groups: int = Field(
        8, ge=1, le=1024, description="key/value heads (grouped-query attention)"
    )
    ffn_hidden_size: int = Field(
        16896,
        ge=1,
        le=1_048_576,
        description="SwiGLU inner width; rounded up to a multiple of 256 as released",
    )
    padded_vocab_size: int = Field(65536, ge=1, le=4_194_304)
    layernorm_epsilon: float = Field(1e-5, gt=0.0, le=1e-2)
    alibi_sqrt: bool = Field(
        True,
        description="True (StepFun's ALiBi variant): bias -slope*sqrt(i-j); False: classic -slope*(i-j)",
    )
    attention_backend: Literal["sdpa", "math"] = Field(
        "sdpa", description="sdpa: torch SDPA with an additive float bias; math: explicit softmax (reference)"
    )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def ffn_inner_size(self) -> int:
        m = STEP_LLM_FFN_MULTIPLE_OF
        return m * ((self.ffn_hidden_size + m - 1) // m)

    @model_validator(mode="after")
    def _check(self) -> StepLLMConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_attention_groups:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_attention_groups={self.num_attention_groups}"
            )
        return self

    @classmethod
    def from_release_config(cls, release: dict, **overrides) -> StepLLMConfig:
        """The released ``step_llm/config.json`` (as a dict) -> StepLLMConfig; other keys are ignored."""
        missing = [k for k in STEP_LLM_RELEASE_SHAPE_KEYS if k not in release]
        if missing:
            raise ValueError(
                f"Step-LLM config.json lacks the key(s) {missing} (needs {list(STEP_LLM_RELEASE_SHAPE_KEYS)})"
            )
        return cls(**{k: release[k] for k in STEP_LLM_RELEASE_SHAPE_KEYS}, **overrides)

    def to_release_config(self, seq_length: int = 4096) -> dict:
        """A ``config.json`` dict with every key the release's ``Step1Model`` reads (shapes from this config;
        the runtime-only keys set for inference: flash attention on, no dropout, no fp32 embeddings)."""
        out: dict = {"architectures": ["Step1Model"], "torch_dtype": "bfloat16"}
        out.update({k: getattr(self, k) for k in STEP_LLM_RELEASE_SHAPE_KEYS})
        out.update(
            seq_length=seq_length,
            use_flash_attn=True,
            attention_dropout=0.0,
            hidden_dropout=0.0,
            params_dtype="bfloat16",
            fp32_residual_connection=False,
            embedding_weights_in_fp32=False,
        )
        return out
