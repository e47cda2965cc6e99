"""Where `label` reads and writes: local paths always, URIs with --ray only. Each run here is
refused before an engine (or Ray) would start: exit 2 and a message naming the location."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli_options import unboxed
from tests.support.cli import PAIRS, run_cli, write_jsonl


@pytest.mark.parametrize(
    ("where", "name"),
    [("input", "INPUT.jsonl"), ("output", "--output")],
)
def test_uri_without_ray_is_a_usage_error(tmp_path: Path, where: str, name: str):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, PAIRS[:1])
    source = "s3://bucket/pairs.jsonl" if where == "input" else str(pairs)
    output = "gs://bucket/labels.jsonl" if where == "output" else str(tmp_path / "o.jsonl")
    result = run_cli("label", source, "-o", output, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    shown = unboxed(result.stderr)
    assert "Traceback" not in shown
    uri = source if where == "input" else output
    assert f"Invalid value for '{name}': {uri} is a URI" in shown
    assert "Add --ray, or give a local path" in shown
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("ray_flag", [[], ["--ray"]])
def test_missing_or_directory_input_is_named(tmp_path: Path, ray_flag: list[str]):
    output = str(tmp_path / "o.jsonl")
    missing = run_cli("label", "nope.jsonl", "-o", output, *ray_flag, cwd=tmp_path)
    assert missing.returncode == 2, missing.stderr
    assert "Invalid value for 'INPUT.jsonl': File 'nope.jsonl' does not exist." in unboxed(
        missing.stderr
    )
    directory = run_cli("label", str(tmp_path), "-o", output, *ray_flag, cwd=tmp_path)
    assert directory.returncode == 2, directory.stderr
    assert f"File '{tmp_path}' is a directory." in unboxed(directory.stderr)


def test_ray_refuses_bad_uris_before_starting(tmp_path: Path):
    pytest.importorskip("ray", reason="the `ray` extra: pip install 'cai-judge[ray]'")
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, PAIRS[:1])
    held = tmp_path / "held.jsonl"
    held.write_text('{"id": "p0"}\n')

    def refused(source: str, output: str) -> str:
        result = run_cli("label", source, "-o", output, "--ray", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        return " ".join(result.stderr.split())

    # The output check reads the URI's filesystem, as it reads a local path.
    shown = refused(pairs.as_uri(), held.as_uri())
    assert f"{held.as_uri()} already holds labels and --ray does not resume a file" in shown
    assert held.read_text() == '{"id": "p0"}\n'
    shown = refused((tmp_path / "gone.jsonl").as_uri(), str(tmp_path / "o.jsonl"))
    assert f"{(tmp_path / 'gone.jsonl').as_uri()} does not exist" in shown
    shown = refused("nope://bucket/pairs.jsonl", str(tmp_path / "o.jsonl"))
    assert "cannot open nope://bucket/pairs.jsonl" in shown and "Protocol not known" in shown
    assert not (tmp_path / "o.jsonl").exists()
