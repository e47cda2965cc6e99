"""The driver of `cai-judge label --ray`: pairs in as a Ray Dataset, labels out in input order.

Ray Data reads the pairs (JSON Lines or Parquet, a local path or a URI: `locations.py`),
`map_batches` streams them through `LabelStage` actors (one engine each; `num_gpus=1` on a GPU
cluster), and the driver writes each label as it arrives, in input order (`preserve_order`),
into one file: JSON Lines exactly as `cai-judge label` writes them, or Parquet. An actor that
dies is restarted by Ray Data (`max_restarts=-1`) and the blocks it held are retried
(`max_task_retries=-1`); since only the driver writes, and it takes each output block once,
the file holds exactly one label per pair whatever was retried. A pair id the input repeats
is written once, for its first row, and each later row is reported (`_take_batch`).

Progress: Ray Data's own bars while it runs, then the CLI's summary line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cai_judge.labeling.schema import Label, Usage
from cai_judge.ray.locations import resolve_location
from cai_judge.ray.stage import ERROR, LABEL, PAIR_ID, USAGE, LabelStage, StageConfig

if TYPE_CHECKING:
    import pyarrow as pa


# -1: without end (Ray's spelling).
MAX_RESTARTS = -1


class _Sink(Protocol):
    def write(self, labels: list[str]) -> None: ...


@dataclass
class RayLabelSummary:
    """What a run did: pairs labeled, rows that got no label (with why), usage, timing."""

    labeled: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # (row number, why)
    usage: Usage = field(default_factory=Usage)
    elapsed_s: float = 0.0
    first_label_s: float | None = None


def _is_parquet(path: str) -> bool:
    return path.endswith((".parquet", ".pq"))


def _parquet_schema() -> pa.Schema:
    """A Label as a Parquet row: scalars as columns, the provenance refs as structs, and the
    per-principle and CoT lists as their JSON text (their optional fields vary by mode)."""
    import pyarrow as pa

    ref = pa.struct([("id", pa.string()), ("version", pa.string())])
    return pa.schema(
        [
            ("id", pa.string()),
            ("preferred", pa.string()),
            ("margin", pa.float64()),
            ("p_a", pa.float64()),
            ("position_bias", pa.float64()),
            ("consistency", pa.float64()),
            ("answer_mass", pa.float64()),
            ("low_confidence", pa.bool_()),
            ("principles", pa.list_(pa.string())),
            # `all` or k: text, so one column holds both.
            ("selection", pa.string()),
            ("aggregator", pa.string()),
            ("constitution", ref),
            ("template", ref),
            ("model", pa.string()),
            ("seed", pa.int64()),
            ("per_principle", pa.string()),
            (
                "calibration",
                pa.struct(
                    [
                        ("profile", pa.string()),
                        ("raw_margin", pa.float64()),
                        ("raw_p_a", pa.float64()),
                    ]
                ),
            ),
            ("mode", pa.string()),
            ("raw_margin", pa.float64()),
            ("raw_p_a", pa.float64()),
            ("cot_max_probability", pa.float64()),
            ("cot_max_tokens", pa.int64()),
            ("rationales", pa.string()),
            # Adaptive ensembles' provenance, as JSON like the other nested optionals.
            ("ensemble", pa.string()),
        ]
    )


_JSON_COLUMNS = ("per_principle", "rationales", "ensemble")


def parquet_row(label_json: str) -> dict[str, Any]:
    record = Label.model_validate_json(label_json).model_dump(mode="json")
    record["selection"] = str(record["selection"])
    for name in _JSON_COLUMNS:
        if record[name] is not None:
            record[name] = json.dumps(record[name])
    return record


class _JsonLinesSink:
    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, labels: list[str]) -> None:
        self._handle.write("".join(label + "\n" for label in labels).encode())
        # Per batch, as the CLI does: what is written is whole lines.
        self._handle.flush()


class _ParquetSink:
    def __init__(self, handle: Any) -> None:
        import pyarrow.parquet as pq

        self._schema = _parquet_schema()
        self._writer = pq.ParquetWriter(handle, self._schema)

    def write(self, labels: list[str]) -> None:
        import pyarrow as pa

        if labels:
            rows = [parquet_row(label) for label in labels]
            self._writer.write_table(pa.Table.from_pylist(rows, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


@contextmanager
def _open_sink(output: str) -> Iterator[_Sink]:
    import pyarrow.fs as pafs

    filesystem, path = resolve_location(output)
    if isinstance(filesystem, pafs.LocalFileSystem):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with filesystem.open_output_stream(path) as handle:
        if _is_parquet(output):
            sink = _ParquetSink(handle)
            try:
                yield sink
            finally:
                sink.close()
        else:
            yield _JsonLinesSink(handle)


def read_pairs_dataset(source: str) -> Any:
    """Pairs as a Ray Dataset: Parquet by its columns, anything else as JSON Lines.

    JSON Lines go in as each line's bytes, one row per line, blank lines kept, split on
    "\n" alone (`lines.py`: Ray Data's `read_text` splits at U+2028 too, and fails a whole
    file on one byte that is not UTF-8). Arrow's JSON reader would refuse a file whose
    `prompt` is a string on one line and chat messages on another, and one bad line would
    fail the whole read instead of that line alone.
    """
    import pyarrow.fs as pafs
    import ray.data

    from cai_judge.ray.lines import JsonLinesDatasource

    # Ray Data resolves a path or a URI pyarrow knows as `resolve_location` does, so those go
    # in as given; a scheme only fsspec knows goes in as its filesystem (by itself, Ray Data
    # would try fsspec for HTTP alone).
    filesystem: pafs.FileSystem | None
    filesystem, path = resolve_location(source)
    if not isinstance(filesystem, pafs.PyFileSystem):
        filesystem, path = None, source
    if _is_parquet(source):
        return ray.data.read_parquet(path, filesystem=filesystem)
    return ray.data.read_datasource(JsonLinesDatasource(path, filesystem=filesystem))


def _init_ray() -> None:
    import ray

    if not ray.is_initialized():
        # No address: ray.init reads RAY_ADDRESS itself, and without it starts a local Ray.
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True)


def _cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))  # type: ignore[no-untyped-call]


def _actor_plan(
    actors: int | None, num_gpus: float | None, num_cpus: float
) -> tuple[int, dict[str, float]]:
    """How many actors, and what each takes: a GPU each on a GPU cluster (one actor per GPU
    unless told), else `num_cpus` each (one actor unless told: on CPUs, one engine already
    uses every core it is bound to, DESIGN.md §4)."""
    gpus = _cluster_gpus()
    if num_gpus is None:
        num_gpus = 1.0 if gpus > 0 else 0.0
    if num_gpus > 0:
        return actors or max(1, int(gpus // num_gpus)), {"num_gpus": num_gpus}
    return actors or 1, {"num_cpus": num_cpus}


def label_with_ray(
    source: str,
    output: str,
    config: StageConfig,
    *,
    batch_size: int = 32,
    actors: int | None = None,
    num_gpus: float | None = None,
    num_cpus: float = 1.0,
    on_batch: Callable[[RayLabelSummary], None] | None = None,
) -> RayLabelSummary:
    """Label `source` into `output` on the Ray cluster of RAY_ADDRESS (else a local one).

    `actors`: engines to run (default: one per GPU of the cluster, else one). Each actor
    takes `num_gpus` (default: 1 when the cluster has GPUs) or else `num_cpus`.
    `on_batch` is called after each batch is written (tests and benchmarks watch progress).
    """
    import ray
    import ray.data

    _init_ray()
    context = ray.data.DataContext.get_current()
    # Labels are written in input order: the CLI's file and this one line up row for row.
    context.execution_options.preserve_order = True
    actors, resources = _actor_plan(actors, num_gpus, num_cpus)

    summary = RayLabelSummary()
    started = time.perf_counter()
    # One map task per batch: Ray Data would otherwise hand an actor a whole read block of
    # small rows in one task, so labels would reach the driver (and the file) all at once
    # at the end, and a dead actor would have its whole block redone.
    pairs = read_pairs_dataset(source).repartition(target_num_rows_per_block=batch_size)
    labeled = pairs.map_batches(
        LabelStage,
        fn_constructor_kwargs={"config": config},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        # Ray Data's defaults, stated because one label per pair depends on them: a dead
        # actor is restarted and the batches it held are retried, without end.
        max_restarts=MAX_RESTARTS,
        max_task_retries=-1,
        **resources,
    )
    row = 0
    first_rows: dict[str, int] = {}
    with _open_sink(output) as sink:
        for batch in labeled.iter_batches(batch_size=None, batch_format="pyarrow"):
            labels, row = _take_batch(batch, row, summary, first_rows)
            sink.write(labels)
            if labels and summary.first_label_s is None:
                summary.first_label_s = time.perf_counter() - started
            if on_batch is not None:
                on_batch(summary)
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _take_batch(
    batch: pa.Table, row: int, summary: RayLabelSummary, first_rows: dict[str, int]
) -> tuple[list[str], int]:
    """The labels of one output block to write, `row` advanced past it; rows without a
    label, and rows that repeat an earlier row's pair id, go to `summary.problems`.

    `first_rows` maps each pair id seen so far to its row, so the file holds one label per
    id, the first row's. Repeated ids are found here rather than by a groupby over the
    input before labeling: that would be an all-to-all shuffle reading every pair twice and
    holding the first label back until the whole input was read, while the driver already
    sees every row once, in input order, with its row number. The cost is the map, which
    lives for the run: ≈ 110 bytes plus the id's length per pair (125 measured for 13-character
    ids: ≈ 1.3 GB on the driver for 10M pairs), and a repeated pair is labeled before its
    label is dropped.
    """
    labels: list[str] = []
    columns = zip(
        batch.column(LABEL).to_pylist(),
        batch.column(ERROR).to_pylist(),
        batch.column(PAIR_ID).to_pylist(),
        batch.column(USAGE).to_pylist(),
        strict=True,
    )
    for label, error, pair_id, usage in columns:
        row += 1
        if usage is not None:
            summary.usage.add(Usage.model_validate_json(usage))
        first = first_rows.setdefault(pair_id, row) if pair_id is not None else row
        if first != row:
            # Whether or not this row got a label: the first row owns the id.
            summary.problems.append((row, f"duplicate pair id {pair_id!r}, first on row {first}"))
        elif label is not None:
            labels.append(label)
        elif error is not None:
            summary.problems.append((row, error))
    summary.labeled += len(labels)
    return labels, row
