"""Progress lines for loops that run for minutes: done/total, percent, rate and ETA, at most every
``every_s`` seconds (and always at the end)."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, name: str, total: int, every_s: float = 10.0, logger: logging.Logger | None = None):
        self.name, self.total, self.every_s = name, max(total, 1), every_s
        self.start = self.last = time.monotonic()
        self.done = 0
        self.skipped = 0  # items done without work (taken from an earlier run): not part of the rate
        self.log = logger or log

    def update(self, done: int, **fields: Any) -> None:
        """Report that ``done`` items are finished; extra fields (a loss, say) are appended."""
        self.done = done
        now = time.monotonic()
        if now - self.last < self.every_s and done < self.total:
            return
        self.last = now
        elapsed = now - self.start
        rate = (done - self.skipped) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        self.log.info(
            "%s: %d/%d (%.0f%%) %.2f/s eta %.0fs %s", self.name, done, self.total, 100 * done / self.total, rate, eta, extra
        )

    def step(self, n: int = 1, **fields: Any) -> None:
        """Report ``n`` more items finished."""
        self.update(self.done + n, **fields)

    def skip(self, n: int = 1) -> None:
        """Count ``n`` items as done that took no work (an earlier run's results): the rate and the ETA
        are those of the items worked on."""
        self.skipped += n
        self.done += n
