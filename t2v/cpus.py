"""How many CPUs this process may use: the cores it may run on, capped by its container's CPU quota.

In a Kubernetes pod ``os.cpu_count()`` and the scheduler affinity are the node's cores (96 on a large
node) while the pod's CPU limit is a CFS quota (16 CPUs: ``cpu.max`` of ``1600000 100000``); a pool
sized by the node would run six processes per CPU it is given, throttled, each holding its own memory.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _quota(cgroup_root: Path) -> float | None:
    """CPUs the container's CFS quota allows (cgroup v2 ``cpu.max``, else v1), or None when unlimited."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The cores this process may run on (its affinity), at most its container's CPU quota (rounded
    down; at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # (not Linux)
        cores = os.cpu_count() or 1
    quota = _quota(Path(cgroup_root))
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota + 1e-9)))
    return max(1, cores)


__all__ = ["usable_cpus"]
