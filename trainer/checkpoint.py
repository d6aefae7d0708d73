"""Resumable training state with ``torch.distributed.checkpoint`` (DCP), on a local folder or S3.

    <root>/step-<N>/.metadata, __<rank>_<i>.distcp    model, optimizer and EMA tensors (sharded as trained)
    <root>/step-<N>/train.json                        step, data position, lr scheduler, world size
    <root>/step-<N>/rng/rank-<r>.pt                   each rank's torch RNG states
    <root>/latest                                     "step-<N>": written last, after every rank's files

With ``data_parallel: deepspeed`` the tensors are DeepSpeed's own files instead of DCP's
(``mp_rank_00_model_states.pt``, ``zero_pp_rank_<r>_mp_rank_00_optim_states.pt``; see
:mod:`trainer.deepspeed_zero`), in the same folder beside the same ``train.json`` and RNG files.

A step folder is complete once ``latest`` names it; a crash while writing leaves ``latest`` on the previous
one. Only the last ``keep_last`` complete folders are kept. DCP reshards on load, so a run may resume onto
another number of ranks (the RNG files are then not used: the data and the objective draw from per-sample
seeds and need none). On S3 every rank writes its files to a node-local staging folder and uploads them;
loading downloads the step folder once per node.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from t2v import storage
from t2v.errors import StageError

log = logging.getLogger(__name__)

LATEST = "latest"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointManager:
    def __init__(self, root: str, cfg, world, staging: Path):
        self.root, self.cfg, self.world = root.rstrip("/"), cfg, world
        self.remote = root.startswith("s3://")
        self.staging = Path(staging)
        self._pending: tuple[int, Any, dict[str, Any]] | None = None
        self._async_group = None
        if cfg.async_save and world.distributed:
            self._async_group = dist.new_group(backend="gloo")  # background writes off the training group

    # where --------------------------------------------------------------------------------------------
    def step_uri(self, step: int) -> str:
        return storage.join(self.root, f"step-{step}")

    def _local_dir(self, step: int) -> Path:
        return self.staging / f"step-{step}" if self.remote else storage.local_path(self.step_uri(step))

    def latest_step(self) -> int | None:
        uri = storage.join(self.root, LATEST)
        if not storage.exists(uri):
            return None
        text = storage.read_text(uri).strip()
        found = _STEP_DIR.match(text)
        if not found:
            raise StageError(f"{uri}: names {text!r}, not a step-N folder")
        return int(found.group(1))

    # saving -------------------------------------------------------------------------------------------
    def save(self, step: int, tensors: dict[str, Any] | None, info: dict[str, Any], write=None) -> None:
        """Write step ``step`` (collective: every rank calls it): ``tensors`` with DCP, or ``write(folder)``
        for a backend with its own format (DeepSpeed). With ``async_save`` DCP stages the tensors in
        memory and writes them in the background; :meth:`wait` (called by the next save and at the end)
        finishes it and moves ``latest``."""
        self.wait()
        folder = self._local_dir(step)
        # a partial write of this step from an interrupted attempt: the shared folder once, or each
        # node's own staging folder
        clears = self.world.local_rank == 0 if self.remote else self.world.rank == 0
        if clears and folder.exists():
            shutil.rmtree(folder)
        self.world.barrier()
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if write is not None:
            write(folder)
            self._finish(step, info, started)
            return
        writer = dcp.FileSystemWriter(str(folder))
        if self.cfg.async_save:
            future = dcp.async_save(tensors, storage_writer=writer, process_group=self._async_group)
            self._pending = (step, future, {**info, "_started": started})
            return
        dcp.save(tensors, storage_writer=writer)
        self._finish(step, info, started)

    def wait(self) -> None:
        if self._pending is None:
            return
        step, future, info = self._pending
        self._pending = None
        future.result()
        self._finish(step, info, info.pop("_started"))

    def _finish(self, step: int, info: dict[str, Any], started: float) -> None:
        folder = self._local_dir(step)
        rng = folder / "rng" / f"rank-{self.world.rank}.pt"
        rng.parent.mkdir(parents=True, exist_ok=True)
        torch.save(_rng_state(), rng)
        if self.world.rank == 0:
            (folder / "train.json").write_text(json.dumps({**info, "step": step, "world_size": self.world.size}, indent=2, sort_keys=True))
        error = ""
        if self.remote:
            try:
                self._upload_mine(step, folder)
            except Exception as exc:  # noqa: BLE001 - every rank must learn of any rank's failure
                error = f"{type(exc).__name__}: {exc}"
        if _any_failed(self.world, bool(error)):
            raise StageError(
                f"checkpoint step-{step} could not be written to {self.step_uri(step)}: "
                f"{error or 'another rank failed to upload its files'}; {LATEST} still names the last complete one"
            )
        if self.world.rank == 0:
            storage.write_text(storage.join(self.root, LATEST), f"step-{step}\n")
            self._prune(step)
        self.world.barrier()
        if self.remote:
            shutil.rmtree(folder, ignore_errors=True)
        if self.world.rank == 0:
            log.info("checkpoint step-%d written to %s in %.1fs", step, self.step_uri(step), time.monotonic() - started)

    def _upload_mine(self, step: int, folder: Path) -> None:
        rank = self.world.rank
        mine = [p for p in folder.rglob("*") if p.is_file() and _written_by(p.relative_to(folder), rank)]
        for path in mine:
            storage.upload_file(path, storage.join(self.step_uri(step), str(path.relative_to(folder))))

    def _prune(self, latest: int) -> None:
        steps = sorted(self._steps_on_storage())
        complete = [s for s in steps if s <= latest]
        for old in complete[: -self.cfg.keep_last]:
            storage.delete_prefix(self.step_uri(old))

    def _steps_on_storage(self) -> set[int]:
        found = set()
        prefix = self.root + "/"
        for uri in storage.list_uris(self.root):
            head = uri[len(prefix):].split("/", 1)[0] if uri.startswith(prefix) else ""
            match = _STEP_DIR.match(head)
            if match:
                found.add(int(match.group(1)))
        if not self.remote and storage.local_path(self.root).is_dir():  # folders holding only hidden files
            found |= {int(m.group(1)) for p in storage.local_path(self.root).iterdir() if (m := _STEP_DIR.match(p.name))}
        return found

    # loading ------------------------------------------------------------------------------------------
    def load(self, step: int, tensors: dict[str, Any] | None, read=None) -> dict[str, Any]:
        """Load step ``step`` into ``tensors`` in place (DCP reshards onto this run's layout), or with
        ``read(folder, train_json)``; returns the step's ``train.json``. Restores this rank's RNG when the
        world size is unchanged."""
        folder = self._local_dir(step)
        if self.remote:
            if self.world.local_rank == 0:
                shutil.rmtree(folder, ignore_errors=True)
                storage.download_dir(self.step_uri(step), folder)
                metadata = storage.join(self.step_uri(step), ".metadata")  # DCP's (hidden) index
                if storage.exists(metadata):
                    storage.download_file(metadata, folder / ".metadata")
            self.world.barrier()
        info = json.loads((folder / "train.json").read_text())
        if read is not None:
            read(folder, info)
        else:
            dcp.load(tensors, storage_reader=dcp.FileSystemReader(str(folder)))
        rng = folder / "rng" / f"rank-{self.world.rank}.pt"
        if info.get("world_size") == self.world.size and rng.is_file():
            _set_rng_state(torch.load(rng, weights_only=False))
        self.world.barrier()
        if self.remote and self.world.local_rank == 0:
            shutil.rmtree(folder, ignore_errors=True)
        return info


_RANK_FILE = re.compile(r"^__(\d+)_|zero_pp_rank_(\d+)_")  # DCP's per-rank files, DeepSpeed's


def _written_by(relative: Path, rank: int) -> bool:
    """Whether ``rank`` wrote (and so uploads) a file of a step folder: its own shard and RNG files;
    rank 0 the shared ones (DCP's .metadata, train.json, DeepSpeed's model states at ZeRO 1/2)."""
    name = relative.name
    if relative.parts[0] == "rng":
        return name == f"rank-{rank}.pt"
    found = _RANK_FILE.search(name)
    if found:
        return int(found.group(1) or found.group(2)) == rank
    return rank == 0


def _any_failed(world, failed: bool) -> bool:
    if not world.distributed:
        return failed
    flag = torch.tensor([1 if failed else 0], dtype=torch.int64, device=world.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
