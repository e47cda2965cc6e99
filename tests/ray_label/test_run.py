"""cai_judge.ray.run without Ray running: the Parquet form of a label.

The folder is not `tests/ray/`: a `ray` package under tests/ would make ruff (and any
sys.path that holds tests/) take `import ray` for this project's own."""

from __future__ import annotations

import pytest

from cai_judge.labeling.schema import Label

pytest.importorskip("pyarrow")


def test_parquet_schema_holds_every_label_field():
    # A field added to Label and not to the Parquet schema would vanish from --ray's Parquet.
    from cai_judge.ray.run import _parquet_schema

    assert _parquet_schema().names == list(Label.model_fields)
