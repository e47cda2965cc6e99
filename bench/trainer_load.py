"""GRPO steps from several trainer workers at once against a live judge (DESIGN.md §9,
"Rewards at training scale"; issue 28's benchmark).

`python -m bench.trainer_load` starts `cai-judge serve` (the default model unless `--model`)
with its default limits and runs, for each schedule in `--schedules` (m opponents, or `all`
for round robin), one GRPO step: `--prompts` prompts × `--group` completions, K =
`--principles`, split in order across `--workers` trainer workers that each call the SDK's
TRL adapter (`group_reward_func`) on their slice at the same time, as TRL's processes do. It
measures the step's seconds, score units per second against `/v1/labels` on the same units
(the step's pairs × K × 2 orders, from the same workers at once, on fresh prompts so neither
run feeds the other's cache; target ≥ 0.9×), p50 / p99 of the adapter's HTTP requests, and
fallbacks (target 0).

Then it restarts the server with `CAI_JUDGE_MAX_QUEUED_UNITS` at half the smallest schedule's
step and runs that step again (2× the queue's capacity): the server answers the overflow 503
with `Retry-After`, the adapters wait and retry within their deadline; target 0 silent
fallbacks, every completion judged (its reward equal to a direct `/v1/rewards` of its group)
or counted as a fallback. Results go to bench/results/trainer_load.json. `--quick` is a
smaller step (4 prompts, K = 2) that fits a few minutes on a 2-core CPU; `--labels-first`
measures `/v1/labels` before the step (the order matters on a busy CPU: bench/NOTES.md §16).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
from collections import Counter
from typing import Any

import httpx

from bench.common import RESULTS, make_groups, percentile, serve

STATS = (
    "completions",
    "judged",
    "fallbacks",
    "errors",
    "timeouts",
    "requests",
    "splits",
    "retries",
)


def matches(size: int, opponents: int | str) -> list[tuple[int, int]]:
    from cai_judge.labeling.rewards import schedule

    return schedule(size, opponents, 0)  # type: ignore[arg-type]


def step_units(prompts: int, size: int, opponents: int | str, k: int) -> int:
    return prompts * len(matches(size, opponents)) * k * 2


class Requests:
    """Times every HTTP request an adapter sends (request hook to response headers) and
    counts the statuses it got back."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.seconds: list[float] = []
        self.statuses: Counter[int] = Counter()

    async def on_request(self, request: httpx.Request) -> None:
        self.started[id(request)] = time.perf_counter()

    async def on_response(self, response: httpx.Response) -> None:
        began = self.started.pop(id(response.request), None)
        # Only the rewards calls: the adapter's one `GET /v1/limits` is not a judgement.
        if began is not None and response.request.url.path == "/v1/rewards":
            self.seconds.append(time.perf_counter() - began)
        self.statuses[response.status_code] += 1


async def trl_step(
    url: str, groups: list[dict[str, Any]], *, workers: int, k: int, opponents: int | str
) -> dict[str, Any]:
    """One step: each worker's `group_reward_func` on its in-order slice of the groups."""
    import cai_judge_client as sdk
    from cai_judge_client.integrations.trl import group_reward_func

    size = len(groups[0]["completions"])
    requests = Requests()
    hooks = {"request": [requests.on_request], "response": [requests.on_response]}
    per = -(-len(groups) // workers)
    slices = [groups[i : i + per] for i in range(0, len(groups), per)]
    funcs = []
    clients = []
    for _ in slices:
        http = httpx.AsyncClient(timeout=3600, event_hooks=hooks)  # type: ignore[arg-type]
        clients.append(http)
        judge = sdk.AsyncCaiJudge(base_url=url, http_client=http)
        funcs.append(
            group_reward_func(
                judge, num_generations=size, constitution="harmless", principles=k,
                opponents=opponents,  # type: ignore[arg-type]
            )
        )  # fmt: skip

    async def worker(func: Any, part: list[dict[str, Any]]) -> list[float]:
        prompts = [g["prompt"] for g in part for _ in g["completions"]]
        completions = [c for g in part for c in g["completions"]]
        rewards: list[float] = await func(prompts=prompts, completions=completions)
        return rewards

    started = time.perf_counter()
    answers = await asyncio.gather(*(worker(f, s) for f, s in zip(funcs, slices, strict=True)))
    seconds = time.perf_counter() - started
    for http in clients:
        await http.aclose()
    stats = [f.stats.as_dict() for f in funcs]  # type: ignore[attr-defined]
    totals = {key: sum(s[key] for s in stats) for key in STATS}
    return {
        "seconds": seconds,
        "rewards": [r for answer in answers for r in answer],
        "stats": totals,
        "request_seconds": requests.seconds,
        "statuses": dict(requests.statuses),
    }


async def labels_step(
    url: str, groups: list[dict[str, Any]], *, workers: int, k: int, opponents: int | str
) -> float:
    """The same units as `trl_step` over `/v1/labels`: each worker posts its slice's
    schedule pairs, split at the server's pair limit; the seconds for all of them."""
    size = len(groups[0]["completions"])
    per = -(-len(groups) // workers)
    slices = [groups[i : i + per] for i in range(0, len(groups), per)]

    async def worker(http: httpx.AsyncClient, part: list[dict[str, Any]]) -> None:
        pairs = [
            {"id": f"{g['id']}:{a}-{b}", "prompt": g["prompt"],
             "response_a": g["completions"][a], "response_b": g["completions"][b]}
            for g in part
            for a, b in matches(size, opponents)
        ]  # fmt: skip
        for start in range(0, len(pairs), 256):
            answer = await http.post(
                f"{url}/v1/labels",
                json={"constitution": "harmless", "principles": k,
                      "pairs": pairs[start : start + 256]},
            )  # fmt: skip
            answer.raise_for_status()

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=3600) as http:
        await asyncio.gather(*(worker(http, s) for s in slices))
    return time.perf_counter() - started


def direct_rewards(
    url: str, groups: list[dict[str, Any]], k: int, opponents: int | str
) -> list[float]:
    """Each group's rewards from `/v1/rewards`, one group a request (its labels are cached
    by then, so this is the check, not a measurement)."""
    out: list[float] = []
    for g in groups:
        answer = httpx.post(
            f"{url}/v1/rewards",
            json={"constitution": "harmless", "principles": k, "opponents": opponents,
                  "groups": [{"id": g["id"], "prompt": g["prompt"],
                              "completions": g["completions"]}]},
            timeout=3600,
        )  # fmt: skip
        answer.raise_for_status()
        out.extend(answer.json()["results"][0]["rewards"])
    return out


def summarize(
    step: dict[str, Any], units: int, expected: list[float] | None = None
) -> dict[str, Any]:
    latency = step["request_seconds"]
    row: dict[str, Any] = {
        "step_seconds": round(step["seconds"], 1),
        "score_units": units,
        "units_per_s": round(units / step["seconds"], 2),
        "request_p50_s": round(statistics.median(latency), 2) if latency else None,
        "request_p99_s": round(percentile(latency, 0.99), 2) if latency else None,
        "statuses": step["statuses"],
        **step["stats"],
    }
    if expected is not None:
        # A completion whose reward is its group's direct reward was judged; any other must
        # be counted as a fallback, or it is a silent one.
        judged_equal = sum(
            abs(a - b) < 1e-9 for a, b in zip(step["rewards"], expected, strict=True)
        )
        row["rewards_equal_to_direct"] = judged_equal
        row["silent_fallbacks"] = max(0, len(expected) - judged_equal - step["stats"]["fallbacks"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 prompts, K = 2")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--principles", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--schedules", nargs="+", default=["2", "all"])
    parser.add_argument("--labels-first", action="store_true", help="/v1/labels before the step")
    parser.add_argument("--skip-capacity", action="store_true", help="no step at twice the queue")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=None, help="default results/trainer_load[_quick].json")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.principles = 4, 2
    if args.out is None:
        args.out = str(RESULTS / ("trainer_load_quick.json" if args.quick else "trainer_load.json"))
    size, k, workers = args.group, args.principles, args.workers
    schedules: list[int | str] = [s if s == "all" else int(s) for s in args.schedules]
    # A `timeout` around the run sends SIGTERM: stop the server and keep what was measured.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))

    from cai_judge.engine.default_model import prepare_default_model
    from cai_judge.settings import Settings

    model_dir = args.model or str(prepare_default_model(Settings().cache_dir))
    results: dict[str, Any] = {
        "prompts": args.prompts, "group": size, "principles": k, "workers": workers,
        "adapter": "cai_judge_client.integrations.trl.group_reward_func",
        "settings": "defaults (but the port and the model)",
    }  # fmt: skip

    def save() -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as sink:
            json.dump(results, sink, indent=2)

    def within_capacity(url: str, opponents: int | str) -> None:
        name = f"opponents_{opponents}" if opponents != "all" else "round_robin"
        units = step_units(args.prompts, size, opponents, k)
        groups = make_groups(args.prompts, size, f"trl-{name}")
        labels_groups = make_groups(args.prompts, size, f"labels-{name}")

        def labels() -> float:
            return asyncio.run(
                labels_step(url, labels_groups, workers=workers, k=k, opponents=opponents)
            )

        # `--labels-first` swaps the order, to tell an order effect from the paths' own cost.
        labels_seconds = labels() if args.labels_first else 0.0
        step = asyncio.run(trl_step(url, groups, workers=workers, k=k, opponents=opponents))
        row = summarize(step, units)
        labels_seconds = labels_seconds or labels()
        row["labels_first"] = args.labels_first
        row["labels_seconds"] = round(labels_seconds, 1)
        row["labels_units_per_s"] = round(units / labels_seconds, 2)
        row["units_per_s_over_labels"] = round(labels_seconds / step["seconds"], 3)
        results[name] = row
        print(name, row, flush=True)
        save()

    def warm(url: str) -> None:
        """One group first: the engine's first batches are slower than the rest."""
        asyncio.run(trl_step(url, make_groups(1, size, "warm-up"), workers=1, k=k, opponents=2))

    def twice_capacity(opponents: int | str) -> None:
        units = step_units(args.prompts, size, opponents, k)
        capacity = units // 2
        with serve(model_dir, max_queued_units=str(capacity)) as url:
            groups = make_groups(args.prompts, size, "over-capacity")
            step = asyncio.run(trl_step(url, groups, workers=workers, k=k, opponents=opponents))
            row = summarize(step, units, direct_rewards(url, groups, k, opponents))
            row["opponents"] = opponents
            row["max_queued_units"] = capacity
            results["twice_capacity"] = row
            print("twice_capacity", row, flush=True)
            save()

    # The smallest schedule first, then the step at twice the queue on it, then the rest:
    # a run cut by its timeout keeps the over-capacity figures.
    ordered = sorted(schedules, key=lambda s: step_units(args.prompts, size, s, k))
    try:
        with serve(model_dir) as url:
            warm(url)
            within_capacity(url, ordered[0])
        if not args.skip_capacity:
            twice_capacity(ordered[0])
        if ordered[1:]:
            with serve(model_dir) as url:
                warm(url)
                for opponents in ordered[1:]:
                    within_capacity(url, opponents)
    finally:
        save()


if __name__ == "__main__":
    main()
