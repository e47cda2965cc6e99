"""Rewards for RL trainers (DESIGN.md §9): GRPO-shaped load on a live server.

`python -m bench.rewards` starts a server (the default model unless `--model`), builds
`--prompts` groups of `--group` completions from examples/pairs.jsonl, and measures with
K = `--principles`:

- round robin, `opponents: m` for every m with G·m even (mean and Bradley–Terry scoring), and
  reference mode: completions scored per second and uncached prompt tokens (the engine's
  prompt tokens minus its prefix-cache hits), and the Spearman correlation of each schedule's
  rewards with round robin's on the same groups;
- round robin's uncached tokens against the token-trie floor of its units (every distinct
  prefix once: the least any schedule could compute), target ≤ 1.15×;
- `/v1/rewards` against the SDK's `groupwise_reward` (pairs over `/v1/labels`), same groups;
- latency a trainer feels: p50 / p99 of one group a request at each `--concurrency`.

Every measurement uses prompts no other measurement used (a tag in the prompt), so neither the
label cache nor the prefix cache carries work from one to the next; the Spearman comparisons
reuse round robin's prompts instead (their units are cached: no timing is taken there).
Results go to bench/results/rewards.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np

from bench.common import RESULTS, make_groups, percentile
from cai_judge.testing.service_process import ServiceProcess


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's ρ: Pearson on average ranks (ties share their mean rank)."""

    def ranks(values: list[float]) -> np.ndarray:
        array = np.asarray(values)
        order = array.argsort(kind="stable")
        out = np.empty(len(array))
        out[order] = np.arange(len(array), dtype=float)
        for value in np.unique(array):
            tied = array == value
            out[tied] = out[tied].mean()
        return out

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _wire(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: g[k] for k in ("id", "prompt", "completions")} for g in groups]


def _items(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{g['id']}.{j}",
            "prompt": g["prompt"],
            "completion": c,
            "reference": g["reference"],
        }
        for g in groups
        for j, c in enumerate(g["completions"])
    ]


def call(url: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    answer = httpx.post(f"{url}/v1/rewards", json=body, timeout=3600)
    answer.raise_for_status()
    return answer.json(), time.perf_counter() - started


def uncached(usage: dict[str, Any]) -> int:
    return int(usage["prompt_tokens"]) - int(usage["cached_prompt_tokens"])


def flat(body: dict[str, Any]) -> list[float]:
    return [r for result in body["results"] for r in result["rewards"]]


async def groupwise_seconds(url: str, groups: list[dict[str, Any]], k: int) -> float:
    import cai_judge_client as sdk

    client = sdk.AsyncCaiJudge(base_url=url)
    reward = sdk.groupwise_reward(client, constitution="harmless", principles=k, timeout=3600)
    prompts = [g["prompt"] for g in groups for _ in g["completions"]]
    completions = [c for g in groups for c in g["completions"]]
    started = time.perf_counter()
    await reward(prompts, completions)
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


async def latencies(
    url: str, groups: list[dict[str, Any]], k: int, concurrency: int
) -> list[float]:
    queue = list(groups)
    seen: list[float] = []

    async def worker(http: httpx.AsyncClient) -> None:
        while queue:
            group = queue.pop()
            started = time.perf_counter()
            answer = await http.post(
                f"{url}/v1/rewards",
                json={"constitution": "harmless", "principles": k, "groups": _wire([group])},
            )
            answer.raise_for_status()
            seen.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=3600) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return seen


def trie_floor_of(groups: list[dict[str, Any]], k: int, model_dir: str) -> int:
    """The token-trie floor of round robin's units, planned exactly as the service plans
    them (the same Judge, renderer and principle selection), without an engine."""
    from transformers import AutoTokenizer

    from cai_judge.labeling.constitution import ConstitutionRegistry
    from cai_judge.labeling.judge import Judge
    from cai_judge.labeling.options import LabelOptions
    from cai_judge.labeling.reward_schema import RewardPair
    from cai_judge.labeling.rewards import round_robin, trie_floor

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    planner = SimpleNamespace(tokenizer=tokenizer, max_model_len=2048, model_name=model_dir)
    judge = Judge(planner, ConstitutionRegistry.with_builtins())  # type: ignore[arg-type]
    pairs = [
        RewardPair(id=f"{gi}:{a}-{b}", prompt=g["prompt"], response_a=g["completions"][a],
                   response_b=g["completions"][b])
        for gi, g in enumerate(groups)
        for a, b in round_robin(len(g["completions"]))
    ]  # fmt: skip
    try:
        plan = asyncio.run(judge.plan(pairs, "harmless", LabelOptions(principles=k)))
    finally:
        judge.close()
    return trie_floor([unit.prompt_token_ids for unit in plan.units])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--principles", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--latency-groups", type=int, default=32)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=str(RESULTS / "rewards.json"))
    parser.add_argument(
        "--parts", nargs="+", default=["schedules", "sdk", "latency"],
        choices=["round_robin", "schedules", "sdk", "latency"],
        help="what to measure (a shorter run); `round_robin`: round robin and its trie floor "
        "alone, `schedules`: that and every m and reference mode",
    )  # fmt: skip
    args = parser.parse_args()
    size, k = args.group, args.principles
    # A `timeout` around the run sends SIGTERM: stop the server and keep what was measured.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))

    from cai_judge.engine.default_model import prepare_default_model
    from cai_judge.settings import Settings

    model_dir = args.model or str(prepare_default_model(Settings().cache_dir))
    server = ServiceProcess(
        settings={"model": model_dir, "rate_limit": "1000000/minute",
                  "max_tokens_per_request": "100000000", "max_queued_units": "1000000"},
    )  # fmt: skip
    results: dict[str, Any] = {"prompts": args.prompts, "group": size, "principles": k}

    def save() -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as sink:
            json.dump(results, sink, indent=2)

    try:
        url = server.start(timeout_s=600).url
        call(url, {"constitution": "harmless", "principles": k,
                   "groups": _wire(make_groups(1, size, "warm-up"))})  # fmt: skip
        completions = args.prompts * size
        options = {"constitution": "harmless", "principles": k}

        def measure(name: str, body: dict[str, Any]) -> dict[str, Any]:
            answer, seconds = call(url, {**options, **body})
            row = {
                "completions_per_s": round(completions / seconds, 3),
                "seconds": round(seconds, 1),
                "uncached_tokens": uncached(answer["usage"]),
                "pairs": answer["usage"]["pairs"],
            }
            print(name, row, flush=True)
            results[name] = row
            save()
            return answer

        if {"round_robin", "schedules"} & set(args.parts):
            rr_groups = make_groups(args.prompts, size, "rr")
            rr = measure("round_robin", {"groups": _wire(rr_groups)})
            rr_rewards = flat(rr)
            floor = trie_floor_of(rr_groups, k, model_dir)
            results["round_robin"]["trie_floor_tokens"] = floor
            results["round_robin"]["uncached_over_floor"] = round(
                results["round_robin"]["uncached_tokens"] / floor, 3
            )
            print("trie floor", floor, results["round_robin"]["uncached_over_floor"], flush=True)
            rr_uncached = results["round_robin"]["uncached_tokens"]
        if "schedules" in args.parts:
            for m in range(1, size - 1):
                if size * m % 2:
                    continue
                name = f"opponents_{m}"
                measure(
                    name, {"groups": _wire(make_groups(args.prompts, size, name)), "opponents": m}
                )
                same, _ = call(url, {**options, "groups": _wire(rr_groups), "opponents": m})
                bt, _ = call(url, {**options, "groups": _wire(rr_groups), "opponents": m,
                                   "scoring": "bradley_terry"})  # fmt: skip
                results[name]["spearman_vs_round_robin"] = round(
                    spearman(flat(same), rr_rewards), 3
                )
                results[name]["spearman_bt_vs_round_robin"] = round(
                    spearman(flat(bt), rr_rewards), 3
                )
                results[name]["uncached_share_of_round_robin"] = round(
                    results[name]["uncached_tokens"] / rr_uncached, 3
                )
                print(name, results[name], flush=True)
            reference = measure(
                "reference", {"items": _items(make_groups(args.prompts, size, "ref"))}
            )
            same_ref, _ = call(url, {**options, "items": _items(rr_groups)})
            results["reference"]["spearman_vs_round_robin"] = round(
                spearman([r["reward"] for r in same_ref["results"]], rr_rewards), 3
            )
            del reference
        if "sdk" in args.parts:
            sdk_groups = make_groups(args.prompts, size, "sdk")
            sdk_seconds = asyncio.run(groupwise_seconds(url, sdk_groups, k))
            _, ours = call(
                url, {**options, "groups": _wire(make_groups(args.prompts, size, "ours"))}
            )
            results["v1_rewards_vs_sdk_groupwise"] = round(sdk_seconds / ours, 3)
            print("vs groupwise_reward", results["v1_rewards_vs_sdk_groupwise"], flush=True)
        for concurrency in args.concurrency if "latency" in args.parts else []:
            groups = make_groups(args.latency_groups, size, f"lat{concurrency}")
            seen = asyncio.run(latencies(url, groups, k, concurrency))
            results[f"latency_c{concurrency}"] = {
                "p50_s": round(statistics.median(seen), 2),
                "p99_s": round(percentile(seen, 0.99), 2),
            }
            print(f"latency c{concurrency}", results[f"latency_c{concurrency}"], flush=True)
    finally:
        server.stop(signal.SIGTERM, wait_s=120)
        save()


if __name__ == "__main__":
    main()
