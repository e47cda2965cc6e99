"""cai_judge.ray.run without Ray running: the Parquet form of a label, and what the driver
writes of the blocks it takes.

The folder is not `tests/ray/`: a `ray` package under tests/ would make ruff (and any
sys.path that holds tests/) take `import ray` for this project's own."""

from __future__ import annotations

import pytest

from cai_judge.labeling.schema import Label

pa = pytest.importorskip("pyarrow")


def test_parquet_schema_holds_every_label_field():
    # A field added to Label and not to the Parquet schema would vanish from --ray's Parquet.
    from cai_judge.ray.run import _parquet_schema

    assert _parquet_schema().names == list(Label.model_fields)


def _block(rows: list[tuple[str | None, str | None, str | None]]) -> pa.Table:
    """An output block as LabelStage returns it: (label, error, pair_id) per input row."""

    from cai_judge.ray.stage import ERROR, LABEL, PAIR_ID, USAGE

    return pa.table(
        {
            LABEL: pa.array([r[0] for r in rows], pa.string()),
            ERROR: pa.array([r[1] for r in rows], pa.string()),
            PAIR_ID: pa.array([r[2] for r in rows], pa.string()),
            USAGE: pa.array([None] * len(rows), pa.string()),
        }
    )


def test_driver_writes_one_label_per_id_and_reports_each_repeat():
    # Blocks reach the driver once each, in input order; rows are numbered across blocks.
    from cai_judge.ray.run import RayLabelSummary, _take_batch

    summary = RayLabelSummary()
    first_rows: dict[str, int] = {}
    blocks = [
        [("L-a", None, "a"), (None, None, None), ("L-b", None, "b")],
        # A repeat of an earlier block's id; a bad line; a repeat of a pair that failed.
        [("L-a2", None, "a"), (None, "not valid JSON: x", None), (None, "pair 'c': boom", "c")],
        [("L-c2", None, "c"), ("L-d", None, "d"), ("L-d2", None, "d")],
    ]
    written: list[str] = []
    row = 0
    for block in blocks:
        labels, row = _take_batch(_block(block), row, summary, first_rows)
        written += labels
    assert row == 9
    assert written == ["L-a", "L-b", "L-d"] and summary.labeled == 3
    assert summary.problems == [
        (4, "duplicate pair id 'a', first on row 1"),
        (5, "not valid JSON: x"),
        (6, "pair 'c': boom"),
        # The first row owns its id even when it got no label: one answer per id, always.
        (7, "duplicate pair id 'c', first on row 6"),
        (9, "duplicate pair id 'd', first on row 8"),
    ]
