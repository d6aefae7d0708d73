"""`t2v model summary`: names, shapes and counts without allocating weights."""

from __future__ import annotations

import json
import subprocess
import sys

from model.dit import StepVideoDiT
from model.vae import CausalVideoVAE
from t2v.config import load_config
from t2v.model_summary import model_summary


def test_full_profile_cli_json_has_the_released_counts_and_names():
    result = subprocess.run(
        [sys.executable, "-m", "t2v_cli", "model", "summary", "--config", "step-video-t2v-30b", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"]["dit"] == {"parameters": 29_342_478_400, "tensors": 785}
    assert summary["counts"]["vae"]["parameters"] == 498_818_819
    assert summary["dit"]["transformer_blocks.0.attn1.wqkv.weight"] == [18432, 6144]
    assert summary["dit"]["proj_out.weight"] == [64, 6144]
    assert len(summary["dit"]) == 785


def test_tiny_summary_matches_a_materialised_model():
    cfg = load_config("tiny")
    summary = model_summary(cfg)
    real = StepVideoDiT(cfg.dit)
    assert summary["counts"]["dit"]["parameters"] == sum(p.numel() for p in real.parameters())
    assert summary["dit"] == {k: list(v.shape) for k, v in real.state_dict().items()}
    vae = CausalVideoVAE(cfg.vae.model)
    assert summary["vae"] == {k: list(v.shape) for k, v in vae.state_dict().items()}


def test_verify_cli_checks_a_released_layout_against_a_profile(tmp_path):
    """`t2v model verify` reads the full-size released folder's headers only and names what does not fit."""
    from release_layout import fake_release_dit_folder

    from model.config import DiTConfig

    fake_release_dit_folder(tmp_path / "stepvideo" / "transformer", DiTConfig())
    ok = subprocess.run(
        [sys.executable, "-m", "t2v_cli", "model", "verify", str(tmp_path / "stepvideo"), "--network", "dit",
         "--config", "step-video-t2v-30b"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [
        f"dit {tmp_path / 'stepvideo'}: 785 tensors, 29,342,478,400 parameters (bfloat16: 785)",
        "fits profile step-video-t2v-30b",
    ]
    bad = subprocess.run(
        [sys.executable, "-m", "t2v_cli", "model", "verify", str(tmp_path / "stepvideo"), "--network", "dit",
         "--config", "tiny"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 1
    tiny_tensors = model_summary(load_config("tiny"))["counts"]["dit"]["tensors"]  # 3 of the 48 blocks, smaller
    assert f"Error: does not fit profile tiny: unexpected {785 - tiny_tensors}: " in bad.stderr
    assert "adaln_single.linear.bias: shape [36864] in the checkpoint, [768] in the configuration" in bad.stderr
