"""The DeepSpeed ZeRO backend under real torchrun with 2 processes (gloo, CPU, fp32): the same losses as
one process, sharded state, the export, and a kill -9 resume through a real S3 server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.trainer_runs import all_records, losses, make_job, run, run_and_interrupt

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow

STEPS = 8
ZERO = ["t2i.parallel.data_parallel=deepspeed", "t2i.nproc_per_node=2", "t2i.batch_size=2"]


def _close(a: dict[int, float], b: dict[int, float], rtol: float) -> list[str]:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return [f"step {s}: {a[s]!r} vs {b[s]!r}" for s in a if abs(a[s] - b[s]) > rtol * abs(b[s])]


def _result(job: Path) -> dict:
    return json.loads((job.parent / "result.json").read_text())


def _exported(job: Path) -> dict:
    return load_file(str(job.parent / "checkpoint" / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: 1 process, global batch 4."""
    job = make_job(tmp_path_factory.mktemp("single"), [f"t2i.steps={STEPS}", "t2i.batch_size=4", "t2i.nproc_per_node=1"])
    run(job, 1)
    return job


@pytest.fixture(scope="module")
def zero2(tmp_path_factory):
    job = make_job(tmp_path_factory.mktemp("zero2"), [f"t2i.steps={STEPS}", *ZERO, "t2i.checkpoint.every_steps=3"])
    run(job, 2)
    return job


def test_zero2_gives_the_single_process_curve_with_the_optimizer_state_halved(single, zero2):
    assert not _close(losses(zero2), losses(single), 1e-5)
    whole = _result(single)["bytes_per_rank"][0]
    for held in _result(zero2)["bytes_per_rank"]:
        assert held["params"] == whole["params"]  # weights whole on every rank at ZeRO-2
        assert abs(held["optimizer"] / whole["optimizer"] - 0.5) < 0.05, (held, whole)


def test_zero3_shards_the_weights_too_and_exports_the_same_network(single, tmp_path):
    job = make_job(tmp_path, [f"t2i.steps={STEPS}", *ZERO, "t2i.parallel.zero_stage=3", "t2i.nonfinite_policy=reload"])
    run(job, 2)
    assert not _close(losses(job), losses(single), 1e-5)
    whole = _result(single)["bytes_per_rank"][0]
    for held in _result(job)["bytes_per_rank"]:
        for kind in ("params", "optimizer"):
            assert abs(held[kind] / whole[kind] - 0.5) < 0.05, (kind, held, whole)
    mine, reference = _exported(job), _exported(single)  # gathered one tensor at a time from the partitions
    assert mine.keys() == reference.keys()
    for name, tensor in reference.items():
        assert tensor.shape == mine[name].shape, name
        assert (mine[name] - tensor).abs().max() <= 1e-5 * (1 + tensor.abs().max()), name


@pytest.mark.s3
def test_zero2_kill_minus_nine_resumes_bitwise_through_s3(zero2, tmp_path, s3_bucket):
    job = make_job(tmp_path, [f"t2i.steps={STEPS}", *ZERO, "t2i.checkpoint.every_steps=3"],
                   train_state_uri=f"s3://{s3_bucket}/run/train_state")
    killed = run_and_interrupt(job, 2, 5, "kill")
    assert killed.returncode != 0 and max(losses(job)) < STEPS
    resumed = run(job, 2)
    assert f"resumed from s3://{s3_bucket}/run/train_state/step-3" in resumed.stdout + resumed.stderr
    reference = losses(zero2)
    assert losses(job) == reference
    for record in all_records(job):
        assert record["loss"] == reference[record["step"]], record

    # another number of ranks: refused, naming the way out (DeepSpeed's checkpoints do not reshard)
    one = make_job(tmp_path / "one", [f"t2i.steps={STEPS + 2}", "t2i.parallel.data_parallel=deepspeed", "t2i.nproc_per_node=1",
                                      "t2i.batch_size=4", "t2i.checkpoint.every_steps=3"],
                   latents=json.loads(job.read_text())["latents"], train_state_uri=f"s3://{s3_bucket}/run/train_state")
    out = run(one, 1, check=False)
    assert out.returncode != 0
    assert "written by 2 ranks with DeepSpeed ZeRO-2; this run has 1" in out.stdout + out.stderr
    assert "ds_to_universal" in out.stdout + out.stderr
