"""How far prefix padding moves labels: cai-mc-v1 against the same template unpadded.

The template pads each shared prefix with newline tokens to a multiple of 32 tokens
(`JudgeTemplate.prefix_pad_multiple`), so that a prefix ends on a KV block boundary and
every principle after the first finds all of it cached (bench/NOTES.md §7). That changes
the tokens the model reads (a few blank lines before the principle), which is why the
padding belongs to the template and its version, never to the engine (DESIGN.md §3).
This measures what it does to labels: every gold pair, every principle, labeled with the
padded template and with the same template at `prefix_pad_multiple=1`, on one engine.

A second padded pass over the same pairs gives the noise floor (batch composition moves
the last digits, DESIGN.md §2); the timings are reported but are no throughput
comparison (the later passes find earlier passes' blocks in the cache).

    .venv/bin/python -m bench.padding_effect

Writes bench/results/padding_effect.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT

GOLD = ROOT / "examples" / "gold" / "gold.jsonl"


def unpadded_spec(spec: Any) -> Any:
    """`spec` on a copy of its template with no prefix padding, registered for this run.

    The copy has an id and a version of its own, as any template change must; the
    constitution's version changes with it (the template id is part of its content).
    """
    from cai_judge.labeling.templates import TEMPLATES

    template = TEMPLATES[spec.template]
    variant = dataclasses.replace(template, id=f"{template.id}-unpadded", prefix_pad_multiple=1)
    TEMPLATES.setdefault(variant.id, variant)
    return spec.model_copy(update={"template": variant.id})


def margin_deltas(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """|Δmargin|, |Δp_a| and flips of `preferred` between two labelings of the same ids."""
    deltas = [abs(first[i].margin - second[i].margin) for i in first]
    p_deltas = [abs(first[i].p_a - second[i].p_a) for i in first]
    flips = sorted(i for i in first if first[i].preferred != second[i].preferred)
    return {
        "pairs": len(deltas),
        "mean_abs_delta_margin": round(statistics.fmean(deltas), 6),
        "median_abs_delta_margin": round(statistics.median(deltas), 6),
        "max_abs_delta_margin": round(max(deltas), 6),
        "mean_abs_delta_p_a": round(statistics.fmean(p_deltas), 6),
        "preferred_flips": len(flips),
        "flipped_ids": flips,
    }


def unique_prefix_lengths(plan: Any) -> list[int]:
    return list({u.prefix_key: u.prefix_length for u in plan.units}.values())


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from cai_judge.engine.factory import start_engine
    from cai_judge.evaluation.gold import read_gold
    from cai_judge.labeling.constitution import ConstitutionRegistry
    from cai_judge.labeling.judge import Judge
    from cai_judge.labeling.schema import Label, LabelOptions
    from cai_judge.settings import Settings

    gold = read_gold(args.gold)
    if gold.problems:
        raise SystemExit(f"{args.gold}: {gold.problems[0]}")
    pairs = [g.as_pair() for g in gold.pairs]
    truth = {g.id: g.preferred for g in gold.pairs}
    options = LabelOptions(principles="all")

    started = time.perf_counter()
    settings = Settings()
    engine = await start_engine(settings, serving=True)
    engine_seconds = time.perf_counter() - started
    judge = Judge(engine, ConstitutionRegistry.with_builtins())
    try:
        padded_spec = judge.registry.resolve(args.constitution)
        specs = {"padded": padded_spec, "unpadded": unpadded_spec(padded_spec)}
        runs: dict[str, dict[str, Any]] = {}
        for name, spec in (*specs.items(), ("padded_again", padded_spec)):
            plan = await judge.plan(pairs, spec, options)
            began = time.perf_counter()
            batch = await judge.run(plan)
            seconds = time.perf_counter() - began
            if batch.errors:
                raise SystemExit(f"{name}: {batch.errors[0]}")
            labels: dict[str, Label] = {label.id: label for label in batch.labels}
            prefixes = unique_prefix_lengths(plan)
            runs[name] = {
                "labels": labels,
                "template": plan.template.model_dump(),
                "seconds": round(seconds, 1),
                "score_units": len(plan.units),
                "prompt_tokens": plan.prompt_tokens,
                "cached_share": round(
                    batch.usage.cached_prompt_tokens / max(batch.usage.prompt_tokens, 1), 3
                ),
                "mean_prefix_tokens": round(statistics.fmean(prefixes), 1),
                "gold_accuracy": round(
                    statistics.fmean(labels[i].preferred == truth[i] for i in labels), 4
                ),
            }
            print(f"{name}: {len(labels)} pairs in {seconds:.1f} s", flush=True)
    finally:
        judge.close()
        await engine.shutdown()

    padded, unpadded, again = (runs[n]["labels"] for n in ("padded", "unpadded", "padded_again"))
    template = judge.renderer(padded_spec.template).template
    return {
        "model": engine.model_name,
        "gold": str(args.gold.relative_to(ROOT) if args.gold.is_relative_to(ROOT) else args.gold),
        "constitution": f"{padded_spec.id}@{padded_spec.version[:12]}",
        "principles": len(padded_spec.principles),
        "prefix_pad_multiple": template.prefix_pad_multiple,
        "padding_effect": margin_deltas(padded, unpadded),
        "noise_floor_same_template": margin_deltas(padded, again),
        "mean_padding_tokens_per_prefix": round(
            runs["padded"]["mean_prefix_tokens"] - runs["unpadded"]["mean_prefix_tokens"], 1
        ),
        "runs": {
            name: {k: v for k, v in run.items() if k != "labels"} for name, run in runs.items()
        },
        "engine_start_seconds": round(engine_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gold", type=Path, default=GOLD)
    parser.add_argument("--constitution", default="harmless")
    parser.add_argument("--out", type=Path, default=RESULTS / "padding_effect.json")
    args = parser.parse_args()
    args.gold = args.gold.resolve()
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
