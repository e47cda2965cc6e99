"""Throughput: cai-judge against the baselines a careful vLLM user would write, and a floor.

    .venv/bin/python -m bench.throughput --quick   # ~4.5 min on the 2-core CI machine
    .venv/bin/python -m bench.throughput           # 16 pairs, 3 reps, K 1/4/16: ~65 min there
                                                   # (estimated from the cells of a 16-pair run)

`--quick`: 8 pairs, K 4 and 16, 2 reps, the long workload on naive-first and cai-judge only,
naive-first timed on 2 principles and scaled. naive-first so timed is the same work at every
K (the same pairs, the same first 2 principles), so it runs once per workload and rep and
each K's cell scales it: with 3 reps and naive-first run per cell, 77 s of the quick
run's 415 s of timed paths (bench/results/throughput.json) were that repeat (NOTES.md §15).

One engine (the service's: AsyncLLM, its core in its own process), one run. Every path
judges the same pairs with the same principles (the first K of `harmless`, so no path
samples other principles than another); the prefix cache is reset before each path, and
the paths' order rotates from one repetition to the next, so neither pair lengths nor
warm caches nor drift favour a path.

- `naive-first`: each (principle, order) a full prompt, principle first and stated once,
  tokenized one by one and submitted at once (TRL's judges, AlpacaEval, FastChat). vLLM's
  prefix cache is on: across pairs it shares the preamble and principle.
- `naive-last`: cai-judge's own rendered prompts without the block padding (principle
  last, what a careful user of plain vLLM writes), submitted all at once.
- `two-phase`: `naive-last`, with one unit of each prefix sent first and the rest after
  all of them finish: the simplest schedule a user could write.
- `cai-judge`: `Judge.label`, the path of the CLI and the service (prefixes padded to whole
  KV blocks, every unit sent at once).
- `cai-judge-unpadded`: the same without the template's padding: the padding's own gain.

The floor is a lower bound, not a model: the tokens the work cannot avoid computing (each
order's unpadded prefix once, minus the template head every pair shares; each principle
tail once; no padding) divided by the engine's peak prefill rate, the fastest of several
saturating batches of long, unrelated prompts measured in the same run. A path faster
than the floor means the floor is wrong: the bench says so and exits 1.

Workloads: `mix`, one to three turns of conversation and responses from one line to
several paragraphs, drawn from the repository's example and gold texts; `long`, one-turn
prompts with ~400-token responses (the workload of the K=4 and K=16 targets).

Writes bench/results/throughput.json and plots bench/scaling.png.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, PeakRss
from bench.padding_effect import unpadded_spec

TEXT_SOURCES = (ROOT / "examples" / "pairs.jsonl", ROOT / "examples" / "gold" / "gold.jsonl")
PATHS = ("naive-first", "naive-last", "two-phase", "cai-judge", "cai-judge-unpadded")
# One colour per path in every panel, whichever paths a panel has.
PATH_COLORS = dict(
    zip(PATHS, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"), strict=True)
)
LONG_RESPONSE_TOKENS = 400
# Saturating batches of unrelated prompts, (prompts, length) each ~12-16k tokens, several
# steps' worth: the fastest is the peak rate. Short prompts run fastest per token (less
# attention), so the short batch keeps the floor a floor for the short units of `mix`.
SATURATION_BATCHES = ((96, 128), (32, 512), (16, 1024))
# Between cells only the fastest kind is measured again: a shared machine's speed drifts
# (25 % within one quick run here), so each cell's floor takes the rate measured right
# before and right after it.
FASTEST_BATCH = SATURATION_BATCHES[:1]


# -- workloads --------------------------------------------------------------------------


def sentence_pool() -> list[str]:
    """Real English sentences: every prompt and response of the examples and gold set."""
    sentences: list[str] = []
    for path in TEXT_SOURCES:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            texts = [row["response_a"], row["response_b"]]
            prompt = row["prompt"]
            texts += [m["content"] for m in prompt] if isinstance(prompt, list) else [prompt]
            for text in texts:
                sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    return sentences


def _sentences(rng: random.Random, pool: Sequence[str], count: int) -> str:
    return " ".join(rng.choice(pool) for _ in range(count))


def _paragraphs(rng: random.Random, pool: Sequence[str], paragraphs: int) -> str:
    return "\n\n".join(_sentences(rng, pool, rng.randint(3, 6)) for _ in range(paragraphs))


def _mix_response(rng: random.Random, pool: Sequence[str]) -> str:
    shape = rng.choice(("line", "paragraph", "paragraphs"))
    if shape == "line":
        return rng.choice(pool)
    if shape == "paragraph":
        return _sentences(rng, pool, rng.randint(3, 6))
    return _paragraphs(rng, pool, rng.randint(2, 4))


def mix_pairs(count: int, seed: int, pool: Sequence[str]) -> list[Any]:
    """One to three turns of conversation; responses from one line to paragraphs."""
    from cai_judge.labeling.schema import Pair

    rng = random.Random(seed)
    pairs = []
    for i in range(count):
        turns = rng.randint(1, 3)
        messages: list[dict[str, str]] = []
        for turn in range(turns):
            messages.append({"role": "user", "content": _sentences(rng, pool, rng.randint(1, 3))})
            if turn < turns - 1:
                messages.append({"role": "assistant", "content": _mix_response(rng, pool)})
        # A unique opening: no two pairs share a conversation, so no pair is served from
        # another pair's cache.
        messages[0]["content"] = f"[{seed}-{i}] {messages[0]['content']}"
        prompt: Any = messages[0]["content"] if turns == 1 else messages
        pairs.append(
            Pair(
                id=f"mix-{seed}-{i}",
                prompt=prompt,
                response_a=_mix_response(rng, pool),
                response_b=_mix_response(rng, pool),
            )
        )
    return pairs


def long_pairs(count: int, seed: int, pool: Sequence[str], tokenizer: Any) -> list[Any]:
    """One-turn prompts, each response ~LONG_RESPONSE_TOKENS tokens of paragraphs."""
    from cai_judge.labeling.schema import Pair

    rng = random.Random(seed)

    def response() -> str:
        text = ""
        while len(tokenizer.encode(text, add_special_tokens=False)) < LONG_RESPONSE_TOKENS:
            text = (text + "\n\n" if text else "") + _sentences(rng, pool, rng.randint(3, 6))
        return text

    return [
        Pair(
            id=f"long-{seed}-{i}",
            prompt=f"[{seed}-{i}] {_sentences(rng, pool, 2)}",
            response_a=response(),
            response_b=response(),
        )
        for i in range(count)
    ]


def first_principles(spec: Any, k: int) -> Any:
    """The constitution cut to its first k principles: every path judges the same ones."""
    return spec.model_copy(update={"principles": spec.principles[:k]})


# -- the paths ---------------------------------------------------------------------------


@dataclass
class PathRun:
    seconds: float
    prompt_tokens: int
    cached_tokens: int


def _usage(scores: Sequence[Any]) -> tuple[int, int]:
    return sum(s.prompt_tokens for s in scores), sum(s.cached_tokens for s in scores)


def naive_first_units(judge: Any, pairs: Sequence[Any], spec: Any) -> list[Any]:
    """Each (pair, principle, order) as its own prompt: the principle first, stated once."""
    from cai_judge.engine.base import ScoreUnit

    renderer = judge.renderer(spec.template)
    template = renderer.template
    answers = (renderer.answer_tokens.id_a, renderer.answer_tokens.id_b)
    units = []
    for pair in pairs:
        conversation = renderer.render_conversation(pair.conversation())
        for principle, (first, second) in itertools.product(
            spec.principles,
            ((pair.response_a, pair.response_b), (pair.response_b, pair.response_a)),
        ):
            body = (
                f"{template.preamble}\n{principle.question}\n\n{template.conversation_header}\n"
                f"{conversation}\n\n{template.options_header}\n(A)\n{renderer.quote(first)}\n"
                f"(B)\n{renderer.quote(second)}"
            )
            if renderer.use_chat_template:
                text = renderer.tokenizer.apply_chat_template(
                    [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
                )
                ids = renderer.tokenizer.encode(
                    text + template.answer_stem, add_special_tokens=False
                )
            else:
                ids = renderer.tokenizer.encode(f"{body}\n{template.answer_stem}")
            units.append(ScoreUnit(tuple(ids), answers, 0))
    return units


async def _unpadded_units(judge: Any, pairs: Sequence[Any], spec: Any) -> list[Any]:
    from cai_judge.labeling.schema import LabelOptions

    plan = await judge.plan(list(pairs), unpadded_spec(spec), LabelOptions(principles="all"))
    return list(plan.units)


def _at_once(units: Sequence[Any]) -> list[Any]:
    """The same prompts with no prefix declared: the engine sends them all together."""
    from cai_judge.engine.base import ScoreUnit

    return [ScoreUnit(u.prompt_token_ids, u.answer_token_ids, 0) for u in units]


async def run_naive_first(judge: Any, pairs: Sequence[Any], spec: Any) -> PathRun:
    started = time.perf_counter()
    # Tokenizing is part of every path's time, as it is of the product's.
    units = await asyncio.to_thread(naive_first_units, judge, pairs, spec)
    scores = await judge.engine.score(units)
    return PathRun(time.perf_counter() - started, *_usage(scores))


async def run_naive_last(judge: Any, pairs: Sequence[Any], spec: Any) -> PathRun:
    started = time.perf_counter()
    scores = await judge.engine.score(_at_once(await _unpadded_units(judge, pairs, spec)))
    return PathRun(time.perf_counter() - started, *_usage(scores))


async def run_two_phase(judge: Any, pairs: Sequence[Any], spec: Any) -> PathRun:
    started = time.perf_counter()
    units = await _unpadded_units(judge, pairs, spec)
    leaders: dict[tuple[int, ...], Any] = {}
    for unit in units:
        leaders.setdefault(unit.prefix_key, unit)
    leader_ids = {id(u) for u in leaders.values()}
    first = await judge.engine.score(_at_once(list(leaders.values())))
    rest = await judge.engine.score(_at_once([u for u in units if id(u) not in leader_ids]))
    return PathRun(time.perf_counter() - started, *_usage([*first, *rest]))


async def _run_label(judge: Any, pairs: Sequence[Any], spec: Any) -> PathRun:
    from cai_judge.labeling.schema import LabelOptions

    started = time.perf_counter()
    batch = await judge.label(list(pairs), spec, LabelOptions(principles="all"))
    if batch.errors:
        raise RuntimeError(f"cai-judge failed pairs: {batch.errors[:3]}")
    return PathRun(
        time.perf_counter() - started, batch.usage.prompt_tokens, batch.usage.cached_prompt_tokens
    )


async def run_cai_judge(judge: Any, pairs: Sequence[Any], spec: Any) -> PathRun:
    return await _run_label(judge, pairs, spec)


async def run_cai_judge_unpadded(judge: Any, pairs: Sequence[Any], spec: Any) -> PathRun:
    return await _run_label(judge, pairs, unpadded_spec(spec))


RUNNERS: dict[str, Callable[[Any, Sequence[Any], Any], Awaitable[PathRun]]] = {
    "naive-first": run_naive_first,
    "naive-last": run_naive_last,
    "two-phase": run_two_phase,
    "cai-judge": run_cai_judge,
    "cai-judge-unpadded": run_cai_judge_unpadded,
}


# -- the floor ---------------------------------------------------------------------------


def unique_tokens(sequences: Sequence[tuple[int, ...]]) -> int:
    """Tokens in the trie of `sequences`: what computing every distinct prefix once costs.

    Sorted, each sequence shares with its predecessor the longest prefix it shares with
    any sequence before it, so the trie grows by its length less that common prefix.
    """
    total, previous = 0, ()
    for sequence in sorted(set(sequences)):
        common = 0
        for a, b in zip(previous, sequence, strict=False):
            if a != b:
                break
            common += 1
        total += len(sequence) - common
        previous = sequence
    return total


async def floor_tokens(judge: Any, pairs: Sequence[Any], spec: Any) -> dict[str, int]:
    """Tokens no schedule can avoid computing: every distinct prefix of the unpadded
    prompts once (the template head once for all pairs, a pair's conversation once for
    both orders, each order's prefix once for its principles, each tail once)."""
    units = await _unpadded_units(judge, pairs, spec)
    prompts = [u.prompt_token_ids for u in units]
    return {"units": len(units), "prompt_tokens": sum(map(len, prompts)),
            "total": unique_tokens(prompts)}  # fmt: skip


async def peak_prefill_rate(
    judge: Any, pool: Sequence[str], seed: int, batches: Sequence[tuple[int, int]]
) -> dict[str, float]:
    """Uncached prompt tokens/s of saturating batches of unrelated prompts, by length."""
    from cai_judge.engine.base import ScoreUnit

    tokenizer = judge.engine.tokenizer
    rng = random.Random(seed)
    answers = (tokenizer.convert_tokens_to_ids("A"), tokenizer.convert_tokens_to_ids("B"))
    rates: dict[str, float] = {}
    for prompts, length in batches:
        units = []
        for i in range(prompts):
            ids = tokenizer.encode(f"[{seed}-{length}-{i}] ", add_special_tokens=False)
            while len(ids) < length:
                ids += tokenizer.encode(" " + _sentences(rng, pool, 8), add_special_tokens=False)
            units.append(ScoreUnit(tuple(ids[:length]), answers, 0))
        await judge.engine.reset_prefix_cache()
        started = time.perf_counter()
        scores = await judge.engine.score(units)
        elapsed = time.perf_counter() - started
        prompt, cached = _usage(scores)
        rates[str(length)] = (prompt - cached) / elapsed
    return rates


# -- cells -------------------------------------------------------------------------------


@dataclass
class PathResult:
    seconds: list[float]
    prompt_tokens: int
    cached_tokens: int
    # naive-first in --quick times only its first principles and scales by K / timed:
    # its units are independent prompts, so its time is linear in the principles.
    timed_principles: int
    scale: float = 1.0


@dataclass
class Cell:
    workload: str
    k: int
    pairs: int
    reps: int
    paths: dict[str, PathResult]
    floor: dict[str, int]
    peak_rss_gib: float
    # The fastest prefill rate measured right before and right after the cell.
    peak_prefill_tokens_per_s: float = 0.0
    # cai-judge's rendering and tokenizing alone (Judge.plan), part of its time above.
    plan_seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def summarize(cell: Cell) -> dict[str, Any]:
    """Per path: pairs/s; per baseline: the ratio to cai-judge in each rep (the same rep
    ran both back to back), its median and range; the floor and cai-judge's ratio to it."""
    cai = cell.paths["cai-judge"].seconds
    summary: dict[str, Any] = {
        "pairs_per_s": {
            name: _spread([cell.pairs / s for s in result.seconds])
            for name, result in cell.paths.items()
        },
        "speedup": {
            name: _spread([other / mine for other, mine in zip(result.seconds, cai, strict=True)])
            for name, result in cell.paths.items()
            if name != "cai-judge"
        },
    }
    floor_seconds = cell.floor["total"] / cell.peak_prefill_tokens_per_s
    summary["floor_seconds"] = round(floor_seconds, 2)
    summary["over_floor"] = {
        name: _spread([s / floor_seconds for s in result.seconds])
        for name, result in cell.paths.items()
        if result.scale == 1.0
    }
    return summary


async def run_cell(
    judge: Any,
    workload: str,
    pairs: Sequence[Any],
    spec: Any,
    k: int,
    reps: int,
    paths: Sequence[str],
    naive_first_principles: int | None,
    naive_first_runs: dict[int, list[PathRun]] | None = None,
) -> Cell:
    """One (workload, K) cell. `naive_first_runs` (timed principles -> one run per rep) is
    shared by the cells of one workload: naive-first timed on the same first principles of
    the same pairs is the same work at every K, so it runs once and each cell scales it."""
    spec_k = first_principles(spec, k)
    timed = min(k, naive_first_principles or k)
    shared = naive_first_runs if naive_first_runs is not None else {}
    results: dict[str, PathResult] = {}
    with PeakRss(os.getpid()) as memory:
        for rep in range(reps):
            # Rotate the order: whatever drifts during a rep falls on every path in turn.
            shift = rep % len(paths)
            for name in [*paths[shift:], *paths[:shift]]:
                path_spec = first_principles(spec, timed) if name == "naive-first" else spec_k
                scale = k / timed if name == "naive-first" else 1.0
                earlier = shared.get(timed, []) if name == "naive-first" else []
                if rep < len(earlier):
                    run = earlier[rep]
                else:
                    await judge.engine.reset_prefix_cache()
                    run = await RUNNERS[name](judge, pairs, path_spec)
                    if name == "naive-first":
                        shared.setdefault(timed, []).append(run)
                result = results.setdefault(
                    name,
                    PathResult(
                        [], run.prompt_tokens, run.cached_tokens, len(path_spec.principles), scale
                    ),
                )
                result.seconds.append(run.seconds * scale)
    from cai_judge.labeling.schema import LabelOptions

    started = time.perf_counter()
    await judge.plan(list(pairs), spec_k, LabelOptions(principles="all"))
    plan_seconds = time.perf_counter() - started
    return Cell(
        workload=workload,
        k=k,
        pairs=len(pairs),
        reps=reps,
        paths={name: results[name] for name in paths},
        floor=await floor_tokens(judge, pairs, spec_k),
        peak_rss_gib=round(memory.peak / 2**30, 2),
        plan_seconds=round(plan_seconds, 3),
    )


# -- report ------------------------------------------------------------------------------

TARGETS = (
    # (workload, K, baseline, at least): cai-judge's speedup over the baseline.
    ("long", 4, "naive-first", 3.0),
    ("long", 16, "naive-first", 6.0),
    ("mix", 16, "naive-last", 1.3),
    ("mix", 16, "two-phase", 1.15),
)
FLOOR_TARGET = 1.5  # cai-judge within 1.5x of the floor at K=16


def check_targets(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    checks = []
    for workload, k, baseline, target in TARGETS:
        for cell in cells:
            if (cell.workload, cell.k) == (workload, k) and baseline in cell.summary["speedup"]:
                value = cell.summary["speedup"][baseline]["median"]
                checks.append({
                    "what": f"cai-judge vs {baseline}, {workload}, K={k}",
                    "median": value, "target": target, "met": value >= target,
                })  # fmt: skip
    for cell in cells:
        if cell.k == 16:
            value = cell.summary["over_floor"]["cai-judge"]["median"]
            checks.append({
                "what": f"cai-judge time / floor, {cell.workload}, K=16",
                "median": value, "target": FLOOR_TARGET, "met": value <= FLOOR_TARGET,
            })  # fmt: skip
    return checks


def plot(cells: Sequence[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = sorted({c.workload for c in cells}, key=["mix", "long"].index)
    figure, axes = plt.subplots(1, len(workloads), figsize=(6.5 * len(workloads), 4.8))
    axes = axes if len(workloads) > 1 else [axes]
    for axis, workload in zip(axes, workloads, strict=True):
        chosen = sorted((c for c in cells if c.workload == workload), key=lambda c: c.k)
        ks = [c.k for c in chosen]
        for name in PATHS:
            rows = [c for c in chosen if name in c.paths]
            if not rows:
                continue
            per_pair = [[s / c.pairs for s in c.paths[name].seconds] for c in rows]
            medians = [statistics.median(v) for v in per_pair]
            low = [m - min(v) for m, v in zip(medians, per_pair, strict=True)]
            high = [max(v) - m for m, v in zip(medians, per_pair, strict=True)]
            axis.errorbar([c.k for c in rows], medians, yerr=[low, high], marker="o",
                          capsize=3, label=name, color=PATH_COLORS[name])  # fmt: skip
        axis.plot(ks, [c.summary["floor_seconds"] / c.pairs for c in chosen], "k:",
                  label="floor (unique tokens / peak prefill rate)")  # fmt: skip
        pairs, reps = chosen[0].pairs, chosen[0].reps
        axis.set_title(f"{workload}: {pairs} pairs per cell, {reps} reps (median, min-max)")
        axis.set_xlabel("principles per pair (K)")
        axis.set_ylabel("seconds per pair")
        axis.set_xscale("log", base=2)
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("Cost of judging one pair, both orders: one engine, one run")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def print_table(cells: Sequence[Cell]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("workload", "K", *PATHS, "cai / floor", "prefill peak", "peak RSS",
                  title="cai-judge pairs/s, and its speedup over each path (median of "
                  "reps, min-max)")  # fmt: skip
    for cell in cells:
        row = []
        for name in PATHS:
            if name not in cell.paths:
                row.append("-")
            elif name == "cai-judge":
                row.append(f"{cell.summary['pairs_per_s'][name]['median']:.3f} pairs/s")
            else:
                s = cell.summary["speedup"][name]
                row.append(f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})")
        floor = cell.summary["over_floor"]["cai-judge"]
        table.add_row(cell.workload, str(cell.k), *row, f"{floor['median']:.2f}x",
                      f"{cell.peak_prefill_tokens_per_s:.0f} tok/s",
                      f"{cell.peak_rss_gib:.2f} GiB")  # fmt: skip
    Console(width=200).print(table)


# -- main --------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from cai_judge.engine.factory import start_engine
    from cai_judge.labeling.constitution import ConstitutionRegistry
    from cai_judge.labeling.judge import Judge
    from cai_judge.settings import Settings

    overrides: dict[str, Any] = {}
    if args.model:
        overrides["model"] = args.model
    settings = Settings(**overrides)
    engine = await start_engine(settings, serving=True)
    judge = Judge(engine, ConstitutionRegistry.with_builtins())
    pool = sentence_pool()
    cells: list[Cell] = []
    rates: list[dict[str, float]] = []
    started = time.perf_counter()
    try:
        spec = judge.registry.resolve("harmless")
        workloads = {
            "mix": mix_pairs(args.pairs, 101, pool),
            "long": long_pairs(args.pairs, 202, pool, engine.tokenizer),
        }
        # Warm-up beyond the engine's own: every path once on two pairs.
        for name in PATHS:
            await RUNNERS[name](judge, workloads["mix"][:2], first_principles(spec, 2))
        # Every length once, to show what length does to the rate (not in --quick: the
        # shortest is the fastest, and it is measured around every cell anyway).
        start_batches = FASTEST_BATCH if args.quick else SATURATION_BATCHES
        rates.append(await peak_prefill_rate(judge, pool, 0, start_batches))
        naive_first_runs: dict[str, dict[int, list[PathRun]]] = {w: {} for w in args.workloads}
        for workload, k in itertools.product(args.workloads, args.k):
            paths = [p for p in PATHS if p in args.paths.get(workload, PATHS)]
            cell = await run_cell(
                judge, workload, workloads[workload], spec, k, args.reps, paths,
                args.naive_first_principles, naive_first_runs[workload],
            )  # fmt: skip
            cells.append(cell)
            rates.append(await peak_prefill_rate(judge, pool, len(rates), FASTEST_BATCH))
            cell.peak_prefill_tokens_per_s = round(max(*rates[-2].values(), *rates[-1].values()), 1)
            print(f"{workload} K={k}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    finally:
        judge.close()
        await engine.shutdown()
    for cell in cells:
        cell.summary = summarize(cell)
    print_table(cells)
    checks = check_targets(cells)
    below_floor = [
        f"{cell.workload} K={cell.k} {name}: {spread['min']:.2f}x the floor"
        for cell in cells
        for name, spread in cell.summary["over_floor"].items()
        if spread["min"] < 1.0
    ]
    return {
        "mode": args.mode,
        "command": " ".join(["python -m bench.throughput", *sys.argv[1:]]),
        "pairs": args.pairs,
        "reps": args.reps,
        "k": args.k,
        "engine": "AsyncLLM, engine core in a subprocess (the service's engine)",
        "naive_first_timed_principles": args.naive_first_principles,
        "duration_s": round(time.perf_counter() - started, 1),
        "prefill_rates_measured": [{k: round(v, 1) for k, v in r.items()} for r in rates],
        "targets": checks,
        "floor_violations": below_floor,
        "cells": [
            {**asdict(cell), "paths": {n: asdict(p) for n, p in cell.paths.items()}}
            for cell in cells
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="K 4/16, 8 pairs, 2 reps, naive-first on 2 principles"
    )
    parser.add_argument("--pairs", type=int, help="pairs per cell (default 16; quick 8)")
    parser.add_argument("--reps", type=int, help="repetitions per cell (default 3; quick 2)")
    parser.add_argument("--k", type=int, nargs="+", help="principles per pair (default 1 4 16)")
    parser.add_argument("--naive-first-principles", type=int,
                        help="time naive-first on this many principles and scale to K "
                        "(default: all; quick: 2)")  # fmt: skip
    parser.add_argument("--long-paths", nargs="+", choices=PATHS,
                        help="paths timed on the long workload (default: all; quick: "
                        "naive-first cai-judge)")  # fmt: skip
    parser.add_argument("--model", help="default: the embedded default model")
    parser.add_argument("--replot", action="store_true", help="redraw --plot from --out")
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "scaling.png")
    args = parser.parse_args()
    args.mode = "quick" if args.quick else "full"
    args.pairs = args.pairs or (8 if args.quick else 16)
    args.reps = args.reps or (2 if args.quick else 3)
    args.k = args.k or ([4, 16] if args.quick else [1, 4, 16])
    if args.quick and args.naive_first_principles is None:
        args.naive_first_principles = 2
    args.workloads = ["mix", "long"]
    # The long workload only carries the naive-first targets: in --quick it times the
    # two paths those need, to stay inside ten minutes.
    if args.long_paths:
        args.paths = {"long": tuple(args.long_paths)}
    else:
        args.paths = {"long": ("naive-first", "cai-judge")} if args.quick else {}

    if args.replot:
        result = json.loads(args.out.read_text())
    else:
        result = asyncio.run(main_async(args))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    cells = [
        Cell(**{**c, "paths": {n: PathResult(**p) for n, p in c["paths"].items()}})
        for c in result["cells"]
    ]
    plot(cells, args.plot)
    print(f"wrote {args.out} and {args.plot} ({result['duration_s']:.0f} s)")
    for check in result["targets"]:
        mark = "ok " if check["met"] else "MISS"
        print(f"  {mark} {check['what']}: {check['median']:.2f} (target {check['target']})")
    if result["floor_violations"]:
        print("FLOOR BUG: a path ran faster than the floor, which is then no lower bound:")
        for line in result["floor_violations"]:
            print(f"  {line}")
        sys.exit(1)


if __name__ == "__main__":
    main()
