"""The stall watchdog: a video without progress for the limit is interrupted in the main thread; one stuck
where the signal cannot reach is handed to ``on_stuck`` and the process ends; progress keeps it alive;
the verdict outlives the process in the crash journal."""

from __future__ import annotations

import signal
import threading
import time
from types import SimpleNamespace

import pytest

from components.curate.watchdog import (
    EXIT_STALLED,
    STALL_SIGNAL,
    StallWatchdog,
    VideoStalled,
    beat,
    note_stuck,
    take_note,
)
from components.curate.workers import CrashJournal

ROW = SimpleNamespace(index=3, video_id="v3", uri="file:///videos/v3.mp4")


def _never_stuck(row, reason):
    raise AssertionError(f"on_stuck called: {reason}")


def test_a_video_without_progress_is_interrupted_where_its_python_code_is():
    with StallWatchdog(0.5, on_stuck=_never_stuck) as watchdog:
        t0 = time.monotonic()
        with pytest.raises(VideoStalled) as err, watchdog.watching(ROW):
            while time.monotonic() - t0 < 20:
                time.sleep(0.02)
        took = time.monotonic() - t0
    assert 0.5 <= took < 5, took
    assert "v3.mp4: no progress for 0.5 s (max_video_stall_s)" in err.value.reason
    assert signal.getsignal(STALL_SIGNAL) is not watchdog._interrupt  # the handler is put back


def test_progress_keeps_a_long_video_going_and_nothing_fires_between_videos():
    with StallWatchdog(0.4, on_stuck=_never_stuck) as watchdog:
        with watchdog.watching(ROW):
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.6:  # four times the limit, with a beat every 50 ms
                time.sleep(0.05)
                beat()
        time.sleep(1.0)  # no video watched: no interrupt


def test_a_video_stuck_where_no_signal_reaches_is_handed_over_and_the_process_ends():
    calls, ended = [], threading.Event()

    def fake_exit(code):
        calls.append(("exit", code))
        ended.set()

    watchdog = StallWatchdog(0.4, on_stuck=lambda row, reason: calls.append((row.video_id, reason)), exit=fake_exit)
    watchdog.start()
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {STALL_SIGNAL})  # as code inside a C library: deaf to it
        try:
            with watchdog.watching(ROW):
                assert ended.wait(timeout=20)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {STALL_SIGNAL})  # (the pending signals: no video now)
    finally:
        watchdog.stop()
    (who, reason), last = calls[0], calls[-1]
    assert who == "v3" and "no progress for 0.4 s" in reason and "could not be interrupted" in reason
    assert last == ("exit", EXIT_STALLED) and len(calls) == 2


def test_no_limit_and_other_threads_watch_nothing():
    assert StallWatchdog(0, on_stuck=_never_stuck).start() is False
    started = []
    t = threading.Thread(target=lambda: started.append(StallWatchdog(1, on_stuck=_never_stuck).start()))
    t.start()
    t.join()
    assert started == [False]


def test_a_workers_note_names_the_stuck_video_once(tmp_path):
    note_stuck(tmp_path, ROW, "no progress")
    assert take_note(tmp_path, 4) is None
    assert take_note(tmp_path, 3) == "no progress"
    assert take_note(tmp_path, 3) is None


def test_the_journal_keeps_a_stall_across_runs_without_counting_a_death(tmp_path):
    uri = str(tmp_path / "attempts.json")
    first = CrashJournal(uri, "fp", limit=2)
    first.running([ROW])
    first.stalled(ROW, "v3: no progress for 600 s")  # then the process ended
    again = CrashJournal(uri, "fp", limit=2)
    assert again.verdict(ROW) == ("stalled", "v3: no progress for 600 s")
    assert again.deaths == {}
    other = SimpleNamespace(index=4, video_id="v4", uri="u4")
    assert again.verdict(other) is None
    assert CrashJournal(uri, "another config", limit=2).verdict(ROW) is None  # a new config tries it again
