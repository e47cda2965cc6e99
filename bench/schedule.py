"""Leader first, or every unit at once: the local engine's schedule (bench/NOTES.md §11).

    .venv/bin/python -m bench.schedule        # ~4 min on the 2-core CI machine

On the service's engine, the same 16 `mix` pairs at K=16 (the padded template) three ways,
3 reps, order rotated, prefix cache reset before each: `leader-first` (one unit of each
prefix, then the rest once it is done: the schedule the engine once used), `at-once` (every unit
together: the schedule now) and `naive-last` (bench/throughput.py's baseline). Writes
bench/results/schedule.json.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from bench.common import RESULTS
from bench.throughput import (
    _at_once,
    _usage,
    first_principles,
    mix_pairs,
    run_naive_last,
    sentence_pool,
)


async def _padded_units(judge: Any, pairs: Sequence[Any], spec: Any) -> list[Any]:
    from cai_judge.labeling.schema import LabelOptions

    plan = await judge.plan(list(pairs), spec, LabelOptions(principles="all"))
    return list(plan.units)


async def leader_first(judge: Any, pairs: Sequence[Any], spec: Any) -> tuple[float, int, int]:
    started = time.perf_counter()
    groups: dict[tuple[int, ...], list[Any]] = {}
    for unit in await _padded_units(judge, pairs, spec):
        groups.setdefault(unit.prefix_key, []).append(unit)

    async def group(units: list[Any]) -> list[Any]:
        first = await judge.engine.score(_at_once(units[:1]))
        return [*first, *await judge.engine.score(_at_once(units[1:]))]

    scores = [s for g in await asyncio.gather(*map(group, groups.values())) for s in g]
    return (time.perf_counter() - started, *_usage(scores))


async def at_once(judge: Any, pairs: Sequence[Any], spec: Any) -> tuple[float, int, int]:
    started = time.perf_counter()
    scores = await judge.engine.score(_at_once(await _padded_units(judge, pairs, spec)))
    return (time.perf_counter() - started, *_usage(scores))


async def naive_last(judge: Any, pairs: Sequence[Any], spec: Any) -> tuple[float, int, int]:
    run = await run_naive_last(judge, pairs, spec)
    return run.seconds, run.prompt_tokens, run.cached_tokens


async def main_async() -> dict[str, Any]:
    from cai_judge.engine.factory import start_engine
    from cai_judge.labeling.constitution import ConstitutionRegistry
    from cai_judge.labeling.judge import Judge
    from cai_judge.settings import Settings

    engine = await start_engine(Settings(), serving=True)
    judge = Judge(engine, ConstitutionRegistry.with_builtins())
    paths = {"leader-first": leader_first, "at-once": at_once, "naive-last": naive_last}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    try:
        pairs = mix_pairs(16, 101, sentence_pool())
        spec = first_principles(judge.registry.resolve("harmless"), 16)
        await at_once(judge, pairs[:2], spec)  # warm-up
        for rep in range(3):
            names = list(paths)
            for name in names[rep:] + names[:rep]:
                await engine.reset_prefix_cache()  # type: ignore[attr-defined]
                seconds, prompt, cached = await paths[name](judge, pairs, spec)
                runs[name].append({"seconds": round(seconds, 2), "uncached": prompt - cached})
                print(f"rep {rep} {name:>12}: {seconds:6.2f} s, {prompt - cached} uncached")
    finally:
        judge.close()
        await engine.shutdown()
    return {"pairs": 16, "k": 16, "workload": "mix", "reps": 3, "runs": runs}


def main() -> None:
    result = asyncio.run(main_async())
    out = RESULTS / "schedule.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
