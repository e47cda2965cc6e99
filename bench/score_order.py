"""Followers first vs vLLM's FIFO, on one request larger than the KV cache (bench/NOTES.md §14).

`python -m bench.score_order` starts `cai-judge serve` once per order and round (ABBA: a
fresh server each time, so no cache carries over; both orders of a round get the same
prompts, each round new ones), and sends one round-robin `/v1/rewards` request of `--prompts` groups
of `--group` completions at K = `--principles`, with the KV cache at `--kv-cache-gib` (the
request's token-trie floor should be well over the cache, or there is nothing to see).
Reports, per order: seconds, completions per second, uncached prompt tokens against the
token-trie floor of the same units, and the server's peak RSS; then the ratios, followers
first over FIFO, per round and their median, and the largest difference between the two
orders' rewards (the same units computed in another order). Writes bench/results/score_order.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench.common import RESULTS, PeakRss, make_groups
from bench.rewards import _wire, call, trie_floor_of, uncached
from cai_judge.testing.service_process import ServiceProcess

ORDERS = ("fifo", "followers_first")


def measure(
    order: str, tag: str, args: argparse.Namespace, model_dir: str, log: Path
) -> dict[str, Any]:
    groups = make_groups(args.prompts, args.group, tag)
    settings = {
        "model": model_dir,
        "score_order": order,
        "cpu_kv_cache_gib": str(args.kv_cache_gib),
        "rate_limit": "1000000/minute",
        "max_tokens_per_request": "100000000",
        "max_queued_units": "1000000",
    }
    with ServiceProcess(settings=settings, log=log) as server, PeakRss(server.pid) as memory:
        answer, seconds = call(
            server.url, {"constitution": "harmless", "principles": args.principles,
                         "groups": _wire(groups)},
        )  # fmt: skip
    floor = trie_floor_of(groups, args.principles, model_dir)
    row = {
        "order": order,
        "seconds": round(seconds, 1),
        "completions_per_s": round(args.prompts * args.group / seconds, 3),
        "uncached_tokens": uncached(answer["usage"]),
        "trie_floor_tokens": floor,
        "uncached_over_floor": round(uncached(answer["usage"]) / floor, 3),
        "peak_rss_gib": round(memory.peak / 2**30, 2),
        "rewards": [r for result in answer["results"] for r in result["rewards"]],
    }
    print({k: v for k, v in row.items() if k != "rewards"}, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--principles", type=int, default=4)
    parser.add_argument("--kv-cache-gib", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2, help="ABBA: A B, then B A, ...")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()

    from cai_judge.engine.default_model import prepare_default_model
    from cai_judge.settings import Settings

    model_dir = args.model or str(prepare_default_model(Settings().cache_dir))
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    ratios: list[dict[str, float]] = []
    for round_ in range(args.rounds):
        orders = ORDERS if round_ % 2 == 0 else ORDERS[::-1]
        by_order = {
            order: measure(order, f"order-{round_}", args, model_dir,
                           RESULTS / f"score_order-{round_}-{order}.log")
            for order in orders
        }  # fmt: skip
        runs.extend(by_order.values())
        fifo, first = by_order["fifo"], by_order["followers_first"]
        ratios.append({
            "speed": round(fifo["seconds"] / first["seconds"], 3),
            "uncached": round(first["uncached_tokens"] / fifo["uncached_tokens"], 3),
        })  # fmt: skip
        print("round", round_, ratios[-1], flush=True)
    summary = {
        "settings": {k: v for k, v in vars(args).items() if k != "model"},
        "runs": [{k: v for k, v in run.items() if k != "rewards"} for run in runs],
        "ratios_followers_first_over_fifo": ratios,
        "median_speedup": statistics.median(r["speed"] for r in ratios),
        "median_uncached_share": statistics.median(r["uncached"] for r in ratios),
        # Same units, another order of computing them: the rewards must not move.
        "largest_reward_difference": max(
            abs(a - b)
            for one, other in zip(runs[0::2], runs[1::2], strict=True)
            for a, b in zip(one["rewards"], other["rewards"], strict=True)
        ),
    }
    with open(RESULTS / "score_order.json", "w", encoding="utf-8") as sink:
        json.dump(summary, sink, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
