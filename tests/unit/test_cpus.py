"""t2v.cpus: the CPUs a process may use, the container's quota included."""

from __future__ import annotations

import os

from t2v.cpus import usable_cpus


def test_the_containers_quota_caps_the_cores(tmp_path):
    cores = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # a 1-CPU limit (cgroup v2)
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: rounded down
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")  # no limit: the cores
    assert usable_cpus(tmp_path) == cores
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")  # cgroup v1, half a CPU: at least one
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cpus(tmp_path) == cores
    assert usable_cpus(tmp_path / "absent") == cores
