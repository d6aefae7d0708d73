"""Tiny text encoders: created offline in tmp_path, loaded back through transformers, shapes and masks.

The LLM here is the Llama stand-in (the AutoModel path); the default tiny Step-LLM is in test_step_llm.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from t2v.config import TextEncoderConfig
from t2v.text_encoders import TextEncoders
from t2v.world.text_encoders import create_tiny_text_encoders

ROOT = Path(__file__).resolve().parents[2]


WORDS = ["a", "red", "green", "blue", "square", "circle", "moving", "left", "right", "on", "background"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = TextEncoderConfig(**yaml.safe_load((ROOT / "configs/tiny/text_encoders.yaml").read_text()))
    cfg = cfg.model_copy(update={"tiny_llm_architecture": "llama"})
    out = tmp_path_factory.mktemp("te")
    clip_dir, llm_dir = create_tiny_text_encoders(out, WORDS, cfg)
    cfg = cfg.model_copy(update={"clip_path": str(clip_dir), "llm_path": str(llm_dir)})
    return cfg, TextEncoders.from_pretrained(cfg), out


def test_created_layout_matches_the_release(tiny):
    cfg, _, out = tiny
    clip = Path(cfg.clip_path)
    assert (clip / "tokenizer" / "vocab.txt").exists() and (
        clip / "clip_text_encoder" / "config.json"
    ).exists()
    vocab = (clip / "tokenizer" / "vocab.txt").read_text().split()
    assert vocab[:2] == ["[PAD]", "[UNK]"] and "square" in vocab
    assert (Path(cfg.llm_path) / "config.json").exists()


def test_shapes_masks_and_padding(tiny):
    cfg, enc, _ = tiny
    emb = enc.encode(["a red square moving left on a blue background", "green circle"])
    assert emb.clip_states.shape == (2, cfg.clip_max_length, cfg.clip_dim)
    assert emb.llm_states.shape == (2, cfg.llm_max_length, cfg.llm_dim)
    assert emb.clip_mask.dtype == torch.bool and emb.llm_mask.dtype == torch.bool
    # BERT: [CLS] words [SEP]; Llama-style: <s> words
    assert emb.clip_mask.sum(1).tolist() == [11, 4]
    assert emb.llm_mask.sum(1).tolist() == [10, 3]
    # masks are prefixes (right padding)
    for m in (emb.clip_mask, emb.llm_mask):
        n = m.sum(1)
        assert torch.equal(m, torch.arange(m.shape[1])[None] < n[:, None])
    # a prompt's real-token states do not depend on what it is batched with
    alone = enc.encode(["green circle"])
    assert torch.allclose(alone.llm_states[0, :3], emb.llm_states[1, :3], atol=1e-5)
    assert torch.allclose(alone.clip_states[0, :4], emb.clip_states[1, :4], atol=1e-5)
    # different prompts give different states
    assert not torch.allclose(emb.llm_states[0, 1:3], emb.llm_states[1, 1:3])


def test_long_prompts_are_truncated_and_unknown_words_survive(tiny):
    cfg, enc, _ = tiny
    long = " ".join(["red square"] * 40) + " zebra"
    emb = enc.encode([long])
    assert int(emb.clip_mask.sum()) == cfg.clip_max_length and int(emb.llm_mask.sum()) == cfg.llm_max_length
    assert torch.isfinite(enc.encode(["zebra"]).llm_states).all()


def test_same_words_same_weights(tiny, tmp_path):
    cfg, _, out = tiny
    clip2, llm2 = create_tiny_text_encoders(tmp_path, list(reversed(WORDS)), cfg)
    for a, b in [
        (Path(cfg.llm_path) / "model.safetensors", llm2 / "model.safetensors"),
        (
            Path(cfg.clip_path) / "clip_text_encoder" / "model.safetensors",
            clip2 / "clip_text_encoder" / "model.safetensors",
        ),
    ]:
        sa, sb = load_file(str(a)), load_file(str(b))
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bad_paths_give_clear_errors(tiny, tmp_path):
    cfg, _, _ = tiny
    with pytest.raises(ValueError, match="s3://"):
        TextEncoders.from_pretrained(cfg.model_copy(update={"llm_path": "s3://bucket/llm"}))
    with pytest.raises(FileNotFoundError, match="clip_path"):
        TextEncoders.from_pretrained(cfg.model_copy(update={"clip_path": str(tmp_path / "missing")}))
    with pytest.raises(ValueError, match="llm_dim"):
        TextEncoders.from_pretrained(cfg.model_copy(update={"llm_dim": 128}))
    with pytest.raises(ValueError):
        TextEncoderConfig(clip_max_length=0)
