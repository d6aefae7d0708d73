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

The folder is local (a task's temporary folder in the pipeline, which a retried task does not get back):
with ``mirror`` (a URI in the run's storage) each result and its clips are also uploaded as they are
taken, and a task that starts with an empty folder downloads the mirror's first. A failed upload costs
that video's resumability, not the shard.

The folder is removed once the shard's tars are in place (the mirror too); another fingerprint, or
``force``, starts it afresh.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from t2v import storage

log = logging.getLogger(__name__)

#: The key of a result :meth:`ShardWork.get` gives (it is not put again, nor counted as work done).
FROM_EARLIER_RUN = "from_earlier_run"
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

    def __init__(self, folder: Path, fingerprint: str, fresh: bool = False, mirror: str | None = None):
        self.folder, self.fingerprint, self.mirror = Path(folder), fingerprint, mirror
        self.spool = self.folder / "spool"
        self.videos = self.folder / "videos"
        marker = self.folder / "fingerprint"
        kept = not fresh and marker.exists() and marker.read_text().strip() == fingerprint
        if not kept and self.folder.exists():
            shutil.rmtree(self.folder)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.videos.mkdir(parents=True, exist_ok=True)
        if mirror:
            self._from_mirror(fresh)
            kept = kept or marker.exists() and marker.read_text().strip() == fingerprint
        if not kept:
            marker.write_text(fingerprint + "\n")
            if mirror:
                storage.write_text(storage.join(mirror, "fingerprint"), fingerprint + "\n")
        # what a killed run left half done: a worker's note on a stuck video (that run's verdict is in the
        # crash journal), tars being written
        shutil.rmtree(self.spool / "stalled", ignore_errors=True)
        stale_files = [*self.folder.glob("*.tar"), *self.videos.glob("*.tmp"), *self.spool.glob(".*.mp4.*")]
        for stale in stale_files:
            stale.unlink(missing_ok=True)
        self.reused = 0

    def _from_mirror(self, fresh: bool) -> None:
        """The mirror's results into the folder where they are this fingerprint's (others are deleted)."""
        assert self.mirror
        marker = storage.join(self.mirror, "fingerprint")
        theirs = storage.read_text(marker).strip() if storage.exists(marker) else None
        if fresh or theirs != self.fingerprint:
            if theirs is not None or storage.list_uris(self.mirror):
                storage.delete_prefix(self.mirror)
            return
        t0 = time.monotonic()
        uris = storage.list_uris(self.mirror)
        for uri in uris:
            rel = uri[len(self.mirror.rstrip("/")) + 1 :]
            if rel == "fingerprint" or rel.startswith(("videos/", "spool/")):
                storage.download_file(uri, self.folder / rel)
        log.info("curate: %d files of the work in progress taken from %s in %.1f s", len(uris), self.mirror,
                 time.monotonic() - t0)

    def _upload(self, local: Path) -> None:
        assert self.mirror
        storage.upload_file(local, storage.join(self.mirror, str(local.relative_to(self.folder))))

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
        if self.mirror:
            try:  # the clips first: a result in the mirror has its clips there
                for rec in records:
                    if rec.get("keep") and (self.spool / f"{rec['clip_id']}.mp4").exists():
                        self._upload(self.spool / f"{rec['clip_id']}.mp4")
                self._upload(path)
            except storage.StorageError as exc:
                log.warning("curate: row %d's result not mirrored to %s (%s): a rerun curates it again", index,
                            self.mirror, exc)

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
        result: dict[str, Any] = {"records": records, "thumbs": data["thumbs"], "pending": pending,
                                  FROM_EARLIER_RUN: True}
        if data.get("scenes") is not None:
            result["scenes"] = data["scenes"]
        return result

    def remove(self, keep_local: bool = False) -> None:
        """Remove the work (``keep_local``: the mirror only, the folder staying for a later run)."""
        if not keep_local:
            shutil.rmtree(self.folder, ignore_errors=True)
        if self.mirror:
            storage.delete_prefix(self.mirror)


__all__ = ["FROM_EARLIER_RUN", "ShardWork", "TRIED_AGAIN", "UNAVAILABLE"]
