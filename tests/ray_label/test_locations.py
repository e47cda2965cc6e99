"""cai_judge.ray.locations: which strings are URIs, and how a URI becomes a filesystem the
driver writes to and Ray Data reads from. No Ray, no network: local files, `file://` and
fsspec's in-memory filesystem."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cai_judge.ray.locations import (
    LocationError,
    check_output_is_new,
    check_source,
    is_uri,
    resolve_location,
)

pafs = pytest.importorskip("pyarrow.fs")


@pytest.mark.parametrize(
    "location",
    ["s3://bucket/pairs.jsonl", "gs://b/x.parquet", "abfs://c@acct.dfs.core.windows.net/x",
     "file:///tmp/pairs.jsonl", "hf://datasets/org/name/x.jsonl", "s3a://b/x"],
)  # fmt: skip
def test_uris(location: str):
    assert is_uri(location)


@pytest.mark.parametrize(
    "location",
    ["pairs.jsonl", "/data/pairs.jsonl", "./s3:/b/x", "C:\\data\\pairs.jsonl", "pairs:v2.jsonl",
     "data/s3://x"],
)  # fmt: skip
def test_local_paths(location: str):
    assert not is_uri(location)


def test_local_path_and_file_uri_resolve_to_the_same_file(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    by_path = resolve_location("labels.jsonl")
    by_uri = resolve_location((tmp_path / "labels.jsonl").as_uri())
    assert isinstance(by_path[0], pafs.LocalFileSystem)
    assert isinstance(by_uri[0], pafs.LocalFileSystem)
    assert by_path[1] == by_uri[1] == str(tmp_path / "labels.jsonl")


def test_a_scheme_only_fsspec_knows_is_wrapped_for_pyarrow():
    pytest.importorskip("fsspec")
    filesystem, path = resolve_location("memory://bucket/ray-locations/labels.jsonl")
    assert isinstance(filesystem, pafs.PyFileSystem)
    with filesystem.open_output_stream(path) as handle:
        handle.write(b'{"id": "p0"}\n')
    with pytest.raises(LocationError, match=r"ray-locations/labels\.jsonl already holds labels"):
        check_output_is_new("memory://bucket/ray-locations/labels.jsonl")
    filesystem.delete_file(path)
    check_output_is_new("memory://bucket/ray-locations/labels.jsonl")


def test_unknown_scheme_is_named():
    with pytest.raises(LocationError, match=r"cannot open nope://b/x: pyarrow does not read it"):
        resolve_location("nope://b/x")


def test_output_check(tmp_path: Path):
    labels = tmp_path / "labels.jsonl"
    check_output_is_new(labels.as_uri())  # not there yet
    labels.write_text("")
    check_output_is_new(labels.as_uri())  # empty: nothing to lose
    labels.write_text('{"id": "p0"}\n')
    with pytest.raises(LocationError, match="already holds labels"):
        check_output_is_new(labels.as_uri())
    with pytest.raises(LocationError, match="already holds labels"):
        check_output_is_new(str(labels))
    with pytest.raises(LocationError, match="is a directory"):
        check_output_is_new(tmp_path.as_uri())


def test_source_check(tmp_path: Path):
    pairs = tmp_path / "pairs.jsonl"
    with pytest.raises(LocationError, match=f"{re.escape(pairs.as_uri())} does not exist"):
        check_source(pairs.as_uri())
    pairs.write_text("{}\n")
    check_source(pairs.as_uri())
    with pytest.raises(LocationError, match="is a directory; give one pairs file"):
        check_source(tmp_path.as_uri())
