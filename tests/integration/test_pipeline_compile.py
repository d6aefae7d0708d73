"""The pipeline compiles to KFP IR that kfp itself loads back, stamped with its version, with the
cluster placement of the profile and caching off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kfp import components

from pipelines.pipeline import PIPELINES
from pipelines.runner import compile_pipeline, pipeline_version
from t2v.config import load_config

EXPECTED_TASKS = {
    "prepare-data",
    "curate-shard",
    "curate-merge",
    "train-vae",
    "encode",
    "train-dit",
    "train-dit-2",
    "train-dit-3",
    "evaluate",
    "register",
}


def _all_tasks(spec: dict) -> dict:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def test_compile_30b_profile_loads_back_with_version(tmp_path):
    out = tmp_path / "pipeline.yaml"
    stamped = compile_pipeline(load_config("step-video-t2v-30b"), out)
    assert stamped["pipeline_version"] == pipeline_version()
    loaded = components.load_component_from_file(str(out))
    assert loaded.name == "step-video-t2v-training"
    assert f"version {stamped['pipeline_version']}" in loaded.description
    docs = list(yaml.safe_load_all(out.read_text()))
    spec = docs[0]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["pipeline_version"]["defaultValue"] == stamped["pipeline_version"]
    assert set(params) >= {"config_json", "run_root", "tracking_uri", "parent_run_id", "run_name"}
    tasks = _all_tasks(spec)
    assert EXPECTED_TASKS <= set(tasks)
    # caching is off for every task (KFP caches by default)
    executors = spec["deploymentSpec"]["executors"]
    assert all(task.get("cachingOptions", {}).get("enableCache") is not True for task in tasks.values())
    # GPU stages ask for a GPU on the GPU pool; components run the project image
    gpu = [e for e in executors.values() if e["container"].get("resources", {}).get("accelerator")]
    assert len(gpu) >= 3
    assert all(e["container"]["image"].startswith("ghcr.io/") for e in executors.values())
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    # every task logs to MLflow as the pipeline identity, from the Secret (optional: no auth, no Secret)
    for executor in platform.values():
        (secret,) = executor["secretAsEnv"]
        assert secret["secretName"] == "mlflow-credentials" and secret.get("optional") is True
        assert {e["envVar"] for e in secret["keyToEnv"]} == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    assert len(platform) == len(executors)
    selectors = {k: v.get("nodeSelector", {}).get("labels", {}) for k, v in platform.items()}
    assert {"t2v.dev/pool": "gpu"} in selectors.values() and {"t2v.dev/pool": "cpu"} in selectors.values()
    # a curate shard's temporary files (spooled clips, tars, the video being curated) on a gp3 scratch
    # volume of the profile's size, which TMPDIR names; the other tasks keep the node's disk
    scratch = {k: v["genericEphemeralVolume"] for k, v in platform.items() if v.get("genericEphemeralVolume")}
    (shard_executor,) = [k for k in scratch if "curate-shard" in k]
    (volume,) = scratch[shard_executor]
    assert (volume["mountPath"], volume["size"], volume["storageClassName"]) == ("/scratch", "1Ti", "gp3"), volume
    env = {e["name"]: e["value"] for e in executors[shard_executor]["container"].get("env", [])}
    assert env.get("TMPDIR") == "/scratch", env
    assert len(scratch) == 1
    # fan-out over curation shards and the exit handler are in the graph
    assert "finish-tracking" in tasks or any("finish" in t for t in tasks)
    assert any("iteratorPolicy" in t or "parameterIterator" in t for t in tasks.values())


def test_cli_compile_writes_stamped_yaml(tmp_path):
    out = tmp_path / "p.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "t2v_cli", "compile", "--profile", "tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert "pipeline version" in result.stdout
    assert components.load_component_from_file(str(out)).description.count("profile tiny") == 1


@pytest.mark.parametrize("job", sorted(PIPELINES))
def test_each_job_s_dag_runs_its_stages_in_order(tmp_path, job):
    """A pipeline's tasks are its stages, and each depends on the stage of that pipeline that feeds it."""
    from components.framework import catalog

    spec = PIPELINES[job]
    out = tmp_path / "pipeline.yaml"
    stamped = compile_pipeline(load_config("tiny"), out, job)
    loaded = components.load_component_from_file(str(out))
    assert loaded.name == spec.kfp_name == stamped["pipeline_name"]
    assert f"version {stamped['pipeline_version']}" in loaded.description and f"pipeline {job}" in loaded.description
    tasks = _all_tasks(yaml.safe_load_all(out.read_text()).__next__())
    by_name = {t["taskInfo"]["name"]: key for key, t in tasks.items() if "componentRef" in t and "taskInfo" in t}
    stage_tasks = {name for name in by_name if name != "finish-tracking"}
    assert stage_tasks - {"stages", "curate-fan-out"} == set(spec.stages)
    checked = 0
    for name in spec.stages:
        artifacts = tasks[by_name[name]].get("inputs", {}).get("artifacts", {})
        for input_name in catalog.get(name).inputs:
            if input_name in catalog.get(name).optional_inputs and input_name not in artifacts:
                continue
            source = catalog.feeding(name, input_name, among=spec.stages)
            produced = artifacts.get(input_name, {}).get("taskOutputArtifact")
            if source.fan_out_root is not None or produced is None:  # collected from, or inside, the fan-out loop
                continue
            assert produced["producerTask"] == by_name[source.name], (job, name, input_name, source.name)
            kind = catalog.get(name).inputs[input_name]
            if source.views:  # a stage serving several kinds hands over the output of the input's kind
                assert produced["outputArtifactKey"] == kind, (job, name, input_name)
            checked += 1
    assert checked >= {"pretrain": 12, "finetune": 11, "curation": 0, "evaluate": 4}[job]


def test_every_stage_is_in_a_pipeline_and_the_cli_offers_every_pipeline():
    from components.framework import catalog
    from t2v_cli.main import JOBS

    assert set(JOBS) == set(PIPELINES)
    assert set().union(*(spec.stages for spec in PIPELINES.values())) == set(catalog.names())
