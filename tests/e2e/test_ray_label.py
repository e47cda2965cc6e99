"""`cai-judge label --ray`: a real local Ray, the real vLLM CPU engine, the tiny model.

The machine has 2 shared cores, so each test runs one actor on a handful of pairs; starting
Ray and an engine in an actor still takes a minute or two on a busy machine.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.cli import run_cli

ray = pytest.importorskip("ray", reason="the `ray` extra: pip install 'cai-judge[ray]'")

PAIRS = [
    {"id": f"p{i}", "prompt": f"Question {i}?", "response_a": f"Answer {i}.", "response_b": "No."}
    for i in range(6)
]
# A line break to str.splitlines, written raw below (ensure_ascii=False, as the SDK writes):
# one line, one pair, for --ray as for the CLI (issue 33).
PAIRS[2]["prompt"] = "Question 2?\u2028Answer briefly."
# A pair and its swap: the same units, so antisymmetry holds to the bit within a batch.
PAIRS.append({**PAIRS[0], "id": "p0-swapped", "response_a": "No.", "response_b": "Answer 0."})


COMMON = ["--principles", "2", "--seed", "7", "--batch-size", "3"]
NUMBERS = ("margin", "p_a", "position_bias", "consistency", "answer_mass")


@dataclass(frozen=True)
class PlainRun:
    pairs: Path
    labels: dict[str, dict[str, Any]]  # by pair id


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> PlainRun:
    """The plain CLI's labels of PAIRS, with two bad lines among them: what every --ray run
    here is compared with (the CLI run once for the module: it starts an engine)."""
    tmp_path = tmp_path_factory.mktemp("plain")
    pairs = tmp_path / "pairs.jsonl"
    rows: list[object] = [*PAIRS[:3], {"id": "bad", "prompt": "x", "response_a": ""}, *PAIRS[3:]]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    pairs.write_text(text + "\n{not json\n", encoding="utf-8")
    output = tmp_path / "cli.jsonl"
    plain = run_cli(
        "label", str(pairs), "-o", str(output), "--model", str(tiny_model_dir), *COMMON,
        cwd=tmp_path,
    )  # fmt: skip
    assert plain.returncode == 1, plain.stderr[-2000:]
    labels = [json.loads(line) for line in output.read_text().splitlines()]
    return PlainRun(pairs, {label["id"]: label for label in labels})


def assert_same_labels(want: dict[str, Any], have: dict[str, Any]) -> None:
    for name in NUMBERS:
        assert have[name] == pytest.approx(want[name], abs=1e-4), (want["id"], name)
    # Provenance, principles chosen and flags are the CLI's exactly.
    assert {k: v for k, v in have.items() if k not in NUMBERS} == {
        k: v for k, v in want.items() if k not in NUMBERS
    }


@pytest.mark.engine
def test_ray_labels_equal_the_cli_labels(tmp_path: Path, tiny_model_dir: Path, plain_run: PlainRun):
    pairs = plain_run.pairs
    on_ray = run_cli(
        "label", str(pairs), "-o", str(tmp_path / "ray.jsonl"), "--ray",
        "--model", str(tiny_model_dir), *COMMON, cwd=tmp_path,
    )  # fmt: skip
    # Bad lines: reported with their line numbers, as the CLI reports them, and exit 1.
    assert on_ray.returncode == 1, on_ray.stderr[-3000:]
    assert f"{pairs}:4" in on_ray.stderr and "response_b: Field required" in on_ray.stderr
    assert f"{pairs}:10" in on_ray.stderr and "not valid JSON" in on_ray.stderr
    assert "labeled 7 pair(s)" in on_ray.stderr and "2 pair(s) not labeled" in on_ray.stderr

    got = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert [g["id"] for g in got] == [p["id"] for p in PAIRS]  # input order
    assert list(plain_run.labels) == [p["id"] for p in PAIRS]
    for have in got:
        assert_same_labels(plain_run.labels[have["id"]], have)
    assert got[-1]["margin"] == -got[0]["margin"]


@pytest.mark.engine
def test_ray_reads_and_writes_file_uris_and_reports_a_repeated_id(
    tmp_path: Path, tiny_model_dir: Path, plain_run: PlainRun
):
    # Row 5 repeats p1's id with its responses swapped: its label would have the opposite
    # margin, so a file holding it instead of row 2's would differ from the CLI's labels.
    repeat = {
        **PAIRS[1],
        "response_a": PAIRS[1]["response_b"],
        "response_b": PAIRS[1]["response_a"],
    }
    pairs = tmp_path / "in dir" / "pairs.jsonl"  # a space: the URI is percent-encoded
    pairs.parent.mkdir()
    pairs.write_text("".join(json.dumps(r) + "\n" for r in [*PAIRS[:4], repeat]))
    output = tmp_path / "out" / "labels.jsonl"
    source_uri, output_uri = pairs.as_uri(), output.as_uri()
    assert source_uri.startswith("file:///") and "%20" in source_uri

    on_ray = run_cli(
        "label", source_uri, "-o", output_uri, "--ray", "--model", str(tiny_model_dir), *COMMON,
        cwd=tmp_path,
    )  # fmt: skip
    assert on_ray.returncode == 1, on_ray.stderr[-3000:]  # SOME_PAIRS_FAILED
    shown = on_ray.stderr  # the console does not wrap (soft_wrap)
    assert f"{source_uri}:5: duplicate pair id 'p1', first on row 2" in shown
    assert "1 pair(s) not labeled" in shown and f"wrote 4 label(s) to {output_uri}" in shown

    got = [json.loads(line) for line in output.read_text().splitlines()]
    assert [g["id"] for g in got] == ["p0", "p1", "p2", "p3"]  # one label per id, in order
    for have in got:
        assert_same_labels(plain_run.labels[have["id"]], have)


@pytest.fixture
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_reads_jsonl_lines_as_the_cli_does(tmp_path: Path, local_ray: None):
    # Ray Data's read_text split at U+2028, U+2029 and U+0085 (written raw by
    # json.dumps(ensure_ascii=False)) and failed the whole file on one byte that is not
    # UTF-8: here each pair is one row, the bad byte one row's error (issue 33).
    import pyarrow as pa

    from cai_judge.labeling.schema import Pair
    from cai_judge.ray.run import read_pairs_dataset
    from cai_judge.ray.stage import parse_rows

    pairs = [
        {**p, "prompt": f"line{mark}break"}
        for p, mark in zip(PAIRS[:3], "\u2028\u2029\x85", strict=True)
    ]
    lines = [json.dumps(p, ensure_ascii=False).encode() for p in pairs]
    source = tmp_path / "pairs.jsonl"
    source.write_bytes(b"\n".join([lines[0], b"\xff{", lines[1], b"", lines[2]]) + b"\n")

    rows = read_pairs_dataset(str(source)).take_all()
    parsed = parse_rows(pa.Table.from_pylist(rows))
    assert len(parsed) == 5
    assert [(n, r.id) for n, r in enumerate(parsed, 1) if isinstance(r, Pair)] == [
        (1, "p0"), (3, "p1"), (5, "p2"),
    ]  # fmt: skip
    assert parsed[1] == "not UTF-8 text (byte 0xff at column 1)" and parsed[3] is None


def _actor_processes() -> list[psutil.Process]:
    """This test's Ray Data map actors (Ray names their processes ray::MapWorker...)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            # A killed actor lingers as a zombie until its raylet reaps it.
            alive = process.status() != psutil.STATUS_ZOMBIE
            if alive and "MapWorker" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_actor_engine_gets_the_clis_cpu_threads(local_ray: None):
    # Ray starts a num_cpus=1 actor with OMP_NUM_THREADS=1; the CLI's engine runs one
    # thread per core of CAI_JUDGE_CPU_THREADS_BIND (`all`: every core this process may use).
    from cai_judge.ray.stage import bind_cpu_threads
    from cai_judge.settings import Settings

    @ray.remote(num_cpus=1)
    def threads(bind: str) -> tuple[int, int]:
        import torch

        bind_cpu_threads(Settings(cpu_threads_bind=bind))
        return torch.get_num_threads(), len(os.sched_getaffinity(0))

    count, cores = ray.get(threads.remote("all"))
    assert count == cores
    assert ray.get(threads.remote("0"))[0] == 1


@pytest.mark.engine
def test_killed_actor_is_restarted_and_every_pair_labeled_once(
    tmp_path: Path, tiny_model_dir: Path, local_ray: None
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cai_judge.labeling.constitution import ConstitutionRegistry
    from cai_judge.labeling.schema import LabelOptions
    from cai_judge.ray.run import RayLabelSummary, label_with_ray
    from cai_judge.ray.stage import StageConfig
    from cai_judge.settings import Settings

    pairs = [
        {"id": f"k{i}", "prompt": f"Question {i}?", "response_a": f"Answer {i}.",
         "response_b": f"No {i}."}
        for i in range(16)
    ]  # fmt: skip
    source = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(pairs), source)
    settings = Settings(model=str(tiny_model_dir), max_model_len=1024, cpu_kv_cache_gib=1)
    spec = ConstitutionRegistry.with_builtins().resolve("harmless")
    config = StageConfig(settings, spec, LabelOptions(principles="all"), None)

    killed: list[int] = []
    later: set[int] = set()
    batches_at_kill: list[int] = []

    def on_batch(summary: RayLabelSummary) -> None:
        actors = {p.pid for p in _actor_processes()}
        if not killed:
            # Killed once it has labeled a pair, with pairs still to label.
            assert len(actors) == 1, actors
            victim = actors.pop()
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            batches_at_kill.append(summary.labeled)
        else:
            later.update(actors)

    output = tmp_path / "labels.parquet"
    finished: list[RayLabelSummary] = []
    runner = threading.Thread(
        target=lambda: finished.append(
            label_with_ray(str(source), str(output), config, batch_size=1, on_batch=on_batch)
        )
    )
    runner.start()
    runner.join(timeout=540)
    assert not runner.is_alive(), "labeling did not finish in 9 minutes"
    assert killed and batches_at_kill[0] < len(pairs)
    # Ray restarted the actor: another process labeled the rest.
    assert later - set(killed), later

    table = pq.read_table(output)
    assert table.column("id").to_pylist() == [p["id"] for p in pairs]
    assert finished[0].labeled == len(pairs) and not finished[0].problems
    assert set(table.column("selection").to_pylist()) == {"all"}
