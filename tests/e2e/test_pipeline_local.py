"""The whole pipeline under the KFP local runner on the tiny profile, for real: a real MLflow server, the
bulk data in a real S3 API (SeaweedFS on loopback), torchrun with two processes for t2i.

Asserts on what the run produced, not on how long it took."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import webdataset as wds

from pipelines.pipeline import PIPELINES
from t2v import storage
from t2v.config import load_config
from t2v.video import read_video

pytestmark = [pytest.mark.slow, pytest.mark.s3]
REPO = Path(__file__).resolve().parents[2]
# Fewer steps than the demo: this checks the chain, the demo measures the model.
FAST = [
    "vae.train.steps=30",
    "t2i.steps=60",
    "t2i.warmup_steps=5",
    "t2vi.steps=40",
    "t2vi.warmup_steps=5",
    "t2v.steps=40",
    "t2v.warmup_steps=5",
    "evaluate.num_prompts=4",
    "evaluate.num_steps=6",
    "evaluate.num_sample_videos=1",
    "dpo.num_prompts=4",
    "dpo.sample_steps=6",
    "dpo.steps=8",
    "dpo.pair_margin=0.0",
]


def clip_reward(work: Path) -> list[str]:
    """DPO's reward for these runs. A model this briefly trained draws the background and no object,
    whatever the seed: the world's checker gives every candidate of a prompt the same reward (tried: 4 x 4
    up to 16 x 8 candidates, 6 and 20 sampling steps, three times the training steps), and DPO would have
    no pair. The chain is what these tests check, so the reward is a tiny random CLIP model
    (``dpo.reward=clip``), whose score differs between any two different videos; the demo runs DPO on
    the checker."""
    from tests.fixtures.tiny_clip import save_tiny_clip

    folder = work / "reward-clip"
    if not (folder / "config.json").exists():
        save_tiny_clip(folder)
    return ["dpo.reward=clip", f"dpo.reward_model_uri={folder}"]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, mlflow_server, s3_server):
    from t2v import storage as st

    bucket = "t2v-e2e"
    st.s3_client().create_bucket(Bucket=bucket)
    work = tmp_path_factory.mktemp("e2e")
    summary_file = work / "summary.json"
    cmd = [
        sys.executable, "-m", "t2v_cli", "run", "--local", "--profile", "tiny",
        "--run-name", "e2e", "--root", f"s3://{bucket}/runs", "--tracking-uri", mlflow_server,
        "--summary-json", str(summary_file),
    ]
    for item in [*FAST, *clip_reward(work)]:
        cmd += ["--set", item]
    result = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, (result.stdout[-6000:], result.stderr[-6000:])
    return {"summary": json.loads(summary_file.read_text()), "stdout": result.stdout, "tracking_uri": mlflow_server, "cmd": cmd, "work": work}


def test_prints_what_to_open(pipeline_run):
    out = pipeline_run["stdout"]
    assert "Open the MLflow UI" in out and pipeline_run["summary"]["parent_run_id"] in out
    assert "checker score" in out


def test_clip_shards_exist_and_webdataset_reads_them(pipeline_run):
    root = pipeline_run["summary"]["run_root"]
    manifest = storage.read_json(storage.join(root, "curate", "manifest.json"))
    shard_uris = [e["uri"] for k, e in manifest["files"].items() if k.startswith("shards/")]
    assert shard_uris and all(u.startswith("s3://") for u in shard_uris)
    with storage.local_file_for(shard_uris[0]) as path:
        sample = next(iter(wds.WebDataset(str(path), shardshuffle=False, empty_check=False)))
    frames, fps = read_video(sample["mp4"])
    meta = json.loads(sample["json"])
    assert frames.ndim == 4 and frames.shape[-1] == 3 and fps == 25
    assert meta["caption"].startswith("a ") and " moving " in meta["caption"]
    # the planted corrupt file is recorded with its reason, the run went on
    records = [json.loads(x) for x in storage.read_text(storage.join(root, "curate", "manifest.jsonl")).splitlines()]
    corrupt = [r for r in records if "corrupt" in r["drop_reasons"]]
    assert corrupt and all(r.get("error") for r in corrupt)
    latents = storage.read_json(storage.join(root, "encode", "manifest.json"))
    assert latents["summary"]["samples"] == manifest["summary"]["kept"]


def test_mlflow_parent_has_one_finished_child_per_stage(pipeline_run):
    mlflow.set_tracking_uri(pipeline_run["tracking_uri"])
    client = mlflow.MlflowClient()
    parent = client.get_run(pipeline_run["summary"]["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["t2v.pipeline_state"] in ("SUCCEEDED", "SUCCESS")
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    names = sorted(r.info.run_name for r in children)
    expected = sorted(
        [s for s in PIPELINES["pretrain"].stages if s != "curate-shard"] + ["curate-shard-0", "curate-shard-1"]
    )
    assert names == expected
    assert all(r.info.status == "FINISHED" for r in children)
    for run in children:
        for tag in ("t2v.git_sha", "t2v.pipeline_version", "t2v.config_hash"):
            assert run.data.tags.get(tag), (run.info.run_name, tag)
    by_name = {r.info.run_name: r for r in children}
    assert "train/loss" in by_name["t2i"].data.metrics
    assert by_name["t2i"].data.params["launch.world_size"] == "2"  # real torchrun, two processes
    artifacts = [a.path for a in client.list_artifacts(by_name["evaluate"].info.run_id, "samples")]
    assert any(p.endswith(".mp4") for p in artifacts) and any(p.endswith(".gif") for p in artifacts)


def test_model_versions_with_lineage(pipeline_run):
    mlflow.set_tracking_uri(pipeline_run["tracking_uri"])
    client = mlflow.MlflowClient()
    registered = pipeline_run["summary"]["registered"]
    dit = client.get_model_version(registered["dit_model"], registered["dit_version"])
    vae = client.get_model_version(registered["vae_model"], registered["vae_version"])
    for version in (dit, vae):
        assert version.tags["t2v.checkpoint_uri"].startswith("s3://")
        assert version.source == version.tags["t2v.checkpoint_uri"]
        assert version.tags["t2v.parent_run_id"] == pipeline_run["summary"]["parent_run_id"]
        for tag in ("t2v.git_sha", "t2v.pipeline_version", "t2v.config_hash", "t2v.curate_manifest", "eval.score_total"):
            assert version.tags.get(tag), tag
    assert dit.tags["t2v.vae_model"] == f"{vae.name}/{vae.version}"
    assert dit.tags["t2v.text_encoders.clip"].startswith("s3://") and dit.tags["t2v.text_encoders.llm"].startswith("s3://")
    assert dit.tags["t2v.init_checkpoint_uri"].endswith("/t2v/checkpoint")  # the registered DiT is dpo's
    assert dit.tags["t2v.checkpoint_uri"].endswith("/dpo/round-0/checkpoint")
    gate_passed = pipeline_run["summary"]["evaluation"]["gate"] == "passed"
    aliases = client.get_registered_model(registered["dit_model"]).aliases
    assert ("challenger" in aliases) == gate_passed


def test_dpo_trained_on_pairs_of_the_policys_own_samples(pipeline_run):
    root = pipeline_run["summary"]["run_root"]
    manifest = storage.read_json(storage.join(root, "dpo", "manifest.json"))
    summary = manifest["summary"]
    assert summary["pairs"] >= 1 and summary["samples_per_prompt"] == 4 and summary["prompts"] == 4
    assert summary["reward"] == "clip"  # a cosine similarity
    assert -1.0 <= summary["reward_before"] <= 1.0 and -1.0 <= summary["reward_after"] <= 1.0
    candidates = storage.read_json(storage.join(root, "dpo", "round-0", "candidates.json"))
    assert len(candidates["rewards"]) == 4 and all(len(row) == 4 for row in candidates["rewards"])
    for prompt, preferred, rejected in candidates["pairs"]:
        assert candidates["rewards"][prompt][preferred] > candidates["rewards"][prompt][rejected]
    mlflow.set_tracking_uri(pipeline_run["tracking_uri"])
    client = mlflow.MlflowClient()
    parent = client.get_run(pipeline_run["summary"]["parent_run_id"])
    (dpo_run,) = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' and attributes.run_name = 'dpo'",
    )
    for key in ("dpo/accuracy", "dpo/reward_margin", "dpo/divergence_from_reference", "dpo/reward_before"):
        assert key in dpo_run.data.metrics, key
    assert float(dpo_run.data.params["dpo.beta"]) == load_config("tiny").dpo.beta


def test_evaluate_writes_the_report_and_the_vbench_folder(pipeline_run):
    root = pipeline_run["summary"]["run_root"]
    manifest = storage.read_json(storage.join(root, "evaluate", "manifest.json"))
    summary = manifest["summary"]
    assert summary["prompts"] == 4 and summary["score_metric"] == "checker_total"
    assert summary["start_checkpoint_uri"].endswith("/t2v/checkpoint") and summary["start_score_total"] is not None
    assert set(summary["model_means"]) == {"challenger", "start", "untrained"}
    assert summary["sampler"]["num_steps"] == 6
    vbench = [name for name in manifest["files"] if name.startswith("vbench/")]
    assert len(vbench) == 4 and all(name.endswith(".mp4") for name in vbench)
    page = storage.read_text(manifest["files"]["report/index.html"]["uri"])
    assert "Mean scores" in page and "videos/000-challenger.gif" in page and "videos/000-start.gif" in page


def test_rerun_with_same_name_skips_finished_stages(pipeline_run):
    result = subprocess.run(pipeline_run["cmd"], cwd=pipeline_run["work"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("up to date") >= 9


def _generate_from_registry(registered: dict, tracking_uri: str, out: Path) -> None:
    """``t2v generate`` from a registered DiT version; the video it writes has the demo's shape."""
    result = subprocess.run(
        [
            sys.executable, "-m", "t2v_cli", "generate", "a red square moving left on a gray background",
            "--model", f"models:/{registered['dit_model']}/{registered['dit_version']}",
            "--tracking-uri", tracking_uri, "--steps", "4", "--out", str(out),
        ],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    frames, _ = read_video(out)
    assert frames.shape == (17, 32, 32, 3)


def test_generate_from_the_registered_version(pipeline_run, tmp_path):
    _generate_from_registry(pipeline_run["summary"]["registered"], pipeline_run["tracking_uri"], tmp_path / "sample.mp4")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian package chromium; `make browser` installs it as root)")
def test_the_mlflow_ui_shows_the_run_its_stages_models_a_sample_and_the_report(pipeline_run, tmp_path):
    """What a reviewer sees, in headless Chromium against the real server (tests/ui_review.py, also
    `make ui-review`); screenshots go to $T2V_UI_SCREENSHOTS when set."""
    pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")
    from tests.ui_review import review_run

    summary = pipeline_run["summary"]
    url = f"{pipeline_run['tracking_uri']}/#/experiments/{summary['experiment_id']}/runs/{summary['parent_run_id']}"
    assert url + "?workflowType=machine_learning" in pipeline_run["stdout"]  # the CLI prints where to look
    seen = review_run(pipeline_run["tracking_uri"], summary["parent_run_id"], Path(os.environ.get("T2V_UI_SCREENSHOTS") or tmp_path))
    assert {"register", "evaluate", "dpo", "t2v"} <= set(seen["child_runs"])
    assert summary["registered"]["dit_model"] in seen["registered_models"]
    assert f"Gate: {summary['evaluation']['gate']}" in seen["description"]
    assert "eval/score" in seen["metrics"]
    assert seen["sample_width"] >= 256 and seen["report_images"] >= 1 and "Mean scores" in seen["report_text"]


# the fine-tune pipeline, from the pretrain run's registered DiT (standing in for the released model) -------
@pytest.fixture(scope="module")
def finetune_run(pipeline_run):
    registered = pipeline_run["summary"]["registered"]
    client = mlflow.MlflowClient(pipeline_run["tracking_uri"])
    client.set_registered_model_alias(registered["dit_model"], "champion", registered["dit_version"])  # as CI promotes
    summary_file = pipeline_run["work"] / "finetune-summary.json"
    cmd = [
        sys.executable, "-m", "t2v_cli", "run", "--local", "--profile", "tiny", "--pipeline", "finetune",
        "--run-name", "e2e-finetune", "--root", pipeline_run["cmd"][pipeline_run["cmd"].index("--root") + 1],
        "--tracking-uri", pipeline_run["tracking_uri"], "--summary-json", str(summary_file),
        "--set", f"base_model.uri=models:/{registered['dit_model']}@champion",
    ]
    for item in [*FAST, *clip_reward(pipeline_run["work"]), "finetune.steps=12", "finetune.warmup_steps=2"]:
        cmd += ["--set", item]
    result = subprocess.run(cmd, cwd=pipeline_run["work"], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (result.stdout[-6000:], result.stderr[-6000:])
    return {"summary": json.loads(summary_file.read_text()), "stdout": result.stdout, "base": registered}


def test_finetune_trains_a_lora_adapter_of_the_champion_and_registers_it_naming_its_base(finetune_run, pipeline_run):
    summary, base = finetune_run["summary"], finetune_run["base"]
    assert summary["pipeline"] == "finetune"
    assert summary["base_model"]["version"] == f"{base['dit_model']}/{base['dit_version']}"
    root = summary["run_root"]
    tuned = storage.read_json(storage.join(root, "finetune", "manifest.json"))
    assert "checkpoint/adapter_config.json" in tuned["files"] and "checkpoint/adapter_model.safetensors" in tuned["files"]
    assert 0 < tuned["summary"]["trainable_parameters"] < tuned["summary"]["parameters"] / 5
    dpo = storage.read_json(storage.join(root, "dpo", "manifest.json"))
    assert storage.exists(storage.join(dpo["checkpoint_uri"], "adapter_config.json"))  # DPO trained the adapter on
    evaluation = storage.read_json(storage.join(root, "evaluate", "manifest.json"))["summary"]
    assert "champion" in evaluation["model_means"] and evaluation["champion_version"]
    client = mlflow.MlflowClient(pipeline_run["tracking_uri"])
    registered = summary["registered"]
    version = client.get_model_version(registered["dit_model"], registered["dit_version"])
    assert int(registered["dit_version"]) > int(base["dit_version"])
    assert version.tags["t2v.base_model"] == f"models:/{base['dit_model']}/{base['dit_version']}"
    assert version.tags["t2v.adapter"] == "lora"
    # the VAE is the base's: no second VAE version
    assert registered["vae_version"] == base["vae_version"] and version.tags["t2v.vae_model"].endswith(f"/{base['vae_version']}")
    children = client.search_runs(
        [client.get_run(summary["parent_run_id"]).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'",
    )
    assert {r.info.run_name for r in children} >= {"base-model", "encode", "finetune", "dpo", "evaluate", "register"}
    assert "train-vae" not in {r.info.run_name for r in children}


def test_generate_loads_the_adapter_version_over_its_base(finetune_run, pipeline_run, tmp_path):
    _generate_from_registry(finetune_run["summary"]["registered"], pipeline_run["tracking_uri"], tmp_path / "adapted.mp4")
