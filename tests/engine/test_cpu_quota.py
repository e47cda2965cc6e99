"""`CAI_JUDGE_CPU_THREADS_BIND=all` caps its thread count at the cgroup's CPU quota (issue
29): under the default CPU manager policy the affinity is every core of the node, and N
threads under a 4-CPU quota are throttled. Pure functions, fed file contents."""

from __future__ import annotations

from pathlib import Path

import pytest

from cai_judge.engine import vllm_async
from cai_judge.engine.cpu_quota import cap_cores, cpu_limit_v1, cpu_limit_v2, read_cpu_limit


@pytest.mark.parametrize(
    ("cpu_max", "cpus"),
    [
        ("400000 100000\n", 4),  # limits: cpu: 4
        ("max 100000\n", None),  # no limit
        ("350000 100000\n", 3),  # 3.5 CPUs: a fourth thread would be throttled every period
        ("50000 100000\n", 1),  # 500m: still one thread
        ("200000 50000\n", 4),  # another period
    ],
)
def test_cgroup_v2_cpu_max(cpu_max: str, cpus: int | None):
    assert cpu_limit_v2(cpu_max) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"),
    [("400000\n", "100000\n", 4), ("-1\n", "100000\n", None), ("150000", "100000", 1)],
)
def test_cgroup_v1_cfs_quota(quota: str, period: str, cpus: int | None):
    assert cpu_limit_v1(quota, period) == cpus


def test_read_prefers_v2_then_v1_and_tolerates_garbage(tmp_path: Path):
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    assert read_cpu_limit(tmp_path) == 4
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert read_cpu_limit(tmp_path / "v1") == 2
    assert read_cpu_limit(tmp_path / "nothing") is None
    (tmp_path / "cpu.max").write_text("not a quota\n")
    assert read_cpu_limit(tmp_path) is None


def test_cap_cores_takes_a_run_of_the_quotas_size():
    node = list(range(64))
    assert cap_cores(node, None) == node
    assert cap_cores(node, 128) == node
    capped = cap_cores(node, 4, seed="cai-judge-7d9f-abcde")
    assert len(capped) == 4 and set(capped) <= set(node)
    assert capped == cap_cores(node, 4, seed="cai-judge-7d9f-abcde")  # stable per pod
    # Pods on one node start at different places, not all on cores 0-3.
    starts = {cap_cores(node, 4, seed=f"pod-{i}")[0] for i in range(16)}
    assert len(starts) > 8


def test_threads_bind_all_follows_the_quota(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(vllm_async.os, "sched_getaffinity", lambda _: set(range(64)))
    monkeypatch.setattr("cai_judge.engine.cpu_quota.read_cpu_limit", lambda: 4)
    bound = vllm_async.resolve_threads_bind("all")
    cores = [int(c) for c in bound.split(",")] if "," in bound else bound.split("-")
    count = len(cores) if "," in bound else int(cores[1]) - int(cores[0]) + 1
    assert count == 4, bound
    assert vllm_async.resolve_threads_bind("0-1") == "0-1"
