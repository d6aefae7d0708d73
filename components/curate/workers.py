"""The videos of one curate shard, one at a time or side by side, and the videos that kill their process.

A shard task's pod has several cores (16 in the production profile) and the curation of one video runs on
one (bit-exact decoding and x264 with one thread are what make a shard's bytes the same on every run).
With ``video_workers`` above 1 the shard's videos are curated by that many processes (spawned, each with
its own captioner and model scorers, every library held to one thread), at most two videos per process in
flight, and their results are taken **in table order**, so the manifest, thumbnails and tars are those of
one process curating them one after the other.

A video can kill the process curating it: the kernel's out-of-memory killer, a decoder crashing on a
malformed stream. :class:`CrashJournal` notes, before a video starts, which videos are in flight, where a
rerun of the shard's task finds it. A death counts against every video then in flight; a video with a
death is a *suspect* and is curated alone (no other video in flight), so a second death names it; at
``max_video_crashes`` deaths it is recorded as ``crashed`` and skipped, and the shard finishes. Inside a
pool the shard sees a worker die (the pool breaks) and does this at once, without the task dying; when the
task itself dies (the whole pod is killed), the journal carries the count to its rerun.

A video that hangs its process (no progress for ``max_video_stall_s``) is interrupted by the process's
:class:`components.curate.watchdog.StallWatchdog` and recorded as ``stalled``; one stuck where no signal
reaches ends its worker, which leaves a note naming it (the others in flight go again, unblamed), or the
shard's own process, whose journal then holds the verdict for the rerun.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from components.curate.watchdog import StallWatchdog, VideoStalled, note_stuck, take_note
from t2v import storage

log = logging.getLogger(__name__)

#: Thread-count variables of the numeric libraries, set to 1 in the worker processes (one core each).
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class CrashJournal:
    """Which videos of a shard are being curated, written before each starts where a rerun finds it
    (``uri``: a local path or a URI that outlives the process), with each video's death count.

    A rerun with the same ``fingerprint`` (the same rows and config) that finds videos named there counts
    a death for each. :meth:`verdict` says which to skip (``limit`` deaths; 0: none), :meth:`suspect`
    which to curate alone. A single death (a preemption) costs nothing: the video is curated again and the
    outputs are those of one clean run. The journal holds no time, so a finished shard's journal is the
    same file on every run."""

    def __init__(self, uri: str, fingerprint: str, limit: int):
        self.uri, self.fingerprint, self.limit = uri, fingerprint, int(limit)
        self.deaths: dict[int, int] = {}
        self.stalls: dict[int, str] = {}  # videos that stalled (components.curate.watchdog): their reasons
        self._current: list[dict[str, Any]] = []
        try:
            data = json.loads(storage.read_text(uri)) if storage.exists(uri) else {}
        except (ValueError, storage.StorageError) as exc:  # unreadable: start afresh
            log.warning("curate: crash journal %s unreadable (%s); starting afresh", uri, exc)
            data = {}
        if data.get("fingerprint") == fingerprint:
            self.deaths = {int(k): int(v) for k, v in (data.get("deaths") or {}).items()}
            self.stalls = {int(k): str(v) for k, v in (data.get("stalls") or {}).items()}
            current = data.get("current") or []
            for video in [current] if isinstance(current, dict) else current:
                if int(video["video_index"]) not in self.stalls:  # (a stall ended that run: no death of its own)
                    self.died(video["video_index"], video.get("video_id", "?"), video.get("uri", "?"), "the last run")
        self.running([])

    def died(self, index: int, video_id: str, uri: str, who: str) -> None:
        index = int(index)
        self.deaths[index] = self.deaths.get(index, 0) + 1
        log.warning("curate: %s died while curating %s (row %d, %s): %d time(s) now", who, video_id, index, uri,
                    self.deaths[index])

    def running(self, rows: list) -> None:
        """Note the videos in flight (none: between videos, or the shard done)."""
        self._current = [{"video_index": r.index, "video_id": r.video_id, "uri": r.uri} for r in sorted(rows, key=lambda r: r.index)]
        self._write()

    def stalled(self, row, reason: str) -> None:
        """Note that ``row``'s video stalled: it is not curated again (the verdict outlives the process)."""
        self.stalls[int(row.index)] = reason
        self._write()

    def _write(self) -> None:
        record = {"fingerprint": self.fingerprint, "current": self._current or None,
                  "deaths": {str(k): v for k, v in sorted(self.deaths.items())}}
        if self.stalls:
            record["stalls"] = {str(k): v for k, v in sorted(self.stalls.items())}
        storage.write_text(self.uri, json.dumps(record, sort_keys=True))

    def suspect(self, row) -> bool:
        return self.deaths.get(row.index, 0) > 0

    def verdict(self, row) -> tuple[str, str] | None:
        """Why ``row``'s video is skipped, as (drop reason, one line): ``stalled`` (it made no progress
        for the limit), ``crashed`` (it killed its process ``limit`` times); None: curate it."""
        if row.index in self.stalls:
            return "stalled", self.stalls[row.index]
        deaths = self.deaths.get(row.index, 0)
        if not self.limit or deaths < self.limit:
            return None
        return "crashed", (f"{row.uri}: the curate process died {deaths} times while curating this video (out of"
                           " memory, killed, or a decoder crash); skipped so the shard can finish")


# ------------------------------------------------------------------------------------- in a worker process
_WORKER: dict[str, Any] = {}


def _start_worker(cfg_json: str, caption: Callable, curate_video: Callable, spool_dir: str, log_level: int) -> None:
    """A pool process: its own captioner and model scorers (loaded once), every library on one thread,
    logging as the shard does (a long video's progress lines come from here). ``caption`` and
    ``curate_video`` are module-level functions (pickled by name)."""
    import cv2

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        force=True)

    from components.curate.models import ModelScorers, VlmCaptioner
    from t2v.config.curate import CurateConfig

    cv2.setNumThreads(1)
    cfg = CurateConfig.model_validate_json(cfg_json)
    if cfg.caption_model:
        caption = VlmCaptioner(cfg.caption_model, cfg)
    # a video stuck where no signal reaches it: the note tells the shard which one ended this worker
    watchdog = StallWatchdog(cfg.max_video_stall_s, on_stuck=lambda row, reason: note_stuck(spool_dir, row, reason))
    watchdog.start()
    _WORKER.update(cfg=cfg, caption=caption, models=ModelScorers.from_config(cfg), spool_dir=Path(spool_dir),
                   curate_video=curate_video, watchdog=watchdog)


def _curate_in_worker(row) -> dict[str, Any]:
    """One video in a worker; ``{"stalled": reason}`` if it stalled and was interrupted."""
    from components.curate.video_pass import Timers

    timers = Timers()
    w = _WORKER
    try:
        with w["watchdog"].watching(row):
            result = w["curate_video"](row, w["cfg"], w["caption"], w["models"], w["spool_dir"], timers)
    except VideoStalled as exc:
        return {"stalled": exc.reason}
    result["seconds"] = timers.seconds
    return result


def _ping() -> bool:
    return True


@contextmanager
def _one_thread_environment():
    """The worker processes start (spawn) with the numeric libraries held to one thread each."""
    saved = {k: os.environ.get(k) for k in _ONE_THREAD}
    os.environ.update({k: "1" for k in _ONE_THREAD})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ----------------------------------------------------------------------------------------------- the shard
def curate_in_order(
    rows: list, ready: Callable[[Any], dict | None], curate_here: Callable[[Any], dict], journal: CrashJournal,
    workers: int, worker_args: tuple, give_up: Callable[[Any, str, str], dict], stall_limit: float = 0.0,
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """``(row, result)`` for every row, in the rows' order. ``ready(row)`` gives the result of a row that
    needs no curating (a bad row) or None; ``curate_here(row)`` curates one in this process (one worker);
    with more workers, a spawned pool started with ``worker_args`` (:func:`_start_worker`'s: the config
    as JSON, the captioner, the function that curates one video, the spool folder) curates them.
    ``give_up(row, reason, line)`` is the result of a video not curated: ``crashed`` (it killed its
    process too often) or ``stalled`` (no progress for ``stall_limit`` seconds, see
    :mod:`components.curate.watchdog`; 0: no limit, in this process; the workers take theirs from the
    config)."""
    if workers <= 1:
        with StallWatchdog(stall_limit, on_stuck=journal.stalled) as watchdog:
            for row in rows:
                result = ready(row)
                if result is None:
                    verdict = journal.verdict(row)
                    if verdict:
                        result = give_up(row, *verdict)
                    else:
                        journal.running([row])
                        try:
                            with watchdog.watching(row):
                                result = curate_here(row)
                        except VideoStalled as exc:
                            journal.stalled(row, exc.reason)
                            result = give_up(row, "stalled", exc.reason)
                yield row, result
        journal.running([])
        return
    yield from _pooled(rows, ready, journal, workers, worker_args, give_up)


def _pooled(rows, ready, journal: CrashJournal, workers: int, worker_args, give_up):
    import multiprocessing

    results: dict[int, dict[str, Any]] = {}
    alone: list[int] = []  # suspects (a death on record): curated with nothing else in flight, first
    together: list[int] = []
    for i, row in enumerate(rows):
        result = ready(row)
        if result is not None:
            results[i] = result
        else:
            (alone if journal.suspect(row) else together).append(i)
    context = multiprocessing.get_context("spawn")
    flying: dict[Future, int] = {}
    notes = worker_args[3]  # the spool folder: where a worker leaves the name of a video stuck in it

    def stalled(i: int, reason: str | None) -> dict[str, Any] | None:
        """The result of video ``i`` that stalled in a worker (and the journal noting it), or None."""
        if reason is None:
            return None
        journal.stalled(rows[i], reason)
        return give_up(rows[i], "stalled", reason)

    def start_pool() -> ProcessPoolExecutor:
        """A pool whose processes start: a worker that dies before any video (an import or a model that
        fails to load) is the pool's fault, not a video's, and fails the shard saying so."""
        with _one_thread_environment():
            started = ProcessPoolExecutor(
                workers, mp_context=context, initializer=_start_worker,
                initargs=(*worker_args, logging.getLogger().getEffectiveLevel()),
            )
        try:
            started.submit(_ping).result()
        except BrokenProcessPool as exc:
            started.shutdown(wait=True, cancel_futures=True)
            raise RuntimeError(
                "curate: the worker processes die as they start (see their error above); "
                "video_workers: 1 curates in this process"
            ) from exc
        return started

    def submit_what_may_go() -> None:
        while True:
            if alone:
                if flying:  # a suspect goes only when nothing else is in flight
                    return
                i = alone.pop(0)
            elif together and len(flying) < 2 * workers and not any(journal.suspect(rows[j]) for j in flying.values()):
                i = together.pop(0)
            else:
                return
            verdict = journal.verdict(rows[i])
            if verdict:
                results[i] = give_up(rows[i], *verdict)
                continue
            flying[pool.submit(_curate_in_worker, rows[i])] = i
            journal.running([rows[j] for j in flying.values()])
            if journal.suspect(rows[i]):
                return

    order = iter(range(len(rows)))
    nxt = next(order, None)
    if not (alone or together):  # nothing to curate (bad rows only): no pool to start
        for i in range(len(rows)):
            yield rows[i], results.pop(i)
        journal.running([])
        return
    pool = start_pool()
    try:
        while alone or together or flying:
            submit_what_may_go()
            if flying:
                done, _ = wait(list(flying), return_when=FIRST_COMPLETED)
                for f in done:
                    if not isinstance(f.exception(), BrokenProcessPool):
                        i = flying.pop(f)  # (a video's own errors are records in its result)
                        results[i] = stalled(i, f.result().get("stalled")) or f.result()
                broke = any(isinstance(f.exception(), BrokenProcessPool) for f in done)
                if broke:
                    # a worker ended itself for a video stuck where it could not be interrupted (its note
                    # names it): the others in flight are innocent and go again; else a worker died:
                    # every video still in flight is a suspect, curated alone from now on
                    stuck = False
                    for i in flying.values():
                        result = stalled(i, take_note(notes, rows[i].index))
                        if result is not None:
                            results[i], stuck = result, True
                    innocent = sorted(i for i in flying.values() if i not in results)
                    if stuck:
                        together = sorted([*innocent, *together])
                    else:
                        for i in innocent:
                            journal.died(rows[i].index, rows[i].video_id, rows[i].uri, "a curate worker")
                        alone = sorted([*innocent, *alone])
                    flying.clear()
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = start_pool()
                if broke or not (alone or together):  # (else the next submission writes the journal)
                    journal.running([rows[j] for j in flying.values()])
            while nxt is not None and nxt in results:
                yield rows[nxt], results.pop(nxt)
                nxt = next(order, None)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    journal.running([])


__all__ = ["CrashJournal", "curate_in_order"]
