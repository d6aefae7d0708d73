"""Step-LLM: the released module tree on the meta device, ALiBi attention, and the released directory layout.

Full size (measured on the meta device): 19,579,600,896 parameters (embedding 402,653,184 + 48 x
399,519,744 per block).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from model.config import STEP_LLM_RELEASE_SHAPE_KEYS, StepLLMConfig
from model.step_llm import StepLLM, alibi_slopes, attention_bias, count_parameters
from t2v.checkpoints import CheckpointError
from t2v.config import TextEncoderConfig
from t2v.text_encoders import (
    STEP_CONTROL_TOKENS,
    STEP_TOKENIZER_FILE,
    STEP_USER_TOKENS,
    StepTokenizer,
    TextEncoders,
    load_step_llm,
    read_step_llm_config,
)
from t2v.world.text_encoders import create_tiny_step_llm, create_tiny_text_encoders

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["a", "red", "green", "blue", "square", "circle", "moving", "left", "right", "on", "background"]


def tiny_cfg(**kw) -> StepLLMConfig:
    # 6 heads in 3 groups: a non-power-of-two head count and 2 query heads per key/value group
    base = dict(
        hidden_size=48,
        num_layers=2,
        num_attention_heads=6,
        num_attention_groups=3,
        ffn_hidden_size=40,
        padded_vocab_size=50,
    )
    return StepLLMConfig(**{**base, **kw})


def tiny_model(seed: int = 0, **kw) -> StepLLM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return StepLLM(tiny_cfg(**kw)).eval()


def release_slopes(n_heads: int) -> list[float]:
    """The slope rule of StepFun's published Step1 ALiBi: powers of 2^(-8/n), then odd powers of 2^(-4/n)."""
    n = 1 << (n_heads.bit_length() - 1)  # largest power of two <= n_heads
    first = [(2.0 ** (-8.0 / n)) ** k for k in range(1, n + 1)]
    extra = [(2.0 ** (-4.0 / n)) ** k for k in range(1, 2 * (n_heads - n), 2)]
    return first + extra


# --------------------------------------------------------------------------------------------------------
# (a) the released module tree, full size, on the meta device


def test_full_size_module_tree_matches_the_release():
    cfg = StepLLMConfig()
    with torch.device("meta"):
        model = StepLLM(cfg)
    assert all(p.is_meta for p in model.parameters())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    # the release: hidden 6144, 48 heads of 128, 8 key/value groups, SwiGLU 16,896, vocabulary 65,536
    hidden, head_dim, groups, ffn, vocab = 6144, 6144 // 48, 8, 16896, 65536
    per_layer = {
        "attention.wqkv.weight": (hidden + 2 * groups * head_dim, hidden),  # fused q | (k, v) per group
        "attention.wo.weight": (hidden, hidden),
        "feed_forward.w1.weight": (2 * ffn, hidden),  # fused gate | up
        "feed_forward.w2.weight": (hidden, ffn),
        "attention_norm.weight": (hidden,),
        "ffn_norm.weight": (hidden,),
    }
    expected = {"tok_embeddings.word_embeddings.weight": (vocab, hidden)}
    expected.update({f"transformer.layers.{i}.{k}": s for i in range(48) for k, s in per_layer.items()})
    assert shapes == expected  # nothing more: no final norm, no LM head, no persistent buffers
    assert shapes["transformer.layers.0.attention.wqkv.weight"] == (8192, 6144)

    n = sum(p.numel() for p in model.parameters())
    print(f"\nStep-LLM full size: {n:,} parameters")
    assert n == count_parameters(cfg)
    assert 19.5e9 < n < 19.7e9  # "about 19.6B"


def test_release_config_keys_round_trip_and_missing_keys_are_named():
    cfg = StepLLMConfig()
    release = cfg.to_release_config()
    assert set(STEP_LLM_RELEASE_SHAPE_KEYS) <= set(release)
    # every attribute the release's Step1Model reads from its config
    for key in ("seq_length", "use_flash_attn", "attention_dropout", "hidden_dropout", "params_dtype"):
        assert key in release
    assert StepLLMConfig.from_release_config(release) == cfg
    assert StepLLMConfig.from_release_config({**release, "unrelated": 1}) == cfg
    broken = {k: v for k, v in release.items() if k != "num_attention_groups"}
    with pytest.raises(ValueError, match="num_attention_groups"):
        StepLLMConfig.from_release_config(broken)
    with pytest.raises(ValueError, match="num_attention_groups"):
        StepLLMConfig(num_attention_heads=48, num_attention_groups=5)
    assert StepLLMConfig(ffn_hidden_size=100).ffn_inner_size == 256  # rounded up as released


# --------------------------------------------------------------------------------------------------------
# (b) ALiBi attention


@pytest.mark.parametrize("heads", [48, 12, 6, 8, 1])
def test_alibi_slopes_follow_the_release_formula(heads):
    got = alibi_slopes(heads)
    assert got.dtype == torch.float32 and got.shape == (heads,)
    assert torch.allclose(got, torch.tensor(release_slopes(heads)), rtol=1e-6, atol=0)


def test_alibi_slopes_for_48_heads():
    s = alibi_slopes(48).tolist()
    # 32 heads on the 2^(-8/32) ladder, then 16 on the odd steps of 2^(-4/32)
    assert s[0] == pytest.approx(2**-0.25) and s[31] == pytest.approx(2**-8)
    assert s[32] == pytest.approx(2 ** (-1 / 8)) and s[47] == pytest.approx(2 ** (-31 / 8))


@pytest.mark.parametrize("sqrt", [True, False])
def test_bias_is_causal_alibi(sqrt):
    heads, length = 6, 7
    bias = attention_bias(heads, length, sqrt=sqrt)
    assert bias.shape == (1, heads, length, length)
    slopes = release_slopes(heads)
    for h in range(heads):
        for i in range(length):
            for j in range(length):
                if j > i:
                    assert bias[0, h, i, j] == float("-inf")
                else:
                    dist = math.sqrt(i - j) if sqrt else (i - j)
                    assert bias[0, h, i, j].item() == pytest.approx(-slopes[h] * dist, rel=1e-6, abs=1e-7)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
    padded = attention_bias(heads, length, mask, sqrt=sqrt)
    assert padded.shape == (1, heads, length, length)
    assert torch.isinf(padded[0, :, 5, 4]).all() and torch.isfinite(padded[0, :, 5, 5]).all()
    assert torch.equal(padded[0, :, :4, :4], bias[0, :, :4, :4])


def test_sdpa_equals_math_reference():
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (3, 11), generator=g)
    mask = (torch.arange(11)[None] < torch.tensor([[11], [6], [2]])).long()
    with torch.no_grad():
        for m in (None, mask):
            a = model(ids, m, backend="sdpa")
            b = model(ids, m, backend="math")
            assert a.shape == (3, 11, 48) and torch.isfinite(a).all()
            assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()


def test_causal_later_tokens_do_not_change_earlier_states():
    model = tiny_model()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 50, (1, 12), generator=g)
    k = 7
    changed = ids.clone()
    changed[0, k] = 3 if ids[0, k] != 3 else 4
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.allclose(a[:, :k], b[:, :k], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, k:], b[:, k:], atol=1e-3)


def test_right_padding_leaves_real_tokens_alone():
    model = tiny_model()
    g = torch.Generator().manual_seed(3)
    n, length = 5, 13
    real = torch.randint(3, 50, (1, n), generator=g)
    padded = torch.cat([real, torch.full((1, length - n), 2)], dim=1)
    mask = (torch.arange(length) < n).long()[None]
    with torch.no_grad():
        alone = model(real)
        with_mask = model(padded, mask)
        without_mask = model(padded)
    assert torch.allclose(alone, with_mask[:, :n], atol=1e-5, rtol=0)
    assert torch.allclose(alone, without_mask[:, :n], atol=1e-5, rtol=0)
    assert torch.isfinite(with_mask).all()
    # the mask only changes what the padded positions see
    assert not torch.allclose(with_mask[:, n:], without_mask[:, n:], atol=1e-4)


def _rms(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def reference_forward(model: StepLLM, ids: torch.Tensor) -> torch.Tensor:
    """One sequence, head by head, reading the fused weights by the release's row layout."""
    cfg = model.cfg
    heads, groups, d, hid = cfg.num_attention_heads, cfg.num_attention_groups, cfg.head_dim, cfg.hidden_size
    slopes = release_slopes(heads)
    x = model.tok_embeddings.word_embeddings.weight[ids]
    length = x.shape[0]
    i = torch.arange(length)[:, None].float()
    j = torch.arange(length)[None, :].float()
    for layer in model.transformer.layers:
        wqkv = layer.attention.wqkv.weight
        xn = _rms(x, layer.attention_norm.weight, cfg.layernorm_epsilon)
        outs = []
        for h in range(heads):
            g = h // (heads // groups)
            base = hid + g * 2 * d  # group g: d key rows, then d value rows
            q = xn @ wqkv[h * d : (h + 1) * d].T
            k = xn @ wqkv[base : base + d].T
            v = xn @ wqkv[base + d : base + 2 * d].T
            scores = q @ k.T / math.sqrt(d) - slopes[h] * torch.sqrt((i - j).clamp(min=0))
            scores = scores.masked_fill(j > i, float("-inf"))
            outs.append(torch.softmax(scores, -1) @ v)
        x = x + torch.cat(outs, -1) @ layer.attention.wo.weight.T
        xn = _rms(x, layer.ffn_norm.weight, cfg.layernorm_epsilon)
        w1 = layer.feed_forward.w1.weight
        half = w1.shape[0] // 2
        x = (
            x
            + (torch.nn.functional.silu(xn @ w1[:half].T) * (xn @ w1[half:].T))
            @ layer.feed_forward.w2.weight.T
        )
    return x


def test_fused_layouts_match_a_head_by_head_reference():
    model = tiny_model(seed=5)
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 50, (2, 9), generator=g)
    with torch.no_grad():
        got = model(ids)
        for b in range(2):
            want = reference_forward(model, ids[b])
            assert torch.allclose(got[b], want, atol=1e-5, rtol=0), (got[b] - want).abs().max()


def test_bfloat16_runs_and_stays_close():
    model = tiny_model()
    ids = torch.randint(0, 50, (1, 8), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = model(ids)
        half = model.to(torch.bfloat16)(ids)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), full, atol=0.1, rtol=0.05)


# --------------------------------------------------------------------------------------------------------
# (c) the released directory layout, loaded through TextEncoders


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    cfg = TextEncoderConfig(**yaml.safe_load((ROOT / "configs/tiny/text_encoders.yaml").read_text()))
    out = tmp_path_factory.mktemp("step")
    clip_dir, _ = create_tiny_text_encoders(out, WORDS, cfg)
    llm_dir = create_tiny_step_llm(out, WORDS, cfg)
    cfg = cfg.model_copy(update={"clip_path": str(clip_dir), "llm_path": str(llm_dir)})
    return cfg, llm_dir, TextEncoders.from_pretrained(cfg)


def test_created_directory_is_the_released_layout(released):
    cfg, llm_dir, _ = released
    names = {p.name for p in llm_dir.iterdir()}
    shards = sorted(n for n in names if n.startswith("model-"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert names == {"config.json", "model.safetensors.index.json", STEP_TOKENIZER_FILE, *shards}
    release = json.loads((llm_dir / "config.json").read_text())
    assert release["hidden_size"] == cfg.llm_dim and release["num_attention_groups"] == cfg.tiny_llm_kv_heads
    assert read_step_llm_config(llm_dir).num_layers == cfg.tiny_llm_layers
    # the tokenizer passes the release's StepChatTokenizer checks
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(llm_dir / STEP_TOKENIZER_FILE))
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    assert all(sp.is_control(sp.piece_to_id(t)) for t in STEP_CONTROL_TOKENS)
    assert all(sp.id_to_piece(sp.piece_to_id(t)) == t for t in STEP_USER_TOKENS)
    assert len(sp.encode_as_ids("square")) == 1  # the words are whole pieces


def test_encode_through_text_encoders(released):
    cfg, llm_dir, enc = released
    emb = enc.encode(["a red ball"])
    assert emb.llm_states.shape == (1, cfg.llm_max_length, cfg.llm_dim)
    assert emb.clip_states.shape == (1, cfg.clip_max_length, cfg.clip_dim)
    tok = StepTokenizer(llm_dir / STEP_TOKENIZER_FILE)
    pieces = tok.sp.encode_as_ids("a red ball")
    assert int(emb.llm_mask.sum()) == len(pieces) + 2  # BOS + pieces + EOS
    n = len(pieces) + 2
    assert torch.equal(emb.llm_mask[0], torch.arange(cfg.llm_max_length) < n)
    ids, mask = tok(["a red ball"], cfg.llm_max_length)
    assert ids[0].tolist() == [1] + pieces + [2] * (cfg.llm_max_length - n + 1)  # PAD is EOS's id
    assert torch.isfinite(emb.llm_states).all()
    with torch.no_grad():
        assert torch.allclose(emb.llm_states, enc.llm_model(ids), atol=1e-6)


def test_real_token_states_do_not_depend_on_the_batch_or_the_mask_option(released):
    cfg, _, enc = released
    long = "a red square moving left on a blue background"
    both = enc.encode(["green circle", long])
    alone = enc.encode(["green circle"])
    n = int(alone.llm_mask.sum())
    assert torch.allclose(both.llm_states[0, :n], alone.llm_states[0, :n], atol=1e-5)
    masked = TextEncoders(
        cfg.model_copy(update={"step_llm_mask_padding": True}),
        enc.clip_tokenizer,
        enc.clip_model,
        enc.llm_tokenizer,
        enc.llm_model,
        "cpu",
    ).encode(["green circle"])
    assert torch.allclose(masked.llm_states[0, :n], alone.llm_states[0, :n], atol=1e-5)
    assert not torch.allclose(masked.llm_states[0, n:], alone.llm_states[0, n:], atol=1e-4)


def test_long_prompts_are_cut_to_max_length(released):
    cfg, llm_dir, enc = released
    tok = StepTokenizer(llm_dir / STEP_TOKENIZER_FILE)
    ids, mask = tok([" ".join(["red square"] * 40)], cfg.llm_max_length)
    assert ids.shape == (1, cfg.llm_max_length) and int(mask.sum()) == cfg.llm_max_length
    assert ids[0, 0] == 1 and ids[0, -1] == 2
    with pytest.raises(ValueError, match="max_length"):
        tok(["a"], 1)


def test_loaded_weights_equal_the_saved_ones(released):
    _, llm_dir, enc = released
    index = json.loads((llm_dir / "model.safetensors.index.json").read_text())
    saved = {}
    for fname in sorted(set(index["weight_map"].values())):
        saved.update(load_file(str(llm_dir / fname)))
    loaded = enc.llm_model.state_dict()
    assert saved.keys() == loaded.keys() == index["weight_map"].keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


@pytest.mark.parametrize(
    ("max_shard_size", "fmt"),
    [("1GB", "safetensors"), (20_000, "safetensors"), ("1GB", "bin"), (None, "bin")],
)
def test_every_weight_file_layout_loads_the_same(released, tmp_path, max_shard_size, fmt):
    cfg, llm_dir, enc = released
    other = create_tiny_step_llm(tmp_path, WORDS, cfg, max_shard_size=max_shard_size, weights_format=fmt)
    files = {p.name for p in other.iterdir()}
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    sharded = max_shard_size != "1GB"
    assert (f"{stem}.{fmt}" in files) == (not sharded)
    assert (f"{stem}.{fmt}.index.json" in files) == sharded
    model = load_step_llm(other)
    a, b = model.state_dict(), enc.llm_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_words_same_files(released, tmp_path):
    cfg, llm_dir, _ = released
    again = create_tiny_step_llm(tmp_path, list(reversed(WORDS)), cfg)
    assert (again / STEP_TOKENIZER_FILE).read_bytes() == (llm_dir / STEP_TOKENIZER_FILE).read_bytes()
    shards = sorted(p.name for p in llm_dir.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and shards == sorted(p.name for p in again.glob("model-*-of-*.safetensors"))
    for name in shards:
        a, b = load_file(str(again / name)), load_file(str(llm_dir / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_mismatched_weights_are_named(released, tmp_path):
    _, llm_dir, enc = released
    bad = tmp_path / "step_llm"
    bad.mkdir()
    for name in ("config.json", STEP_TOKENIZER_FILE):
        (bad / name).write_bytes((llm_dir / name).read_bytes())
    state = {k: v.clone() for k, v in enc.llm_model.state_dict().items()}
    state.pop("transformer.layers.1.ffn_norm.weight")
    state["transformer.norm.weight"] = torch.ones(4)
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(ValueError, match=r"transformer\.layers\.1\.ffn_norm\.weight"):
        load_step_llm(bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_step_llm(bad)
