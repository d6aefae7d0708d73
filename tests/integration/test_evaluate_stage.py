"""The evaluate stage itself on tiny models: a registered champion is sampled on the same prompts and
seed as the challenger, the comparison and the gate use it, and the report, the per-prompt table and the
VBench folder are written."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch

from components.framework import catalog
from components.framework.context import StageContext
from model.dit import StepVideoDiT
from model.vae import CausalVideoVAE
from t2v import checkpoints, storage
from t2v.config import load_config
from t2v.world import vocabulary
from t2v.world.latents import write_tiny_latents
from t2v.world.text_encoders import create_tiny_text_encoders


@pytest.fixture
def upstream(tmp_path):
    cfg = load_config("tiny", ["evaluate.num_prompts=4", "evaluate.num_steps=3", "evaluate.num_sample_videos=0",
                               "evaluate.report_videos=2", "evaluate.gate_min_score=0.0"])
    dits = {}
    for name, seed in (("challenger", 0), ("champion", 1), ("start", 2)):
        torch.manual_seed(seed)
        dits[name] = storage.to_uri(tmp_path / name)
        checkpoints.save_dit(StepVideoDiT(cfg.dit), dits[name])
    vae = storage.to_uri(tmp_path / "vae")
    checkpoints.save_vae(CausalVideoVAE(cfg.vae.model), vae)
    clip, llm = create_tiny_text_encoders(tmp_path / "text", vocabulary(cfg.world), cfg.text_encoders)
    latents = write_tiny_latents(tmp_path / "latents", cfg, samples=4)
    latents["summary"] = {"video_latent_shape": [3, cfg.dit.in_channels, 4, 4]}
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking)
    experiment = client.create_experiment("evaluate-test", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment).info.run_id
    name = cfg.registry.dit_model_name
    client.create_registered_model(name)
    version = client.create_model_version(name, source=dits["champion"], run_id=parent, tags={"t2v.checkpoint_uri": dits["champion"]})
    client.set_registered_model_alias(name, cfg.registry.champion_alias, version.version)
    ctx = StageContext(cfg, storage.to_uri(tmp_path / "run"), tracking, parent)
    manifests = {
        "dit": {"checkpoint_uri": dits["challenger"], "init_checkpoint_uri": dits["start"], "manifest_uri": "dpo"},
        "vae": {"checkpoint_uri": vae, "manifest_uri": "vae"},
        "latents": latents,
        "raw": {"text_encoders": {"clip": storage.to_uri(clip), "llm": storage.to_uri(llm)}, "manifest_uri": "raw"},
    }
    return ctx, manifests, version.version


def test_the_champion_is_sampled_on_the_same_prompts_and_compared(upstream):
    ctx, manifests, champion_version = upstream
    manifest = catalog.get("evaluate")(ctx, **manifests)
    summary = manifest["summary"]
    assert summary["champion_version"] == str(champion_version)
    assert set(summary["model_means"]) == {"challenger", "champion", "start", "untrained"}
    versus = summary["champion_comparison"]
    assert versus["wins"] + versus["ties"] + versus["losses"] == 4 and len(versus["outcomes"]) == 4
    assert 0.0 <= versus["win_rate_ci95"][0] <= versus["win_rate"] <= versus["win_rate_ci95"][1] <= 1.0
    assert summary["champion_score_total"] == pytest.approx(summary["model_means"]["champion"]["checker_total"])
    rows = json.loads(storage.read_text(manifest["files"]["per_prompt.json"]["uri"]))
    challenger = [r["challenger.checker_total"] for r in rows]
    champion = [r["champion.checker_total"] for r in rows]
    assert summary["score_total"] == pytest.approx(sum(challenger) / 4)
    expected = ["win" if a - b > 0.01 else "loss" if b - a > 0.01 else "tie" for a, b in zip(challenger, champion)]
    assert versus["outcomes"] == expected
    # the gate weighs the regression against the champion
    regressed = summary["score_total"] < summary["champion_score_total"] - ctx.config.evaluate.gate_max_regression
    assert summary["gate_passed"] == (not regressed and summary["score_total"] > summary["untrained_score_total"])
    page = storage.read_text(manifest["files"]["report/index.html"]["uri"])
    assert "Challenger vs champion" in page and "videos/001-champion.gif" in page and "videos/002-" not in page
    assert len([k for k in manifest["files"] if k.startswith("vbench/")]) == 4
