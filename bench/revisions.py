"""SL-CAI revisions batched vs one prompt at a time, and CoT labels vs plain labels.

    .venv/bin/python -m bench.revisions          # a few minutes on the 2-core CPU

One engine (the default model), one run, side by side:

- revisions/s for 32 prompts, one round (critique + revision: 2 generations each, the
  initial response given), `Reviser.revise` on all 32 at once (one engine call per step)
  against one prompt per call;
- labels/s at K = 4 principles: plain mode against CoT mode (a greedy rationale per
  principle and order before the answer).

Each side gets prompts (and pairs) no other side has seen, so no side finds another's
prefixes in the cache, and each side runs once after a small warm-up. Max tokens are
small (48) so the run stays in minutes; with longer generations decoding dominates more
and batching gains more. Writes bench/results/revisions.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from typing import Any

from bench.common import RESULTS, PeakRss, make_pairs


def revision_prompts(count: int, offset: int) -> list[Any]:
    from cai_judge.sl_cai.schema import RevisionPrompt

    return [
        RevisionPrompt(id=p["id"], prompt=p["prompt"], initial_response=p["response_b"])
        for p in make_pairs(count, offset)
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from cai_judge.engine.factory import start_engine
    from cai_judge.labeling.constitution import ConstitutionRegistry
    from cai_judge.labeling.judge import Judge
    from cai_judge.labeling.schema import LabelOptions, Pair
    from cai_judge.settings import Settings
    from cai_judge.sl_cai.reviser import Reviser
    from cai_judge.sl_cai.schema import RevisionOptions

    settings = Settings(cpu_kv_cache_gib=1)
    registry = ConstitutionRegistry.with_builtins()
    engine = await start_engine(settings, serving=True)
    judge = Judge(engine, registry)
    reviser = Reviser(engine, judge)
    spec = registry.resolve(args.constitution)
    options = RevisionOptions(rounds=1, seed=0, temperature=0.0, max_tokens=args.max_tokens)
    results: dict[str, Any] = {}
    try:
        with PeakRss(os.getpid()) as peak:
            await reviser.revise(revision_prompts(2, 10_000), spec, options)  # warm-up

            prompts = revision_prompts(args.prompts, 0)
            started = time.perf_counter()
            batch = await reviser.revise(prompts, spec, options)
            batched_s = time.perf_counter() - started
            assert len(batch.revisions) == args.prompts, batch.results

            prompts = revision_prompts(args.prompts, 1_000)
            started = time.perf_counter()
            for prompt in prompts:
                single = await reviser.revise([prompt], spec, options)
                assert single.revisions, single.results
            sequential_s = time.perf_counter() - started
            results["revisions"] = {
                "prompts": args.prompts,
                "rounds": 1,
                "generations_per_prompt": 2,
                "max_tokens": args.max_tokens,
                "batched_s": round(batched_s, 2),
                "one_at_a_time_s": round(sequential_s, 2),
                "batched_revisions_per_s": round(args.prompts / batched_s, 3),
                "one_at_a_time_revisions_per_s": round(args.prompts / sequential_s, 3),
                "speedup": round(sequential_s / batched_s, 2),
            }

            k_options = {
                "plain": LabelOptions(principles=args.k, seed=0),
                "cot": LabelOptions(
                    principles=args.k, seed=0, mode="cot", cot_max_tokens=args.max_tokens
                ),
            }
            await judge.label([Pair(**make_pairs(1, 20_000)[0])], spec, k_options["cot"])
            labels: dict[str, Any] = {}
            for offset, (mode, label_options) in enumerate(k_options.items()):
                pairs = [Pair(**p) for p in make_pairs(args.pairs, 2_000 + 1_000 * offset)]
                started = time.perf_counter()
                labeled = await judge.label(pairs, spec, label_options)
                elapsed = time.perf_counter() - started
                assert len(labeled.labels) == args.pairs, labeled.errors
                labels[mode] = {
                    "seconds": round(elapsed, 2),
                    "labels_per_s": round(args.pairs / elapsed, 3),
                    "score_units": labeled.usage.score_units,
                }
            labels["plain_over_cot"] = round(
                labels["plain"]["labels_per_s"] / labels["cot"]["labels_per_s"], 2
            )
            results["labels"] = {
                "pairs": args.pairs,
                "k": args.k,
                "cot_max_tokens": args.max_tokens,
                **labels,
            }
        results["peak_rss_mib"] = round(peak.peak / 2**20)
    finally:
        judge.close()
        await engine.shutdown()
    results["model"] = engine.model_name
    results["constitution"] = spec.ref
    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "note": "shared 2-core CPU (other jobs running): ratios measured side by side in "
        "one run are meaningful, absolute rates are not",
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--constitution", default="harmless")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "revisions.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
