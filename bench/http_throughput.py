"""HTTP service throughput vs the engine directly, in one run on the same machine.

    .venv/bin/python -m bench.http_throughput --pairs 32 --principles 4

1. Starts `cai-judge serve` (the default model unless --model) on a free loopback port and
   measures pairs/s at concurrency 1, 8 and 64 (single-pair requests, a fresh set of
   pairs per level so no level warms the prefix cache for the next), then the latency of
   single-pair requests at idle (p50/p99), and the server's peak RSS.
2. Stops it, starts the same engine in-process with the same settings, and labels a
   fresh set of the same size through the Judge in one call: the engine-direct rate.

Writes bench/results/http_throughput.json. Talks to 127.0.0.1 only; bounded in count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS, PeakRss, make_pairs, percentile, tree_rss
from cai_judge.testing.service_process import ServiceProcess


async def http_rate(url: str, pairs: list[dict[str, Any]], concurrency: int, k: int) -> float:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for pair in pairs:
        queue.put_nowait(pair)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            pair = queue.get_nowait()
            body = {"constitution": "harmless", "pairs": [pair], "principles": k}
            response = await http.post("/v1/labels", json=body)
            response.raise_for_status()

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        return len(pairs) / (time.perf_counter() - started)


async def idle_latencies(url: str, pairs: list[dict[str, Any]], k: int) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        for pair in pairs:
            started = time.perf_counter()
            body = {"constitution": "harmless", "pairs": [pair], "principles": k}
            (await http.post("/v1/labels", json=body)).raise_for_status()
            latencies.append(time.perf_counter() - started)
    return latencies


def measure_http(args: argparse.Namespace) -> dict[str, Any]:
    env = {"CAI_JUDGE_RATE_LIMIT": "1000000/minute"}
    if args.model:
        env["CAI_JUDGE_MODEL"] = args.model
    server = ServiceProcess(env=env).start(timeout_s=300)
    url = server.url
    try:
        idle_rss = tree_rss(server.pid)
        warmup = make_pairs(8, offset=7000)
        asyncio.run(http_rate(url, warmup, 8, args.principles))
        results: dict[str, Any] = {"idle_rss_gib": round(idle_rss / 2**30, 2)}
        with PeakRss(server.pid) as memory:
            for level, concurrency in enumerate(args.concurrency, start=1):
                pairs = make_pairs(args.pairs, offset=level * 1000)
                rate = asyncio.run(http_rate(url, pairs, concurrency, args.principles))
                results[f"http_c{concurrency}_pairs_per_s"] = round(rate, 3)
                print(f"HTTP concurrency {concurrency:>3}: {rate:.3f} pairs/s", flush=True)
            latencies = asyncio.run(
                idle_latencies(url, make_pairs(args.latency_samples, 9000), args.principles)
            )
        results["idle_single_pair_latency_p50_s"] = round(statistics.median(latencies), 3)
        results["idle_single_pair_latency_p99_s"] = round(percentile(latencies, 0.99), 3)
        results["loaded_peak_rss_gib"] = round(memory.peak / 2**30, 2)
        return results
    finally:
        server.stop(signal.SIGTERM, wait_s=120)


async def measure_engine(args: argparse.Namespace) -> float:
    from cai_judge.engine.factory import start_engine
    from cai_judge.labeling.constitution import ConstitutionRegistry
    from cai_judge.labeling.judge import Judge
    from cai_judge.labeling.schema import LabelOptions, Pair
    from cai_judge.settings import Settings

    settings = Settings(**({"model": args.model} if args.model else {}))
    engine = await start_engine(settings, serving=True)
    try:
        judge = Judge(engine, ConstitutionRegistry.with_builtins())
        # Warm up as the server was before its timed levels: the first batches of a fresh
        # engine pay one-time costs that would otherwise count against the direct path.
        warmup = [Pair.model_validate(p) for p in make_pairs(8, offset=7000)]
        await judge.label(warmup, "harmless", LabelOptions(principles=args.principles))
        pairs = [Pair.model_validate(p) for p in make_pairs(args.pairs, offset=5000)]
        started = time.perf_counter()
        await judge.label(pairs, "harmless", LabelOptions(principles=args.principles))
        return len(pairs) / (time.perf_counter() - started)
    finally:
        await engine.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32, help="pairs per measurement")
    parser.add_argument("--principles", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument("--model", help="default: the embedded default model")
    parser.add_argument("--out", type=Path, default=RESULTS / "http_throughput.json")
    args = parser.parse_args()

    results = measure_http(args)
    engine_rate = asyncio.run(measure_engine(args))
    print(f"engine directly:      {engine_rate:.3f} pairs/s", flush=True)
    results["engine_pairs_per_s"] = round(engine_rate, 3)
    for concurrency in args.concurrency:
        key = f"http_c{concurrency}_pairs_per_s"
        results[f"ratio_c{concurrency}_http_over_engine"] = round(results[key] / engine_rate, 3)
    results.update(pairs=args.pairs, principles=args.principles, model=args.model or "default")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
