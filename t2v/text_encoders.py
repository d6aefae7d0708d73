"""The two text encoders, loaded through ``transformers`` (I/O lives here, not in ``model/``).

* CLIP stand-in ("HunyuanCLIP" in the release): a BERT text model (``BertModel`` + ``BertTokenizer``),
  padded to 77 tokens, last hidden state (1024-d released).
* LLM ("Step-LLM" in the release, 6144-d, 320 tokens): any decoder that ``AutoModel`` loads from a local
  directory, last hidden state.

Directory layouts accepted for the CLIP model: the release's (``<dir>/tokenizer`` and
``<dir>/clip_text_encoder``) or a flat directory holding both. The released Step-LLM checkpoint is a custom
class (``Step1Model`` with a sentencepiece tokenizer and ALiBi in a CUDA kernel) that ``AutoModel`` cannot
load; it needs a converter, which this module does not provide yet (a clear error says so).

``create_tiny_text_encoders`` builds small random encoders for the embedded default (no downloads): a
BERT and a Llama-style decoder. Llama is chosen because its block is the Step-LLM block (pre-RMSNorm,
grouped-query attention, SwiGLU); only the positions differ (RoPE instead of ALiBi). Bloom has ALiBi, but
with LayerNorm, a GELU MLP and no key/value groups it differs from Step-LLM in more places.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

SPECIAL_BERT_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPECIAL_LLM_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]


class TextEncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clip_path: str = Field("", description="local directory (or s3:// URI, not yet supported) of the BERT")
    llm_path: str = Field("", description="local directory (or s3:// URI, not yet supported) of the LLM")
    clip_max_length: int = Field(77, ge=1, le=4096)
    llm_max_length: int = Field(320, ge=1, le=32768)
    clip_dim: int = Field(1024, ge=1, le=65536)
    llm_dim: int = Field(6144, ge=1, le=65536)
    dtype: str = Field("float32", pattern="^(float32|bfloat16|float16)$")
    # sizes used only by create_tiny_text_encoders
    tiny_clip_layers: int = Field(2, ge=1, le=48)
    tiny_clip_heads: int = Field(2, ge=1, le=64)
    tiny_clip_intermediate: int = Field(64, ge=1, le=65536)
    tiny_llm_layers: int = Field(2, ge=1, le=48)
    tiny_llm_heads: int = Field(4, ge=1, le=64)
    tiny_llm_kv_heads: int = Field(2, ge=1, le=64)
    tiny_llm_intermediate: int = Field(128, ge=1, le=65536)
    seed: int = Field(0, ge=0)


@dataclass
class TextEmbeddings:
    clip_states: torch.Tensor  # [B, Lc, clip_dim]
    clip_mask: torch.Tensor  # [B, Lc] bool, True = real token
    llm_states: torch.Tensor  # [B, L, llm_dim]
    llm_mask: torch.Tensor  # [B, L] bool

    def to(self, device=None, dtype=None) -> TextEmbeddings:
        return TextEmbeddings(
            self.clip_states.to(device=device, dtype=dtype),
            self.clip_mask.to(device=device),
            self.llm_states.to(device=device, dtype=dtype),
            self.llm_mask.to(device=device),
        )

    def as_cond(self) -> dict[str, torch.Tensor]:
        """The dict the sampler's DiT denoiser reads."""
        return {
            "clip_states": self.clip_states,
            "clip_mask": self.clip_mask,
            "llm_states": self.llm_states,
            "llm_mask": self.llm_mask,
        }


# --------------------------------------------------------------------------------------------------------
# tiny encoders


def _words(vocabulary: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for entry in vocabulary:
        for word in str(entry).lower().split():
            seen.setdefault(word, None)
    return sorted(seen)


def create_tiny_text_encoders(
    out_dir: Path, vocabulary: list[str], cfg: TextEncoderConfig
) -> tuple[Path, Path]:
    """Write a random BERT (+ BertTokenizer) and a random Llama-style decoder (+ word-level tokenizer).

    Returns (clip_dir, llm_dir). The same words, sizes and seed always give the same weights.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizer,
        LlamaConfig,
        LlamaModel,
        PreTrainedTokenizerFast,
    )

    out_dir = Path(out_dir)
    words = _words(vocabulary)
    if not words:
        raise ValueError("create_tiny_text_encoders needs a non-empty vocabulary")
    if cfg.clip_dim % cfg.tiny_clip_heads or cfg.llm_dim % cfg.tiny_llm_heads:
        raise ValueError("clip_dim / llm_dim must be divisible by the tiny head counts")
    if cfg.tiny_llm_heads % cfg.tiny_llm_kv_heads:
        raise ValueError("tiny_llm_heads must be a multiple of tiny_llm_kv_heads")

    # --- CLIP stand-in: BERT, in the release's layout <clip_dir>/{tokenizer,clip_text_encoder}
    clip_dir = out_dir / "clip"
    tok_dir, enc_dir = clip_dir / "tokenizer", clip_dir / "clip_text_encoder"
    tok_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = tok_dir / "vocab.txt"
    vocab_file.write_text("\n".join(SPECIAL_BERT_TOKENS + words) + "\n", encoding="utf-8")
    bert_vocab = {tok: i for i, tok in enumerate(SPECIAL_BERT_TOKENS + words)}
    BertTokenizer(vocab=bert_vocab, do_lower_case=True).save_pretrained(str(tok_dir))
    bert_cfg = BertConfig(
        vocab_size=len(SPECIAL_BERT_TOKENS) + len(words),
        hidden_size=cfg.clip_dim,
        num_hidden_layers=cfg.tiny_clip_layers,
        num_attention_heads=cfg.tiny_clip_heads,
        intermediate_size=cfg.tiny_clip_intermediate,
        max_position_embeddings=max(cfg.clip_max_length, 8),
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        BertModel(bert_cfg).save_pretrained(str(enc_dir))

    # --- LLM stand-in: Llama-style decoder with a word-level tokenizer (BOS prepended, right padding)
    llm_dir = out_dir / "llm"
    llm_dir.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_LLM_TOKENS + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.padding_side = "right"
    fast.save_pretrained(str(llm_dir))
    llama_cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=cfg.llm_dim,
        intermediate_size=cfg.tiny_llm_intermediate,
        num_hidden_layers=cfg.tiny_llm_layers,
        num_attention_heads=cfg.tiny_llm_heads,
        num_key_value_heads=cfg.tiny_llm_kv_heads,
        max_position_embeddings=max(cfg.llm_max_length, 8),
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        LlamaModel(llama_cfg).save_pretrained(str(llm_dir))
    log.info("wrote tiny text encoders (%d words) to %s", len(words), out_dir)
    return clip_dir, llm_dir


# --------------------------------------------------------------------------------------------------------
# loading and encoding


def _local_dir(path: str, what: str) -> Path:
    if not path:
        raise ValueError(f"TextEncoderConfig.{what} is empty")
    if path.startswith("s3://"):
        raise ValueError(
            f"TextEncoderConfig.{what}={path!r}: s3:// is not supported here yet; download it to a local "
            "directory first (t2v.storage.download_dir) and pass that directory"
        )
    p = Path(path[len("file://") :] if path.startswith("file://") else path)
    if not p.is_dir():
        raise FileNotFoundError(f"TextEncoderConfig.{what}: {p} is not a directory")
    return p


class TextEncoders:
    def __init__(self, cfg: TextEncoderConfig, clip_tokenizer, clip_model, llm_tokenizer, llm_model, device):
        self.cfg = cfg
        self.clip_tokenizer, self.clip_model = clip_tokenizer, clip_model
        self.llm_tokenizer, self.llm_model = llm_tokenizer, llm_model
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, cfg: TextEncoderConfig, device: str | torch.device = "cpu") -> TextEncoders:
        from transformers import AutoModel, AutoTokenizer, BertModel, BertTokenizer

        dtype = getattr(torch, cfg.dtype)
        clip_root = _local_dir(cfg.clip_path, "clip_path")
        tok_dir = clip_root / "tokenizer" if (clip_root / "tokenizer").is_dir() else clip_root
        enc_dir = clip_root / "clip_text_encoder" if (clip_root / "clip_text_encoder").is_dir() else clip_root
        clip_tokenizer = BertTokenizer.from_pretrained(str(tok_dir))
        clip_model = BertModel.from_pretrained(str(enc_dir), dtype=dtype).to(device).eval()

        llm_root = _local_dir(cfg.llm_path, "llm_path")
        if (llm_root / "step1_chat_tokenizer.model").exists():
            raise ValueError(
                f"{llm_root} holds the released Step-LLM (custom Step1Model + sentencepiece), which "
                "transformers' AutoModel cannot load; convert it first"
            )
        llm_tokenizer = AutoTokenizer.from_pretrained(str(llm_root))
        llm_tokenizer.padding_side = "right"
        llm_model = AutoModel.from_pretrained(str(llm_root), dtype=dtype).to(device).eval()

        for name, width, model in (
            ("clip_dim", cfg.clip_dim, clip_model),
            ("llm_dim", cfg.llm_dim, llm_model),
        ):
            if model.config.hidden_size != width:
                raise ValueError(
                    f"TextEncoderConfig.{name}={width} but the model at that path is {model.config.hidden_size}-d"
                )
        return cls(cfg, clip_tokenizer, clip_model, llm_tokenizer, llm_model, device)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextEmbeddings:
        """Prompts -> padded hidden states and masks (CLIP to clip_max_length, LLM to llm_max_length)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        clip_in = self.clip_tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.cfg.clip_max_length,
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        ).to(self.device)
        clip_out = self.clip_model(input_ids=clip_in["input_ids"], attention_mask=clip_in["attention_mask"])
        llm_in = self.llm_tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.cfg.llm_max_length,
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        ).to(self.device)
        llm_out = self.llm_model(input_ids=llm_in["input_ids"], attention_mask=llm_in["attention_mask"])
        return TextEmbeddings(
            clip_states=clip_out.last_hidden_state,
            clip_mask=clip_in["attention_mask"].bool(),
            llm_states=llm_out.last_hidden_state,
            llm_mask=llm_in["attention_mask"].bool(),
        )


def describe(cfg: TextEncoderConfig) -> str:
    return json.dumps(cfg.model_dump(), sort_keys=True)
