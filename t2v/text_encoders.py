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

The embedded default's small random encoders, written in these layouts, are made by
:mod:`t2v.world.text_encoders`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from model.config import StepLLMConfig
from model.step_llm import StepLLM
from t2v.config.text_encoders import TextEncoderConfig

log = logging.getLogger(__name__)

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

    def _tokens(self, tokenizer, prompts: list[str], max_length: int):
        """A transformers tokenizer's ids and mask, padded (right) and cut to ``max_length``."""
        return tokenizer(
            list(prompts),
            padding="max_length",
            max_length=max_length,
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        ).to(self.device)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextEmbeddings:
        """Prompts -> padded hidden states and masks (CLIP to clip_max_length, LLM to llm_max_length)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        clip_in = self._tokens(self.clip_tokenizer, prompts, self.cfg.clip_max_length)
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
        llm_in = self._tokens(self.llm_tokenizer, prompts, self.cfg.llm_max_length)
        llm_out = self.llm_model(input_ids=llm_in["input_ids"], attention_mask=llm_in["attention_mask"])
        return TextEmbeddings(
            clip_states=clip_out.last_hidden_state,
            clip_mask=clip_in["attention_mask"].bool(),
            llm_states=llm_out.last_hidden_state,
            llm_mask=llm_in["attention_mask"].bool(),
        )


def describe(cfg: TextEncoderConfig) -> str:
    return json.dumps(cfg.model_dump(), sort_keys=True)
