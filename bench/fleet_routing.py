"""Prefix-affinity routing vs round-robin over two real vLLM servers, in one run.

    .venv/bin/python -m bench.fleet_routing --pairs 24 --principles 4 --repeats 2

1. Starts two `vllm serve` processes (the default model unless --model) on loopback, each
   worker bound to its own core, with prefix caching on (vLLM's default).
2. Labels the same pairs through the remote engine twice: with prefix-affinity routing
   (each prefix group on one server, leader first) and with round-robin (each unit to
   the next server, as a plain Kubernetes Service would spread requests). Each server's
   prefix cache is reset before each mode (vLLM's dev-mode /reset_prefix_cache), so
   neither mode warms the other. The hit rate is read from the servers' own counters:
   Δ vllm:prefix_cache_hits_total / Δ vllm:prefix_cache_queries_total, over both.
3. Stops them and labels the same pairs with the in-process engine on both cores, from a
   cold prefix cache as well: its hit rate (cached / prompt tokens of its own requests) is
   the bar affinity must reach.

Writes bench/results/fleet_routing.json. Talks to 127.0.0.1 only; bounded in count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS, make_pairs
from cai_judge.engine.vllm_async import VllmEngine, VllmEngineConfig
from cai_judge.engine.vllm_remote import RemoteEngineConfig, RemoteVllmEngine, Routing
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.schema import LabelOptions, Pair
from cai_judge.settings import Settings
from cai_judge.testing.vllm_server import VllmServer, launch, wait_ready

MAX_MODEL_LEN = 2048


def cache_counters(servers: list[VllmServer]) -> dict[str, float]:
    return {
        "hits": sum(s.metric("vllm:prefix_cache_hits_total") for s in servers),
        "queries": sum(s.metric("vllm:prefix_cache_queries_total") for s in servers),
    }


async def label(engine: Any, pairs: list[Pair], k: int) -> tuple[float, Any]:
    judge = Judge(engine, ConstitutionRegistry.with_builtins())
    try:
        started = time.perf_counter()
        batch = await judge.label(pairs, "harmless", LabelOptions(principles=k))
        elapsed = time.perf_counter() - started
    finally:
        judge.close()
    assert not batch.errors, batch.errors
    return elapsed, batch


async def fleet_mode(
    routing: Routing, servers: list[VllmServer], model: str, pairs: list[Pair], k: int
) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        for server in servers:
            (await http.post(f"{server.url}/reset_prefix_cache")).raise_for_status()
    engine = await RemoteVllmEngine.start(
        RemoteEngineConfig(
            urls=tuple(s.url for s in servers),
            model=model,
            max_model_len=MAX_MODEL_LEN,
            routing=routing,
        )
    )
    try:
        before = cache_counters(servers)
        elapsed, batch = await label(engine, pairs, k)
        after = cache_counters(servers)
        per_server = dict(engine.units_by_server)
    finally:
        await engine.shutdown()
    hits, queries = after["hits"] - before["hits"], after["queries"] - before["queries"]
    return {
        "routing": routing,
        "pairs_per_s": round(len(pairs) / elapsed, 3),
        "seconds": round(elapsed, 2),
        "prefix_cache_hit_rate": round(hits / queries, 4),
        "vllm_prefix_cache_hits": hits,
        "vllm_prefix_cache_queries": queries,
        "units_by_server": per_server,
        "score_units": batch.usage.score_units,
        "reported_cached_tokens": batch.usage.cached_prompt_tokens,
    }


async def in_process(model: str, pairs: list[Pair], k: int) -> dict[str, Any]:
    engine = await VllmEngine.start(
        VllmEngineConfig(model=model, max_model_len=MAX_MODEL_LEN, cpu_kv_cache_gib=1)
    )
    try:
        await label(engine, make_pairs_as_models(1, offset=10_000), k)  # warm-up
        # The same cold prefix cache each fleet mode starts from (/reset_prefix_cache):
        # the warm-up pair must not hand the template's shared blocks to this side alone.
        await engine._llm.reset_prefix_cache()
        elapsed, batch = await label(engine, pairs, k)
    finally:
        await engine.shutdown()
    usage = batch.usage
    return {
        "pairs_per_s": round(len(pairs) / elapsed, 3),
        "seconds": round(elapsed, 2),
        "prefix_cache_hit_rate": round(usage.cached_prompt_tokens / usage.prompt_tokens, 4),
        "cached_tokens": usage.cached_prompt_tokens,
        "prompt_tokens": usage.prompt_tokens,
    }


def make_pairs_as_models(count: int, offset: int = 0) -> list[Pair]:
    return [Pair.model_validate(p) for p in make_pairs(count, offset)]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from cai_judge.engine.factory import resolve_model_path

    model = resolve_model_path(Settings(model=args.model))
    pairs = make_pairs_as_models(args.pairs)
    logs = Path(tempfile.mkdtemp(prefix="fleet-routing-"))
    print(f"vLLM server logs: {logs}")
    servers = [
        launch(
            Path(model), logs / f"vllm-{i}.log", core=i, max_model_len=MAX_MODEL_LEN,
            env={"VLLM_SERVER_DEV_MODE": "1"},  # for /reset_prefix_cache
        )
        for i in range(2)
    ]  # fmt: skip
    try:
        wait_ready(servers)
        # Warm both servers (first-request costs), on pairs the measurement never sees.
        warm = await RemoteVllmEngine.start(
            RemoteEngineConfig(urls=tuple(s.url for s in servers), model=model,
                               max_model_len=MAX_MODEL_LEN, routing="round_robin")
        )  # fmt: skip
        try:
            await label(warm, make_pairs_as_models(2, offset=20_000), args.principles)
        finally:
            await warm.shutdown()
        # ABBA...: each mode runs `repeats` times, interleaved, so a load swing on the
        # shared machine does not fall on one mode alone.
        order: list[Routing] = []
        for repeat in range(args.repeats):
            pair_of_modes: list[Routing] = ["prefix", "round_robin"]
            order += pair_of_modes if repeat % 2 == 0 else pair_of_modes[::-1]
        runs = [await fleet_mode(r, servers, model, pairs, args.principles) for r in order]
    finally:
        for server in servers:
            server.stop()
    local = await in_process(model, pairs, args.principles)

    def summary(routing: Routing) -> dict[str, Any]:
        mine = [r for r in runs if r["routing"] == routing]
        return {
            "pairs_per_s_mean": round(sum(r["pairs_per_s"] for r in mine) / len(mine), 3),
            "prefix_cache_hit_rate": min(r["prefix_cache_hit_rate"] for r in mine),
            "runs": mine,
        }

    affinity, round_robin = summary("prefix"), summary("round_robin")
    return {
        "model": args.model,
        "pairs": args.pairs,
        "principles": args.principles,
        "servers": 2,
        "prefix_affinity": affinity,
        "round_robin": round_robin,
        "in_process": local,
        "affinity_vs_round_robin_pairs_per_s": round(
            affinity["pairs_per_s_mean"] / round_robin["pairs_per_s_mean"], 3
        ),
        "affinity_hits_at_least_in_process": affinity["prefix_cache_hit_rate"]
        >= local["prefix_cache_hit_rate"],
        "note": "Shared 2-core machine: ratios measured side by side are meaningful, "
        "absolute rates are not. Each server's worker is bound to one core; the in-process "
        "engine uses both.",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--principles", type=int, default=4)
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=2, help="Runs of each fleet mode.")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fleet_routing.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
