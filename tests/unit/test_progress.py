"""Progress lines: done/total, rate and ETA; items taken from an earlier run count as done, not as work."""

from __future__ import annotations

import logging

from t2v import progress as progress_module
from t2v.progress import Progress


def test_items_from_an_earlier_run_are_done_but_not_in_the_rate(monkeypatch, caplog):
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    p = Progress("videos", 100, every_s=0.0, logger=logging.getLogger("t"))
    p.skip(90)  # a resumed shard: 90 videos finished by the killed run
    now[0] += 5.0
    with caplog.at_level(logging.INFO, logger="t"):
        p.step(5)  # 5 videos curated in 5 s: 1 a second, 5 s to go
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("videos: 95/100 (95%) 1.00/s eta 5s"), line
