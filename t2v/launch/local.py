"""Run the job on this machine: ``torchrun --standalone`` (gloo on CPU), output streamed, one-line errors."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from t2v.launch.spec import LaunchError, LaunchSpec

log = logging.getLogger(__name__)

_RANK_ERROR_RE = re.compile(r"^\[(default)?rank(\d+)\]:\s*[\w.]+(Error|Exception|Interrupt)\b")
# torchrun's failure summary: "Root Cause (first observed failure):" then "rank : 0 (local_rank: 0)",
# "exitcode : -9 (pid: 123)  (SIGKILL)" ... -- the rank that failed first, not the ones torn down after it
_ROOT_CAUSE_FIELD_RE = re.compile(r"^\s*(rank|exitcode|traceback)\s*:\s*(.*)$")


class _RootCause:
    """Reads torchrun's output for the first rank that failed and how."""

    def __init__(self):
        self.rank_errors: dict[str, str] = {}  # rank -> its first "[rankN]: SomeError: message" line
        self.first_error: str | None = None
        self.fields: dict[str, str] = {}
        self._in_root = False

    def feed(self, line: str) -> None:
        text = line.strip()
        match = _RANK_ERROR_RE.match(text)
        if match:
            self.rank_errors.setdefault(match.group(2), text[:300])
            self.first_error = self.first_error or text[:300]
        if "Root Cause (first observed failure)" in text:
            self._in_root = True
        elif self._in_root:
            field = _ROOT_CAUSE_FIELD_RE.match(text)
            if field:
                self.fields.setdefault(field.group(1), field.group(2).strip())
            elif text.startswith("===="):
                self._in_root = False

    def describe(self) -> str | None:
        rank = self.fields.get("rank", "").split(" ")[0]
        code = self.fields.get("exitcode", "")
        signal_name = re.search(r"\((SIG\w+)\)", code)
        if rank and signal_name:
            hint = " (out of memory, or killed from outside)" if signal_name.group(1) == "SIGKILL" else ""
            return f"rank {rank} was killed by {signal_name.group(1)}{hint}"
        if rank and rank in self.rank_errors:
            return self.rank_errors[rank]
        return self.first_error


def _torchrun_exe() -> list[str]:
    exe = Path(sys.executable).parent / "torchrun"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "torch.distributed.run"]


def run_local(spec: LaunchSpec, *, stream: Any = None) -> int:
    """Run ``spec`` with ``torchrun --standalone`` on this machine; stream its output; 0 or LaunchError."""
    if spec.num_nodes > 1:
        log.warning("job %s: local backend runs 1 node (spec asks for %d)", spec.name, spec.num_nodes)
    cmd = [
        *_torchrun_exe(),
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(spec.nproc_per_node),
        "-m",
        spec.module,
        *spec.args,
    ]
    env = dict(os.environ)
    env.update(spec.env)
    missing = [k for k in spec.secret_env if k not in env]
    if missing:
        log.warning("job %s: secret_env %s not set in the local environment", spec.name, missing)
    env.setdefault("PYTHONUNBUFFERED", "1")
    out = stream if stream is not None else sys.stdout
    tail: deque[str] = deque(maxlen=20)
    root_cause = _RootCause()
    log.info("job %s: %s", spec.name, " ".join(cmd))
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )
    timed_out = threading.Event()

    def _kill_on_timeout() -> None:
        if proc.poll() is None:
            timed_out.set()
            _kill_group(proc)

    timer = threading.Timer(spec.timeout_s, _kill_on_timeout)
    timer.daemon = True
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            out.flush()
            if line.strip():
                tail.append(line.rstrip())
                root_cause.feed(line)
        rc = proc.wait()
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        timer.cancel()
    elapsed = time.monotonic() - start
    if timed_out.is_set():
        raise LaunchError(f"job {spec.name}: torchrun timed out after {spec.timeout_s}s and was killed")
    if rc != 0:
        last = root_cause.describe() or _last_error_line(tail)
        raise LaunchError(f"job {spec.name}: torchrun -m {spec.module} exited with code {rc}: {last}")
    log.info("job %s: torchrun finished in %.1fs", spec.name, elapsed)
    return rc


def _last_error_line(tail: deque[str]) -> str:
    for line in reversed(tail):
        if re.search(r"\w(Error|Exception): \S", line):
            return line.strip()[:300]
    return tail[-1].strip()[:300] if tail else "(no output)"


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
