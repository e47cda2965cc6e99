"""Label a JSONL file of pairs through a running cai-judge service.

    python examples/label_via_service.py examples/pairs.jsonl -o labels.jsonl \
        --url http://127.0.0.1:8000 --constitution harmless --principles 4

Retries 429/503 honouring Retry-After (tenacity-free on purpose: this file only needs
httpx, so it runs anywhere a training job runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx


def post_with_retries(http: httpx.Client, body: dict[str, object], attempts: int = 20) -> dict:  # type: ignore[type-arg]
    for _ in range(attempts):
        response = http.post("/v1/labels", json=body)
        if response.status_code in (429, 503):
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]
    raise RuntimeError(f"gave up after {attempts} attempts")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--constitution", default="harmless")
    parser.add_argument("--principles", default="4")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--api-key")
    args = parser.parse_args()

    pairs = [json.loads(line) for line in args.pairs.read_text().splitlines() if line.strip()]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    principles: int | str = "all" if args.principles == "all" else int(args.principles)
    failed = 0
    started = time.perf_counter()
    with httpx.Client(base_url=args.url, headers=headers, timeout=600) as http:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("w") as sink:
            for start in range(0, len(pairs), args.batch):
                chunk = pairs[start : start + args.batch]
                body = {"constitution": args.constitution, "pairs": chunk, "principles": principles}
                for label in post_with_retries(http, body)["labels"]:
                    if "error" in label:
                        failed += 1
                        print(f"pair {label['id']}: {label['error']['message']}", file=sys.stderr)
                        continue
                    sink.write(json.dumps(label) + "\n")
                    print(
                        f"{label['id']:>10}  preferred={label['preferred']:<3} "
                        f"margin={label['margin']:+.3f}  p_a={label['p_a']:.3f}  "
                        f"consistency={label['consistency']:.2f}  mass={label['answer_mass']:.2f}"
                    )
    elapsed = time.perf_counter() - started
    print(f"labeled {len(pairs) - failed} pairs in {elapsed:.1f} s through {args.url}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
