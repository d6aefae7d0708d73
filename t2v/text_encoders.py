"""The two text encoders, loaded through ``transformers`` (I/O lives here, not in ``model/``).

* CLIP stand-in ("HunyuanCLIP" in the release): a BERT text model (``BertModel`` + ``BertTokenizer``),
  padded to 77 tokens, last hidden state (1024-d released).
* LLM ("Step-LLM" in the release, 6144-d, 320 tokens), last hidden state, from either
  - the released ``step_llm`` directory (recognised by ``step1_chat_tokenizer.model``): ``config.json``
    with the release's keys, weights as ``model.safetensors`` or shards + ``model.safetensors.index.json``
    (the release ships 9 shards + index; ``pytorch_model.bin`` [+ index] is read too), loaded into
    ``model.step_llm.StepLLM`` (ALiBi in PyTorch) with ``load_state_dict(strict=True)``; prompts are
    tokenized as the release's caption server does (``StepTokenizer``); or
  - any other directory: a decoder that ``AutoModel`` / ``AutoTokenizer`` load (the tiny Llama stand-in).

Directory layouts accepted for the CLIP model: the release's (``<dir>/tokenizer`` and
``<dir>/clip_text_encoder``) or a flat directory holding both.

``create_tiny_text_encoders`` builds small random encoders for the embedded default (no downloads): a
BERT and, by default, a small random Step-LLM in the released directory layout (``create_tiny_step_llm``,
with a sentencepiece tokenizer trained on the words), so the demo loads its LLM exactly as a user's
released ``step_llm/`` is loaded. ``tiny_llm_architecture: llama`` writes a transformers Llama decoder
instead (the AutoModel path, for other decoders).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from model.config import StepLLMConfig
from model.step_llm import StepLLM

log = logging.getLogger(__name__)

SPECIAL_BERT_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPECIAL_LLM_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]

# The released Step-LLM directory: tokenizer file, and the ids its prompt wrapper hard-codes.
STEP_TOKENIZER_FILE = "step1_chat_tokenizer.model"
STEP_BOS, STEP_EOS, STEP_PAD = 1, 2, 2
# Pieces the release's StepChatTokenizer requires (control symbols), and two it requires in the vocabulary.
STEP_CONTROL_TOKENS = [
    "<|BOT|>",
    "<|EOT|>",
    "<|CALL_START|>",
    "<|CALL_END|>",
    "<|THINK_START|>",
    "<|THINK_END|>",
]
STEP_USER_TOKENS = ["<|MASK_1e69f|>", "<|UNMASK_1e69f|>"]
# Weight files (each also as shards + ``<name>.index.json``), in the order transformers looks for them.
STEP_WEIGHT_FILES = ["model.safetensors", "pytorch_model.bin"]


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
    """Write a random BERT (+ BertTokenizer) and a random LLM: a Step-LLM in the released layout
    (:func:`create_tiny_step_llm`) or, with ``tiny_llm_architecture: llama``, a Llama-style decoder with a
    word-level tokenizer. Returns (clip_dir, llm_dir). The same words, sizes and seed give the same weights.
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

    if cfg.tiny_llm_architecture == "step_llm":
        llm_dir = create_tiny_step_llm(out_dir, words, cfg)
        log.info("wrote tiny text encoders (%d words) to %s", len(words), out_dir)
        return clip_dir, llm_dir

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


def _train_tiny_sentencepiece(words: list[str]) -> bytes:
    """A small BPE sentencepiece model over ``words`` with the release's special pieces; deterministic.

    ids as in the release: 0 <unk>, 1 <s> (BOS), 2 </s> (EOS), no pad piece; the words become whole pieces,
    other text falls back to characters (or <unk>).
    """
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sorted(words)),
        model_writer=buf,
        model_type="bpe",
        vocab_size=64 + 16 * len(words),  # an upper bound (hard_vocab_limit=False): every word gets a piece
        hard_vocab_limit=False,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        control_symbols=STEP_CONTROL_TOKENS,
        user_defined_symbols=STEP_USER_TOKENS,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return buf.getvalue()


def create_tiny_step_llm(
    out_dir: Path,
    vocabulary: list[str],
    cfg: TextEncoderConfig,
    *,
    max_shard_size: int | str | None = None,
    weights_format: str = "safetensors",
) -> Path:
    """Write a random Step-LLM in the released ``step_llm`` layout; returns that directory.

    ``config.json`` with the release's keys, the weights under the release's parameter names, and
    ``step1_chat_tokenizer.model``: a sentencepiece model trained on the words. The weights are sharded with
    an index as released (``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``):
    ``max_shard_size`` None cuts them in about two; ``weights_format="bin"`` writes ``pytorch_model*.bin``.
    Sizes: ``llm_dim`` and the ``tiny_llm_*`` fields. The same words, sizes and seed give the same files.
    """
    from huggingface_hub import save_torch_state_dict

    if weights_format not in ("safetensors", "bin"):
        raise ValueError(f"weights_format must be 'safetensors' or 'bin', got {weights_format!r}")
    out_dir = Path(out_dir)
    words = _words(vocabulary)
    if not words:
        raise ValueError("create_tiny_step_llm needs a non-empty vocabulary")
    llm_dir = out_dir / "step_llm"
    llm_dir.mkdir(parents=True, exist_ok=True)
    sp_bytes = _train_tiny_sentencepiece(words)
    (llm_dir / STEP_TOKENIZER_FILE).write_bytes(sp_bytes)

    import sentencepiece as spm

    pieces = spm.SentencePieceProcessor(model_proto=sp_bytes).get_piece_size()
    step_cfg = StepLLMConfig(
        hidden_size=cfg.llm_dim,
        num_layers=cfg.tiny_llm_layers,
        num_attention_heads=cfg.tiny_llm_heads,
        num_attention_groups=cfg.tiny_llm_kv_heads,
        ffn_hidden_size=cfg.tiny_llm_intermediate,
        padded_vocab_size=64 * -(-pieces // 64),
    )
    release_cfg = step_cfg.to_release_config(seq_length=max(cfg.llm_max_length, 8))
    release_cfg["torch_dtype"] = release_cfg["params_dtype"] = "float32"
    (llm_dir / "config.json").write_text(json.dumps(release_cfg, indent=2) + "\n", encoding="utf-8")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 2)
        state = StepLLM(step_cfg).state_dict()
    if max_shard_size is None:
        max_shard_size = sum(t.numel() * t.element_size() for t in state.values()) // 2 + 1
    save_torch_state_dict(
        state,
        llm_dir,
        filename_pattern=(
            "model{suffix}.safetensors" if weights_format == "safetensors" else "pytorch_model{suffix}.bin"
        ),
        max_shard_size=max_shard_size,
        safe_serialization=weights_format == "safetensors",
        metadata={"format": "pt"},
    )
    log.info("wrote a tiny Step-LLM (%d pieces, %d-d) to %s", pieces, cfg.llm_dim, llm_dir)
    return llm_dir


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


class StepTokenizer:
    """Prompts -> Step-LLM ids and mask, as the release's caption server builds them.

    Each prompt: sentencepiece ids (no normalisation beyond the model's own), cut to ``max_length - 2``,
    then ``[BOS] ids [EOS]`` padded on the right with PAD to ``max_length``; the mask is 1 on BOS, the ids
    and EOS. BOS=1, EOS=PAD=2 are fixed, as in the release.
    """

    def __init__(self, model_file: str | Path):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        if (self.sp.bos_id(), self.sp.eos_id()) != (STEP_BOS, STEP_EOS):
            log.warning(
                "%s: bos/eos ids are %d/%d; the release always uses %d/%d",
                model_file,
                self.sp.bos_id(),
                self.sp.eos_id(),
                STEP_BOS,
                STEP_EOS,
            )

    def __call__(self, prompts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if max_length < 2:
            raise ValueError(f"Step-LLM prompts need max_length >= 2 (BOS and EOS), got {max_length}")
        ids, mask = [], []
        for prompt in prompts:
            row = [STEP_BOS] + self.sp.encode_as_ids(prompt)[: max_length - 2] + [STEP_EOS]
            n = len(row)
            ids.append(row + [STEP_PAD] * (max_length - n))
            mask.append([1] * n + [0] * (max_length - n))
        return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def read_step_llm_config(llm_dir: str | Path, **overrides) -> StepLLMConfig:
    """The released ``step_llm/config.json`` -> StepLLMConfig."""
    path = Path(llm_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (the Step-LLM directory needs its config.json)")
    return StepLLMConfig.from_release_config(json.loads(path.read_text(encoding="utf-8")), **overrides)


def load_step_llm(
    llm_dir: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> StepLLM:
    """Build StepLLM from the directory's config.json on the meta device and assign its weights (one file
    or shards + index, safetensors or ``.bin``); a :class:`~t2v.checkpoints.CheckpointError` names any
    tensor that does not fit."""
    from t2v import checkpoints

    cfg = read_step_llm_config(llm_dir)
    with torch.device("meta"):
        model = StepLLM(cfg)
    candidates = [("", name) for name in STEP_WEIGHT_FILES]
    with checkpoints.checkpoint_folder(str(llm_dir), candidates) as (folder, name):
        state = checkpoints.read_state_dict(checkpoints.weight_files(folder, name), device=str(device))
    return checkpoints.assign_state(model, state, f"{llm_dir} (Step-LLM)", device=device, dtype=dtype)


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
        if (llm_root / STEP_TOKENIZER_FILE).exists():  # the released Step-LLM layout
            llm_tokenizer = StepTokenizer(llm_root / STEP_TOKENIZER_FILE)
            llm_model = load_step_llm(llm_root, dtype=dtype, device=device)
        else:
            llm_tokenizer = AutoTokenizer.from_pretrained(str(llm_root))
            llm_tokenizer.padding_side = "right"
            llm_model = AutoModel.from_pretrained(str(llm_root), dtype=dtype).to(device).eval()

        for name, width, model in (
            ("clip_dim", cfg.clip_dim, clip_model),
            ("llm_dim", cfg.llm_dim, llm_model),
        ):
            hidden = model.cfg.hidden_size if isinstance(model, StepLLM) else model.config.hidden_size
            if hidden != width:
                raise ValueError(f"TextEncoderConfig.{name}={width} but the model at that path is {hidden}-d")
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
        if isinstance(self.llm_tokenizer, StepTokenizer):
            ids, mask = self.llm_tokenizer(list(prompts), self.cfg.llm_max_length)
            ids, mask = ids.to(self.device), mask.to(self.device)
            states = self.llm_model(ids, attention_mask=mask if self.cfg.step_llm_mask_padding else None)
            return TextEmbeddings(
                clip_states=clip_out.last_hidden_state,
                clip_mask=clip_in["attention_mask"].bool(),
                llm_states=states,
                llm_mask=mask.bool(),
            )
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
