"""gRPC vs HTTP on one server, in one run: what the gRPC wire saves.

    .venv/bin/python -m bench.grpc_vs_http --pairs 24 --principles 4

Starts `cai-judge serve` (the default model unless --model) with both wires on free
loopback ports, warms both up, then measures, each in two rounds with the order of the
two sides swapped (so neither always runs on a warmer or quieter machine), fresh pairs
for every side and round (so no side warms the prefix cache for the other):

1. one at a time: `--pairs` single pairs over one LabelStream on one connection (each pair
   its own message, sent as the channel takes them) vs the same number of sequential
   single-pair `POST /v1/labels` calls. The stream lets pairs batch while they flow;
   target >= 1.3x.
2. concurrency 8: `--pairs` single-pair unary `Label` calls, 8 at a time on one channel, vs
   single-pair `POST /v1/labels`, 8 at a time; target gRPC >= 0.95x HTTP.

Also the server's peak RSS. Writes bench/results/grpc_vs_http.json. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx

from bench.common import RESULTS, PeakRss, make_pairs, tree_rss
from cai_judge.grpc.gen.v1 import judge_pb2 as pb
from cai_judge.grpc.gen.v1 import judge_pb2_grpc
from cai_judge.testing.ports import free_port
from cai_judge.testing.service_process import ServiceProcess


def to_proto(raw: dict[str, Any]) -> pb.Pair:
    message = pb.Pair(id=raw["id"], response_a=raw["response_a"], response_b=raw["response_b"])
    if isinstance(raw["prompt"], str):
        message.text = raw["prompt"]
    else:
        message.chat.messages.extend(pb.ChatMessage(**m) for m in raw["prompt"])
    return message


class Sides:
    def __init__(self, url: str, target: str, principles: int) -> None:
        self.url = url
        self.target = target
        self.principles = principles
        self.options = pb.LabelOptions(constitution="harmless", principles=principles)

    def body(self, pair: dict[str, Any]) -> dict[str, Any]:
        return {"constitution": "harmless", "pairs": [pair], "principles": self.principles}

    async def http_sequential(self, pairs: list[dict[str, Any]]) -> float:
        async with httpx.AsyncClient(base_url=self.url, timeout=600) as http:
            started = time.perf_counter()
            for pair in pairs:
                (await http.post("/v1/labels", json=self.body(pair))).raise_for_status()
            return time.perf_counter() - started

    async def grpc_stream(self, pairs: list[dict[str, Any]]) -> float:
        async def requests() -> AsyncIterator[pb.LabelStreamRequest]:
            yield pb.LabelStreamRequest(options=self.options)
            for pair in pairs:
                yield pb.LabelStreamRequest(pair=to_proto(pair))

        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = judge_pb2_grpc.JudgeStub(channel)
            await channel.channel_ready()
            started = time.perf_counter()
            answers = [a async for a in stub.LabelStream(requests(), timeout=600)]
            elapsed = time.perf_counter() - started
        assert sorted(a.index for a in answers) == list(range(len(pairs)))
        assert all(a.result.WhichOneof("result") == "label" for a in answers)
        return elapsed

    async def http_concurrent(self, pairs: list[dict[str, Any]], concurrency: int) -> float:
        queue = list(pairs)
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=self.url, timeout=600, limits=limits) as http:

            async def worker() -> None:
                while queue:
                    pair = queue.pop()
                    (await http.post("/v1/labels", json=self.body(pair))).raise_for_status()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - started

    async def grpc_concurrent(self, pairs: list[dict[str, Any]], concurrency: int) -> float:
        queue = list(pairs)
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = judge_pb2_grpc.JudgeStub(channel)
            await channel.channel_ready()

            async def worker() -> None:
                while queue:
                    pair = queue.pop()
                    request = pb.LabelRequest(options=self.options, pairs=[to_proto(pair)])
                    answer = await stub.Label(request, timeout=600)
                    assert answer.results[0].WhichOneof("result") == "label"

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - started


def start(args: argparse.Namespace) -> tuple[ServiceProcess, str, str]:
    grpc_port = free_port()
    env = {"CAI_JUDGE_GRPC_PORT": str(grpc_port), "CAI_JUDGE_RATE_LIMIT": "1000000/minute"}
    if args.model:
        env["CAI_JUDGE_MODEL"] = args.model
    server = ServiceProcess(env=env).start(timeout_s=300)
    return server, server.url, f"127.0.0.1:{grpc_port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=24, help="pairs per side and round")
    parser.add_argument("--principles", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--parts", nargs="+", choices=["one-at-a-time", "concurrent"],
        default=["one-at-a-time", "concurrent"], help="which comparisons to run",
    )  # fmt: skip
    parser.add_argument("--model", help="default: the embedded default model")
    parser.add_argument("--out", type=Path, default=RESULTS / "grpc_vs_http.json")
    args = parser.parse_args()

    server, url, target = start(args)
    sides = Sides(url, target, args.principles)
    offset = iter(range(20_000, 10**9, 1000))
    times: dict[str, list[float]] = {k: [] for k in ("http_seq", "grpc_stream", "http_c", "grpc_c")}
    try:
        idle_rss = tree_rss(server.pid)
        asyncio.run(sides.http_concurrent(make_pairs(8, next(offset)), 8))
        asyncio.run(sides.grpc_concurrent(make_pairs(8, next(offset)), 8))
        asyncio.run(sides.grpc_stream(make_pairs(8, next(offset))))
        with PeakRss(server.pid) as memory:
            for round_ in range(args.rounds):
                one_at_a_time = [
                    ("http_seq", lambda p: sides.http_sequential(p)),
                    ("grpc_stream", lambda p: sides.grpc_stream(p)),
                ]
                concurrent = [
                    ("http_c", lambda p: sides.http_concurrent(p, args.concurrency)),
                    ("grpc_c", lambda p: sides.grpc_concurrent(p, args.concurrency)),
                ]
                parts = {"one-at-a-time": one_at_a_time, "concurrent": concurrent}
                for pair_of_sides in (parts[name] for name in args.parts):
                    order = pair_of_sides if round_ % 2 == 0 else pair_of_sides[::-1]
                    for key, run in order:
                        elapsed = asyncio.run(run(make_pairs(args.pairs, next(offset))))
                        times[key].append(elapsed)
                        rate = args.pairs / elapsed
                        print(f"round {round_} {key:>11}: {rate:.3f} pairs/s", flush=True)
    finally:
        server.stop(signal.SIGTERM, wait_s=120)

    def rate(key: str) -> float:
        return args.pairs * len(times[key]) / sum(times[key])

    results: dict[str, Any] = {}
    if "one-at-a-time" in args.parts:
        seq, stream = rate("http_seq"), rate("grpc_stream")
        results["one_at_a_time_http_sequential_pairs_per_s"] = round(seq, 3)
        results["one_at_a_time_grpc_stream_pairs_per_s"] = round(stream, 3)
        results["one_at_a_time_speedup_stream_over_http"] = round(stream / seq, 3)
    if "concurrent" in args.parts:
        c = args.concurrency
        results[f"c{c}_http_pairs_per_s"] = round(rate("http_c"), 3)
        results[f"c{c}_grpc_pairs_per_s"] = round(rate("grpc_c"), 3)
        results[f"c{c}_ratio_grpc_over_http"] = round(rate("grpc_c") / rate("http_c"), 3)
        # Each round's ratio: on a shared machine their spread shows how much is noise.
        per_round = [h / g for h, g in zip(times["http_c"], times["grpc_c"], strict=True)]
        results[f"c{c}_ratio_per_round"] = [round(r, 3) for r in per_round]
        # Robust to one round hit by a load spike, which the pooled ratio is not.
        results[f"c{c}_ratio_median_of_rounds"] = round(statistics.median(per_round), 3)
    results.update({
        "per_round_seconds": {k: [round(t, 2) for t in v] for k, v in times.items() if v},
        "idle_rss_gib": round(idle_rss / 2**30, 2),
        "loaded_peak_rss_gib": round(memory.peak / 2**30, 2),
        "pairs": args.pairs,
        "principles": args.principles,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "model": args.model or "default",
        "targets": {"one_at_a_time_speedup": 1.3, "concurrent_ratio": 0.95},
    })  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
