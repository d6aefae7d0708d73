"""`t2v generate`: text in, mp4 out, from checkpoint URIs (registry references are covered end to end)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from model.dit import StepVideoDiT
from model.vae import CausalVideoVAE
from t2v import checkpoints, storage
from t2v.config import load_config
from t2v.generate import resolve
from t2v.video import read_video
from t2v.world import vocabulary
from t2v.world.text_encoders import create_tiny_text_encoders


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    cfg = load_config("tiny")
    torch.manual_seed(0)
    checkpoints.save_dit(StepVideoDiT(cfg.dit), storage.to_uri(root / "dit"))
    checkpoints.save_vae(CausalVideoVAE(cfg.vae.model), storage.to_uri(root / "vae"))
    clip, llm = create_tiny_text_encoders(root / "text", vocabulary(cfg.world), cfg.text_encoders)
    return {"dit": storage.to_uri(root / "dit"), "vae": storage.to_uri(root / "vae"), "clip": storage.to_uri(clip), "llm": storage.to_uri(llm)}


def test_generate_writes_one_mp4_per_prompt(tiny_checkpoints, tmp_path):
    c = tiny_checkpoints
    out = tmp_path / "clip.mp4"
    result = subprocess.run(
        [
            sys.executable, "-m", "t2v_cli", "generate", "a red square moving left on a gray background",
            "a blue circle moving up on a brown background", "--model", c["dit"], "--vae", c["vae"],
            "--text-encoders", f"{c['clip']},{c['llm']}", "--steps", "3", "--out", str(out),
        ],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for i in (0, 1):
        frames, fps = read_video(tmp_path / f"clip-{i}.mp4")
        assert frames.shape == (17, 32, 32, 3) and fps == 25


def test_generate_without_vae_is_a_clear_error(tiny_checkpoints, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "t2v_cli", "generate", "a red square", "--model", tiny_checkpoints["dit"]],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: {tiny_checkpoints['dit']}: no VAE or text encoders known for this DiT; pass --vae and --text-encoders"


def test_plain_uri_resolves_to_itself():
    assert resolve("s3://bucket/run/t2v/checkpoint").dit_uri == "s3://bucket/run/t2v/checkpoint"
    with pytest.raises(ValueError, match="expected models:/"):
        resolve("models:/no-version-or-alias")


def test_generate_from_a_released_model_folder_needs_nothing_else(tmp_path):
    """The release's folder (transformer/, vae/, hunyuan_clip/, step_llm/) as --model: its VAE and text
    encoders (a Step-LLM with its sentencepiece tokenizer) come with it."""
    from tests.release_layout import tiny_release_folder

    root = tmp_path / "stepvideo"
    tiny_release_folder(root, tmp_path)
    out = tmp_path / "out.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "t2v_cli", "generate", "a red square moving left on a gray background",
         "--model", str(root), "--steps", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    frames, _ = read_video(out)
    assert frames.shape == (17, 32, 32, 3)
