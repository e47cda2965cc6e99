"""Label a JSONL file of pairs through a running cai-judge service, with the Python SDK.

    python examples/label_via_service.py examples/pairs.jsonl -o labels.jsonl \\
        --url http://127.0.0.1:8000 --constitution harmless --principles 4

The SDK (clients/python, `pip install ./clients/python`) does the chunking, concurrency,
retries (429/503 honouring Retry-After, with one idempotency key per call) and resuming:
run it again after a crash and it continues where the output file stops.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cai_judge_client import CaiJudge


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("pairs", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--url", help="Default: CAI_JUDGE_BASE_URL, else http://127.0.0.1:8000")
    parser.add_argument("--api-key", help="Default: CAI_JUDGE_API_KEY")
    parser.add_argument("--constitution", default="harmless")
    parser.add_argument("--principles", default="4")
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    principles: int | str = "all" if args.principles == "all" else int(args.principles)
    started = time.perf_counter()
    with args.pairs.open() as lines, CaiJudge(base_url=args.url, api_key=args.api_key) as judge:
        pairs = (json.loads(line) for line in lines if line.strip())
        summary = judge.label_dataset(
            pairs,
            constitution=args.constitution,
            principles=principles,
            output=args.output,
            chunk_size=args.chunk_size,
            concurrency=args.concurrency,
        )
    elapsed = time.perf_counter() - started

    for line in args.output.read_text().splitlines():
        result = json.loads(line)
        if "error" in result:
            print(f"pair {result['id']}: {result['error']['message']}", file=sys.stderr)
            continue
        print(
            f"{result['id']:>10}  preferred={result['preferred']:<3} "
            f"margin={result['margin']:+.3f}  p_a={result['p_a']:.3f}  "
            f"consistency={result['consistency']:.2f}  mass={result['answer_mass']:.2f}"
        )
    print(
        f"labeled {summary.labeled} pairs in {elapsed:.1f} s through {judge.base_url}"
        + (f" ({summary.resumed} already in {args.output})" if summary.resumed else "")
        + (f"; {summary.failed} failed" if summary.failed else "")
    )
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
