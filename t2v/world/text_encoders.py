"""Small random text encoders for the embedded default (nothing is downloaded), written in the layouts a
user's released encoders come in, so every stage loads them the way it loads the real ones
(:mod:`t2v.text_encoders`):

* a BERT (+ ``BertTokenizer``) in the release's ``hunyuan_clip`` layout (``tokenizer/``,
  ``clip_text_encoder/``) over the world's words;
* by default a small random Step-LLM in the released ``step_llm/`` layout (:func:`create_tiny_step_llm`,
  with a sentencepiece tokenizer trained on the words); ``tiny_llm_architecture: llama`` writes a
  transformers Llama decoder instead (the ``AutoModel`` path, for other decoders).

The same words, sizes and seed give the same files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from model.config import StepLLMConfig
from model.step_llm import StepLLM
from t2v.config.text_encoders import TextEncoderConfig
from t2v.text_encoders import STEP_CONTROL_TOKENS, STEP_TOKENIZER_FILE, STEP_USER_TOKENS

log = logging.getLogger(__name__)

SPECIAL_BERT_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPECIAL_LLM_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]


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


