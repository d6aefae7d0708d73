"""A video whose curation stops making progress, and how the shard gets past it.

Among a million videos some file will hang the process curating it: a decoder looping on a malformed
stream, a demuxer probing garbage for ever, a read that never returns. Without a limit the shard's task
sits until the pipeline's own timeout, and its retry meets the same file again.

:class:`StallWatchdog` watches the video its process is curating. Every step of the curation is a
heartbeat (:func:`beat`: each decoded frame, each score, each model call, each downloaded chunk of an S3
object; :class:`components.curate.video_pass.Timers` beats as each step starts and ends). When
``max_video_stall_s`` pass without one, the watchdog sends :data:`STALL_SIGNAL` to the process's main
thread, whose handler raises :class:`VideoStalled` wherever the video's Python code is: the video is
recorded as ``stalled`` and the shard goes on. Code that never returns to Python (a loop inside a C
library) cannot be interrupted that way: after a grace period (a quarter of the limit, 1 to 60 s) the
watchdog hands the verdict to ``on_stuck`` -- a pool worker leaves a note for the shard process
(:func:`note_stuck`), the shard's own process writes it into its crash journal -- and ends the process
with :data:`EXIT_STALLED`. The shard (or, for its own process, the task's rerun) records the video as
``stalled`` from that note and goes on without trying it again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The signal that interrupts a stalled video in its process's main thread.
STALL_SIGNAL = signal.SIGUSR2
#: Exit status of a process ended because a video was stuck where no signal reaches it (EX_TEMPFAIL).
EXIT_STALLED = 75


class VideoStalled(BaseException):
    """Raised in the main thread when the video being curated made no progress for the limit. A
    ``BaseException``, so that no ``except Exception`` on the way (the reader's handling of damaged
    packets, a scorer's) takes it for an error of the video's own."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_current: StallWatchdog | None = None


def beat() -> None:
    """Progress on the video being curated (a no-op when no watchdog runs in this process)."""
    watchdog = _current
    if watchdog is not None:
        watchdog.last = time.monotonic()


class StallWatchdog:
    """Watches the video this process curates (:meth:`watching`); see the module's docstring.

    ``limit_s`` 0 watches nothing. ``on_stuck(row, reason)`` is called from the watchdog's thread when
    the interrupted video's code has not returned within the grace period; the process then ends
    (``exit``, :func:`os._exit` but in tests)."""

    def __init__(self, limit_s: float, on_stuck: Callable[[Any, str], None], exit: Callable[[int], None] = os._exit):
        self.limit = float(limit_s)
        self.grace = max(1.0, min(60.0, self.limit / 4))
        self.poll = max(0.05, min(1.0, self.limit / 10))
        self.on_stuck, self._exit = on_stuck, exit
        self.row: Any = None
        self.last = 0.0
        self.reason: str | None = None
        self._fired_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous_handler: Any = None

    def start(self) -> bool:
        """Start watching (True), or say why not: no limit, or not in the main thread (the signal's
        handler can only be installed there)."""
        global _current
        if not self.limit:
            return False
        if threading.current_thread() is not threading.main_thread():
            log.warning("curate: max_video_stall_s needs the shard to run in its process's main thread; "
                        "stalled videos are not interrupted here")
            return False
        self._previous_handler = signal.signal(STALL_SIGNAL, self._interrupt)
        _current = self
        self._thread = threading.Thread(target=self._watch, name="curate-stall-watchdog", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        global _current
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        signal.signal(STALL_SIGNAL, self._previous_handler)
        if _current is self:
            _current = None

    def __enter__(self) -> StallWatchdog:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @contextmanager
    def watching(self, row: Any) -> Iterator[None]:
        """Curate ``row``'s video inside this block: :class:`VideoStalled` comes out of it if the video
        stalls (only while the watchdog runs)."""
        with self._lock:
            self.row, self.last, self.reason = row, time.monotonic(), None
        try:
            yield
        finally:
            with self._lock:
                self.row, self.reason = None, None

    def _interrupt(self, signum, frame) -> None:
        reason = self.reason
        if reason is not None and self.row is not None:
            raise VideoStalled(reason)

    def _watch(self) -> None:
        main = threading.main_thread().ident
        while not self._stop.wait(self.poll):
            with self._lock:
                row = self.row
                if row is None:
                    continue
                now = time.monotonic()
                if self.reason is None:
                    if now - self.last <= self.limit:
                        continue
                    self.reason = (f"{getattr(row, 'uri', row)}: no progress for {self.limit:g} s "
                                   "(max_video_stall_s): a decoder or a read that does not return")
                    self._fired_at = now
                    log.error("curate: %s (row %s) stalled; interrupting it", getattr(row, "video_id", row),
                              getattr(row, "index", "?"))
                if now - self._fired_at <= self.grace:
                    # (again on every poll: a handler's exception raised inside a finaliser is lost)
                    signal.pthread_kill(main, STALL_SIGNAL)
                    continue
                reason = f"{self.reason}; stuck where it could not be interrupted, the process ended"
            log.error("curate: %s (row %s) did not return %.0f s after the interrupt: ending the process (exit "
                      "status %d) so the shard can go on without it", getattr(row, "video_id", row),
                      getattr(row, "index", "?"), self.grace, EXIT_STALLED)
            try:
                self.on_stuck(row, reason)
            finally:
                self._exit(EXIT_STALLED)
            return


# ------------------------------------------------------------------- a pool worker's note for its shard
def _note_path(folder: Path | str, index: int) -> Path:
    return Path(folder) / "stalled" / f"{int(index)}.json"


def note_stuck(folder: Path | str, row: Any, reason: str) -> None:
    """Leave the verdict on ``row`` where the shard's process finds it once the worker has ended."""
    path = _note_path(folder, row.index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"video_index": int(row.index), "reason": reason}))
    os.replace(tmp, path)


def take_note(folder: Path | str, index: int) -> str | None:
    """The reason a worker left for video ``index`` before it ended (the note is removed), or None."""
    path = _note_path(folder, index)
    try:
        reason = json.loads(path.read_text())["reason"]
    except (OSError, ValueError, KeyError):
        return None
    path.unlink(missing_ok=True)
    return str(reason)


__all__ = ["StallWatchdog", "VideoStalled", "beat", "note_stuck", "take_note", "STALL_SIGNAL", "EXIT_STALLED"]
