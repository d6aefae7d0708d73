"""Helpers for tests that run the real trainer under real ``torchrun`` (gloo, CPU, fp32)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from t2v.config import load_config
from t2v.world.latents import write_tiny_latents

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"

BASE = [
    "t2i.data=images+videos",
    "t2i.warmup_steps=2",
    "t2i.log_every=4",
    "t2i.caption_dropout=0.2",
]


def make_job(folder: Path, overrides: list[str], latents: dict | None = None, **job_extra) -> Path:
    """A t2i job over tiny synthetic latents; returns the job file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    config = load_config("tiny", [*BASE, *overrides])
    if latents is None:
        latents = write_tiny_latents(folder / "latents", config, samples=12)
    job = {
        "stage": "t2i",
        "config_json": config.to_json(),
        "latents": latents,
        "init_checkpoint_uri": None,
        "checkpoint_uri": str(folder / "checkpoint"),
        "result_uri": str(folder / "result.json"),
        "train_state_uri": str(folder / "train_state"),
        "metrics_jsonl": str(folder / "metrics.jsonl"),
        "staging_dir": str(folder / "staging"),
        **job_extra,
    }
    path = folder / "job.json"
    path.write_text(json.dumps(job))
    return path


def trainer_command(job: Path, nproc: int) -> list[str]:
    return [str(TORCHRUN), "--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc), "-m", "trainer.train", "--job", str(job)]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(extra or {}))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run(job: Path, nproc: int, timeout: float = 300, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(trainer_command(job, nproc), capture_output=True, text=True, timeout=timeout, env=_env(env), cwd=job.parent)
    if check and proc.returncode != 0:
        raise AssertionError(f"trainer failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def losses(job: Path) -> dict[int, float]:
    """step -> loss from the job's metrics lines; a step logged twice (re-run after a resume) keeps the
    last value (the bitwise tests also check every earlier value, through :func:`all_records`)."""
    out: dict[int, float] = {}
    for line in (job.parent / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        out[record["step"]] = record["loss"]
    return out


def all_records(job: Path) -> list[dict]:
    return [json.loads(line) for line in (job.parent / "metrics.jsonl").read_text().splitlines()]


def _rank_pid(torchrun: psutil.Process, rank: int) -> int | None:
    for child in torchrun.children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def run_and_interrupt(job: Path, nproc: int, at_step: int, how, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Start the trainer; once its metrics reach ``at_step``, ``kill -9`` rank 0 (how="kill"), send
    SIGTERM to torchrun as Kubernetes does to a pod (how="term"), or call ``how()`` and let the run go on.
    Returns the finished process."""
    log = job.parent / "metrics.jsonl"
    proc = subprocess.Popen(trainer_command(job, nproc), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(env), cwd=job.parent)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        reached = log.is_file() and any(json.loads(line)["step"] >= at_step for line in log.read_text().splitlines()[-3:] if line)
        if reached:
            if callable(how):
                how()
            elif how == "kill":
                pid = _rank_pid(psutil.Process(proc.pid), 0)
                assert pid is not None, "rank 0 not found"
                os.kill(pid, signal.SIGKILL)
            else:
                proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
