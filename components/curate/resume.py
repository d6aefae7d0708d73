"""A shard's work in progress, kept where the rerun of a killed shard task finds it.

A curate shard holds thousands of videos and runs for hours on node pools whose pods get preempted. Each
video's result (its manifest records, cut list, thumbnails and dedup signatures) is written, as soon as the
shard takes it in table order, into ``shards/.work-{shard:03d}/videos/`` beside the spooled clips of the
videos it kept (``.work-{shard:03d}/spool/``). A rerun of the same shard (the same fingerprint: rows,
config, models, stage version) picks those results up and curates only the videos that have none, so a
task killed after 9,000 of 10,000 videos loses one video's work, not nine thousand. The results are the
same values a clean run computes (they are the values, written and read back exactly: JSON for the
records, raw bytes for the signatures), so the manifest and the tars are those of one clean run.

A video whose source could not be had (``unavailable``: the object store refused, a server error after the
retries, the network) is not taken from an earlier run's results: its rerun tries it again.

The folder is removed once the shard's tars are in place; another fingerprint, or ``force``, starts it
afresh.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: A video's drop reason when its source could not be had (:class:`t2v.storage.StorageError`'s kind).
UNAVAILABLE = "unavailable"
#: Drop reasons of a video that may come out otherwise when tried again: its earlier result is not reused.
TRIED_AGAIN = frozenset({UNAVAILABLE})


def _array_to_json(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def _array_from_json(d: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["data"]), dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


class ShardWork:
    """The work folder of one shard: its spool of encoded clips and each finished video's result.

    ``folder`` is kept when it holds ``fingerprint``'s work; any other (or ``fresh``) is emptied first."""

    def __init__(self, folder: Path, fingerprint: str, fresh: bool = False):
        self.folder, self.fingerprint = Path(folder), fingerprint
        self.spool = self.folder / "spool"
        self.videos = self.folder / "videos"
        marker = self.folder / "fingerprint"
        kept = not fresh and marker.exists() and marker.read_text().strip() == fingerprint
        if not kept and self.folder.exists():
            shutil.rmtree(self.folder)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.videos.mkdir(parents=True, exist_ok=True)
        if not kept:
            marker.write_text(fingerprint + "\n")
        # what a killed run left half done: a worker's note on a stuck video (that run's verdict is in the
        # crash journal), tars being written
        shutil.rmtree(self.spool / "stalled", ignore_errors=True)
        stale_files = [*self.folder.glob("*.tar"), *self.videos.glob("*.tmp"), *self.spool.glob(".*.mp4.*")]
        for stale in stale_files:
            stale.unlink(missing_ok=True)
        self.reused = 0

    def _path(self, index: int) -> Path:
        return self.videos / f"{int(index):09d}.json"

    def finished(self) -> int:
        """How many videos have a result here."""
        return sum(1 for _ in self.videos.glob("*.json"))

    def put(self, index: int, result: dict[str, Any]) -> None:
        """Keep video ``index``'s result (written whole, then renamed: a kill leaves it or nothing)."""
        records = result.get("records", [])
        position = {id(r): i for i, r in enumerate(records)}
        pending = []
        for rec, sig in result.get("pending", []):
            where = position.get(id(rec))  # (the same dict as one of the records, as the stage makes it)
            pending.append({
                "record": where if where is not None else rec,
                "signature": None if sig is None else [_array_to_json(np.asarray(a)) for a in sig],
            })
        data = {"records": records, "scenes": result.get("scenes"), "thumbs": result.get("thumbs", []),
                "pending": pending}
        path = self._path(index)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def get(self, index: int) -> dict[str, Any] | None:
        """Video ``index``'s result from an earlier run, or None: none, unreadable, one of
        :data:`TRIED_AGAIN`, or a kept clip whose spooled file is gone (then it is curated again)."""
        path = self._path(index)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("curate: the earlier result of row %d is unreadable (%s); curating it again", index, exc)
            return None
        records = data["records"]
        if any(TRIED_AGAIN.intersection(r.get("drop_reasons") or ()) for r in records):
            return None
        pending = []
        for item in data["pending"]:
            rec = records[item["record"]] if isinstance(item["record"], int) else item["record"]
            sig = None if item["signature"] is None else tuple(_array_from_json(a) for a in item["signature"])
            if rec.get("keep") and not (self.spool / f"{rec['clip_id']}.mp4").exists():
                return None
            pending.append((rec, sig))
        self.reused += 1
        result: dict[str, Any] = {"records": records, "thumbs": data["thumbs"], "pending": pending}
        if data.get("scenes") is not None:
            result["scenes"] = data["scenes"]
        return result

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["ShardWork", "TRIED_AGAIN", "UNAVAILABLE"]
