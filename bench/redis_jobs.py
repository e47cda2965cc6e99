"""Redis benchmarks, side by side in one run (figures in bench/results/redis_jobs.json).

    .venv/bin/python -m bench.redis_jobs            # tiny random model: minutes on 2 cores
    .venv/bin/python -m bench.redis_jobs --model default

1. Label cache: the same 200 pairs labeled twice through /v1/labels; the second pass is
   served from Redis (target: >= 20x faster).
2. Upload: a 100,000-pair NDJSON job streamed to the service; its RSS growth (target:
   < 200 MiB). The job is cancelled right after: only the upload is measured.
3. A 2,000-pair job on one replica, then another 2,000 distinct pairs on two: each
   replica's share (its cai_judge_job_pairs_total), the total rate, and that exactly N
   results with unique ids in input order came back. On 2 cores two engines compete, so
   no speedup is expected.

Starts its own redis-server and services on free loopback ports; bounded in count.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS, PeakRss
from cai_judge.testing.ports import free_port
from cai_judge.testing.service_process import ServiceProcess

MIB = 2**20


def short_pair(i: int, tag: str) -> dict[str, str]:
    return {
        "id": f"{tag}{i}",
        "prompt": f"Q{tag}{i}?",
        "response_a": f"Yes {i}.",
        "response_b": f"No {i}.",
    }


def start_service(model: str, redis_url: str, log: Path, extra: dict[str, str]) -> ServiceProcess:
    """One `cai-judge serve` on Redis, ready; `extra` adds raw environment variables."""
    settings = {"model": model, "max_model_len": "1024", "redis_url": redis_url,
                "rate_limit": "1000000/minute", "cpu_kv_cache_gib": "1"}  # fmt: skip
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", **extra}
    return ServiceProcess(settings=settings, env=env, log=log).start(timeout_s=300)


def label_twice(service: ServiceProcess, pairs: int, principles: int) -> dict[str, Any]:
    body = [short_pair(i, "cache") for i in range(pairs)]
    passes = []
    with httpx.Client(base_url=service.url, timeout=600) as http:
        for _ in range(2):
            started = time.perf_counter()
            usage = {"score_units": 0, "cached_score_units": 0}
            for start in range(0, pairs, 50):
                response = http.post(
                    "/v1/labels",
                    json={"constitution": "harmless", "pairs": body[start : start + 50],
                          "principles": principles},
                )  # fmt: skip
                response.raise_for_status()
                for key in usage:
                    usage[key] += response.json()["usage"][key]
            passes.append({"seconds": time.perf_counter() - started, **usage})
            time.sleep(1)  # the cache writes land after the answers
    return {
        "pairs": pairs,
        "principles": principles,
        "first_pass_s": round(passes[0]["seconds"], 3),
        "second_pass_s": round(passes[1]["seconds"], 3),
        "speedup": round(passes[0]["seconds"] / passes[1]["seconds"], 1),
        "second_pass_cached_units": passes[1]["cached_score_units"],
        "second_pass_units": passes[1]["score_units"],
    }


def ndjson_lines(count: int) -> Iterator[bytes]:
    batch: list[bytes] = []
    for i in range(count):
        batch.append(json.dumps(short_pair(i, "upload")).encode() + b"\n")
        if len(batch) == 1000:
            yield b"".join(batch)
            batch = []
    if batch:
        yield b"".join(batch)


def upload(service: ServiceProcess, count: int) -> dict[str, Any]:
    before = service.rss(children=False)
    started = time.perf_counter()
    peak = {"rss": before}
    stop = threading.Event()

    def poll() -> None:  # the service process alone: the engine's do not see the upload
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], service.rss(children=False))
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    with PeakRss(service.process.pid, interval_s=0.1) as peak_tree:
        response = httpx.post(
            f"{service.url}/v1/jobs?constitution=harmless&principles=1",
            content=ndjson_lines(count),
            headers={"Content-Type": "application/x-ndjson"},
            timeout=600,
        )
    seconds = time.perf_counter() - started
    stop.set()
    poller.join()
    response.raise_for_status()
    job = response.json()
    httpx.delete(f"{service.url}/v1/jobs/{job['id']}", timeout=30)
    after = service.rss(children=False)
    return {
        "pairs": count,
        "accepted_total": job["total"],
        "seconds": round(seconds, 2),
        "service_rss_before_mib": round(before / MIB, 1),
        "service_rss_after_mib": round(after / MIB, 1),
        "service_rss_growth_mib": round((after - before) / MIB, 1),
        "service_rss_peak_growth_mib": round((peak["rss"] - before) / MIB, 1),
        # The whole tree includes the engine's processes, which the upload does not touch.
        "tree_peak_mib": round(peak_tree.peak / MIB, 1),
    }


def run_job(services: list[ServiceProcess], count: int, tag: str) -> dict[str, Any]:
    front = services[0]
    done_before = [s.metric("cai_judge_job_pairs_total") for s in services]
    pairs = [short_pair(i, tag) for i in range(count)]
    started = time.perf_counter()
    response = httpx.post(
        f"{front.url}/v1/jobs",
        json={"constitution": "harmless", "pairs": pairs, "principles": 1},
        timeout=120,
    )
    response.raise_for_status()
    job_id = response.json()["id"]
    deadline = time.monotonic() + 1800
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{front.url}/v1/jobs/{job_id}", timeout=10).json()
        if status["state"] == "succeeded":
            break
        time.sleep(0.5)
    seconds = time.perf_counter() - started
    shares = [
        s.metric("cai_judge_job_pairs_total") - b
        for s, b in zip(services, done_before, strict=True)
    ]
    results: list[dict[str, Any]] = []
    cursor = 0
    while cursor < count:
        page = httpx.get(
            f"{front.url}/v1/jobs/{job_id}/results?cursor={cursor}&limit=10000", timeout=60
        )
        lines = [json.loads(line) for line in page.text.splitlines()]
        if not lines:
            break
        results.extend(lines)
        cursor = int(page.headers["X-Next-Cursor"])
    ids = [r.get("id") for r in results]
    return {
        "replicas": len(services),
        "pairs": count,
        "state": status.get("state"),
        "seconds": round(seconds, 2),
        "pairs_per_s": round(count / seconds, 2),
        "per_replica_pairs": [int(s) for s in shares],
        "results": len(results),
        "unique_ids": len(set(ids)),
        "in_input_order": ids == [p["id"] for p in pairs],
        "done": status.get("done"),
        "failed": status.get("failed"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="`tiny` (built here), `default`, or a path")
    parser.add_argument("--cache-pairs", type=int, default=200)
    parser.add_argument("--upload-pairs", type=int, default=100_000)
    parser.add_argument("--job-pairs", type=int, default=2000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    model = args.model
    if model == "tiny":
        from cai_judge.testing.tiny_model import build_tiny_model

        model = str(build_tiny_model(work / "tiny"))
    redis_port = free_port()
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(work)],
        stdout=(work / "redis.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    services: list[ServiceProcess] = []
    report: dict[str, Any] = {"model": args.model, "machine": "shared 2-core CPU"}
    try:
        services.append(
            start_service(model, redis_url, work / "a.log", {"CAI_JUDGE_JOBS_CHUNK_PAIRS": "32"})
        )
        report["cache"] = label_twice(services[0], args.cache_pairs, principles=2)
        print(json.dumps(report["cache"]), flush=True)
        report["upload"] = upload(services[0], args.upload_pairs)
        print(json.dumps(report["upload"]), flush=True)
        report["job_one_replica"] = run_job(services, args.job_pairs, "one")
        print(json.dumps(report["job_one_replica"]), flush=True)
        services.append(
            start_service(model, redis_url, work / "b.log", {"CAI_JUDGE_JOBS_CHUNK_PAIRS": "32"})
        )
        report["job_two_replicas"] = run_job(services, args.job_pairs, "two")
        print(json.dumps(report["job_two_replicas"]), flush=True)
    finally:
        for service in services:
            service.stop()
        redis.terminate()
        redis.wait(timeout=10)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "redis_jobs.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
