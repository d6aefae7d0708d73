"""Settings of the two text encoders (HunyuanCLIP and Step-LLM): where they are, their widths and lengths,
and the sizes of the tiny random pair the embedded default creates."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TextEncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clip_path: str = Field("", description="local directory (or s3:// URI, not yet supported) of the BERT")
    llm_path: str = Field("", description="local directory (or s3:// URI, not yet supported) of the LLM")
    clip_max_length: int = Field(77, ge=1, le=4096)
    llm_max_length: int = Field(320, ge=1, le=32768)
    clip_dim: int = Field(1024, ge=1, le=65536)
    llm_dim: int = Field(6144, ge=1, le=65536)
    dtype: str = Field("float32", pattern="^(float32|bfloat16|float16)$")
    step_llm_mask_padding: bool = Field(
        False,
        description="Step-LLM only: also hide padded keys inside the LLM. False (release): its kernel runs "
        "causal attention over the whole padded row; real tokens' states are the same either way",
    )
    # used only by create_tiny_text_encoders
    tiny_llm_architecture: Literal["step_llm", "llama"] = Field(
        "step_llm",
        description="step_llm: the released Step-LLM layout (ALiBi, sentencepiece), loaded like the real one; "
        "llama: a transformers Llama decoder, loaded through AutoModel",
    )
    tiny_clip_layers: int = Field(2, ge=1, le=48)
    tiny_clip_heads: int = Field(2, ge=1, le=64)
    tiny_clip_intermediate: int = Field(64, ge=1, le=65536)
    tiny_llm_layers: int = Field(2, ge=1, le=48)
    tiny_llm_heads: int = Field(4, ge=1, le=64)
    tiny_llm_kv_heads: int = Field(2, ge=1, le=64)
    tiny_llm_intermediate: int = Field(128, ge=1, le=65536)
    seed: int = Field(0, ge=0)
