"""The SDK's `label_dataset` keeps the client's memory bounded by its concurrency.

    .venv/bin/python -m bench.sdk_label_dataset --pairs 10000

Starts a real `cai-judge serve` on the tiny random model (cai_judge/testing/service_process.py's
`start_server`, loopback only), then, in a separate client process that imports only
`cai_judge_client` (as a training job would), labels a lazily generated dataset with
`CaiJudge.label_dataset(..., output=file)` at principles=1, twice side by side: a tenth of
the pairs, then all of them. It polls the client process's own RSS (not the server's) and
reports the growth over the baseline taken after a warm-up call. Bounded memory means the
growth is about the same for both sizes, and under 100 MiB at 10,000 pairs.

Writes bench/results/sdk_label_dataset.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import RESULTS

MIB = 1024 * 1024


def generated_pairs(count: int) -> Iterator[dict[str, str]]:
    """Distinct, short pairs, made one at a time: the input itself takes no memory."""
    for i in range(count):
        yield {
            "id": f"bench-{i}",
            "prompt": f"Request {i}: how should I reply to an angry email from a colleague?",
            "response_a": f"Reply {i}: calmly acknowledge their concern and propose a call.",
            "response_b": f"Reply {i}: forward it to everyone and complain loudly.",
        }


def run_client(url: str, count: int, chunk_size: int, concurrency: int) -> dict[str, Any]:
    """The measured side: this process imports only the SDK and psutil."""
    import psutil

    from cai_judge_client import CaiJudge

    process = psutil.Process()
    peak = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.05)

    with CaiJudge(base_url=url) as judge, tempfile.TemporaryDirectory() as tmp:
        judge.label(list(generated_pairs(1)), constitution="harmless", principles=1)  # warm-up
        baseline = process.memory_info().rss
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        started = time.perf_counter()
        summary = judge.label_dataset(
            generated_pairs(count), constitution="harmless", principles=1,
            output=Path(tmp) / "labels.jsonl", chunk_size=chunk_size,
            concurrency=concurrency, progress=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        stop.set()
        poller.join()
        lines = sum(1 for _ in (Path(tmp) / "labels.jsonl").open())
    return {
        "pairs": count,
        "labeled": summary.labeled,
        "failed": summary.failed,
        "output_lines": lines,
        "seconds": round(elapsed, 1),
        "pairs_per_s": round(count / elapsed, 1),
        "rss_baseline_mib": round(baseline / MIB, 1),
        "rss_peak_mib": round(peak / MIB, 1),
        "rss_growth_mib": round((peak - baseline) / MIB, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--client", help=argparse.SUPPRESS)  # internal: run the client side
    args = parser.parse_args()
    if args.client:
        result = run_client(args.client, args.pairs, args.chunk_size, args.concurrency)
        print(json.dumps(result))
        return

    from cai_judge.testing.service_process import start_server, stop

    work = Path(tempfile.mkdtemp(prefix="sdk-bench-"))
    model = work / "tiny-llama"
    # Built in a child so this process never holds torch; the server loads it itself.
    subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from cai_judge.testing.tiny_model import build_tiny_model; "
         "build_tiny_model(Path(sys.argv[1]))", str(model)],
        check=True,
    )  # fmt: skip
    server = start_server(model, work / "server.log", rate_limit="1000000/minute")
    runs = []
    try:
        for count in (args.pairs // 10, args.pairs):
            done = subprocess.run(
                [sys.executable, "-m", "bench.sdk_label_dataset", "--client", server.url,
                 "--pairs", str(count), "--chunk-size", str(args.chunk_size),
                 "--concurrency", str(args.concurrency)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(runs[-1], flush=True)
    finally:
        stop(server)
    result = {
        "benchmark": "sdk_label_dataset",
        "model": "tiny random Llama (cai_judge/testing/tiny_model.py)",
        "principles": 1,
        "chunk_size": args.chunk_size,
        "concurrency": args.concurrency,
        "runs": runs,
        "growth_under_100_mib": runs[-1]["rss_growth_mib"] < 100,
        "note": "2-core machine shared with other jobs: rates are indicative only; "
        "the RSS figures are the client process alone",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sdk_label_dataset.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
