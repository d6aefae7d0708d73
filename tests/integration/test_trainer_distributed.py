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
    assert json.loads((tmp_path / "result.json").read_text())["world_size"] == 2


def test_fsdp_with_sequence_parallel_on_four_processes_matches_too(single, tmp_path):
    # 4 ranks = 2 data-parallel x 2 sequence-parallel; global batch 2 x 2 = 4 as the reference
    job = make_job(tmp_path, [f"t2i.steps={STEPS}", "t2i.batch_size=2", "t2i.nproc_per_node=4", "t2i.parallel.sequence_parallel=2"])
    run(job, 4)
    assert not _close(losses(job), losses(single), 1e-5)


def test_sequence_parallel_forward_and_gradients_match_degree_one():
    proc = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(REPO / "tests/fixtures/sp_parity.py")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    cases = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert sum(1 for c in cases if c.get("ok")) == 3


# kill -9 of rank 0 at three steps drawn from a seeded generator (so a failure can be replayed)
KILL_STEPS = sorted(random.Random(8).sample(range(3, STEPS - 1), 3))


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
