"""The capacity planner: its FLOP count by hand, its verdicts on the 30B profile, the CLI, and its memory
prediction against the real trainer's measured peak at a small CPU configuration."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from model.flops import block_flops, dit_forward_flops, training_flops
from t2v.config import load_config
from trainer.planner import GIB, plan_stage


def test_block_flops_by_hand():
    cfg = load_config("tiny").dit  # D = 128, ffn 4D
    s, tl, d = 10, 3, 128
    by_hand = 2 * s * d * 3 * d + 2 * s * d * d + 2 * 2 * s * s * d  # qkv, out, scores + values
    by_hand += 2 * s * d * d + 2 * tl * d * 2 * d + 2 * s * d * d + 2 * 2 * s * tl * d  # cross
    by_hand += 2 * s * d * 4 * d + 2 * s * 4 * d * d  # ffn
    assert block_flops(cfg, s, tl) == by_hand
    assert training_flops(cfg, s, 2, 1) == 3 * dit_forward_flops(cfg, s, 2, 1)


def test_the_30b_profile_ships_a_plan_that_fits_h100_and_says_why_sp_1_does_not():
    config = load_config("step-video-t2v-30b")
    plan = plan_stage(config, "t2v", "h100-80gb")
    assert plan.video_tokens == 75_888 and plan.tokens_per_rank == 9_486
    assert plan.fits and plan.total < 80 * 10**9 * 0.95
    assert plan.memory["parameters"] == 4 * 29_342_478_400 // 128
    # 40 % MFU on 128 H100s: FLOPs / (GPUs x peak x MFU)
    assert plan.step_seconds == pytest.approx(plan.flops_per_step / (128 * 989e12 * 0.4))
    without_sp = plan_stage(load_config("step-video-t2v-30b", ["t2v.parallel.sequence_parallel=1"]), "t2v", "h100-80gb")
    assert not without_sp.fits and "sequence_parallel" in without_sp.problems[0]


def test_t2v_plan_cli_prints_the_report_and_fails_when_it_does_not_fit():
    from t2v_cli.main import main

    runner = CliRunner()
    ok = runner.invoke(main, ["plan", "--profile", "step-video-t2v-30b", "--stage", "t2v", "--gpu", "h100-80gb", "--gpus", "128"])
    assert ok.exit_code == 0, ok.output
    assert "activations" in ok.output and "step time at 40% MFU" in ok.output and "fits" in ok.output
    bad = runner.invoke(main, ["plan", "--profile", "step-video-t2v-30b", "--stage", "t2v", "--set", "t2v.parallel.sequence_parallel=1"])
    assert bad.exit_code == 1 and "DOES NOT FIT" in bad.output and "does not fit h100-80gb" in bad.output
    unknown = runner.invoke(main, ["plan", "--gpu", "tpu-v9"])
    assert unknown.exit_code == 2 and "h100-80gb" in unknown.output


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["none", "full"])
def test_the_memory_prediction_is_within_20_percent_of_the_trainers_measured_peak(tmp_path, mode):
    from t2v.world.latents import write_synthetic_latents
    from tests.trainer_runs import make_job, run

    # not the configuration the activation constants were fitted at (4 layers, 3072 tokens, batch 4)
    overrides = [
        "t2i.steps=2", "t2i.batch_size=3", "t2i.nproc_per_node=1", "t2i.data=videos", f"t2i.activation_checkpointing={mode}",
        "dit.num_layers=3", "dit.num_attention_heads=4", "dit.attention_head_dim=64", "dit.rope_split=[32,16,16]",
        "encode.num_frames=17", "encode.resolution=[192,256]",
    ]
    config = load_config("tiny", ["t2i.warmup_steps=1", *overrides])
    vae, te = config.vae.model, config.text_encoders
    latents = write_synthetic_latents(
        tmp_path / "grid", samples=6, frames=vae.latent_frames(17), channels=config.dit.in_channels,
        height=192 // vae.spatial_compression, width=256 // vae.spatial_compression,
        llm_tokens=te.llm_max_length, llm_channels=config.dit.caption_channels,
        clip_tokens=te.clip_max_length, clip_channels=config.dit.clip_channels,
    )
    job = make_job(tmp_path / "run", ["t2i.warmup_steps=1", *overrides], latents=latents)
    # glibc keeps freed mid-size blocks resident after raising its mmap threshold: fix the threshold so
    # the peak resident set is the peak of live tensors
    run(job, 1, env={"MALLOC_MMAP_THRESHOLD_": "65536"})
    memory = json.loads((tmp_path / "run" / "result.json").read_text())["memory"]
    measured = memory["peak_bytes"] - memory["base_bytes"]
    plan = plan_stage(config, "t2i", accelerator=None, gpus=1)
    assert plan.video_tokens == 3 * 24 * 32
    print(f"{mode}: predicted {plan.total / GIB:.3f} GiB, measured {measured / GIB:.3f} GiB, ratio {plan.total / measured:.3f}")
    assert abs(plan.total / measured - 1) < 0.2, (plan.report(), measured / GIB)
    assert os.environ.get("MALLOC_MMAP_THRESHOLD_") is None  # the test process itself is untouched
