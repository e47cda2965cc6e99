"""How many CPUs the cgroup's quota lets this process use, for `CAI_JUDGE_CPU_THREADS_BIND=all`.

`all` binds one OpenMP thread per core of `sched_getaffinity`. Under Kubernetes' default CPU
manager policy that is every core of the node, while the pod's CPU limit is a CFS quota:
64 busy-waiting threads under a 4-CPU quota spend most of each period throttled. The quota
(cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`) caps the thread count.
Parsing is pure (tested on file contents); only `read_cpu_limit` touches the filesystem.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_limit_v2(cpu_max: str) -> int | None:
    """CPUs a cgroup v2 `cpu.max` ("QUOTA PERIOD", or "max PERIOD") allows, rounded down
    (a thread on a fraction of a CPU is throttled every period), at least 1; None: no quota."""
    fields = cpu_max.split()
    if not fields or fields[0] == "max":
        return None
    quota = int(fields[0])
    period = int(fields[1]) if len(fields) > 1 else 100_000
    return _whole_cpus(quota, period)


def cpu_limit_v1(cfs_quota_us: str, cfs_period_us: str) -> int | None:
    """The same from cgroup v1's `cpu.cfs_quota_us` (-1: no quota) and `cpu.cfs_period_us`."""
    quota = int(cfs_quota_us.strip())
    if quota < 0:
        return None
    return _whole_cpus(quota, int(cfs_period_us.strip()))


def _whole_cpus(quota: int, period: int) -> int | None:
    if period <= 0:
        return None
    return max(1, math.floor(quota / period))


def read_cpu_limit(root: Path = CGROUP_ROOT) -> int | None:
    """This process's CPU quota in whole CPUs, from cgroup v2 or v1; None without one."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            return cpu_limit_v2(v2.read_text())
        for v1 in (root / "cpu", root / "cpu,cpuacct"):
            quota = v1 / "cpu.cfs_quota_us"
            if quota.is_file():
                return cpu_limit_v1(quota.read_text(), (v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None  # an unreadable or odd cgroup: bind as before rather than fail
    return None


def cap_cores(cores: Iterable[int], limit: int | None, seed: str = "") -> list[int]:
    """`cores` cut to `limit`: a run of `limit` of them, wrapping, starting at a place
    derived from `seed` (the host name, which is the pod's), so that pods sharing a node
    bind different cores instead of all piling onto the first ones."""
    ordered = sorted(cores)
    if limit is None or limit >= len(ordered):
        return ordered
    start = zlib.crc32(seed.encode()) % len(ordered)
    return sorted((ordered + ordered)[start : start + limit])
