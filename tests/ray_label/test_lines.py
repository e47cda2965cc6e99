"""How `label --ray` reads JSON Lines (cai_judge.ray.lines, stage.parse_rows), without Ray
running: line for line as `cai-judge label` reads the same file (issue 33)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai_judge.cli.pairs_file import read_pairs
from cai_judge.labeling.schema import Pair

pytest.importorskip("ray.data", reason="the `ray` extra: pip install 'cai-judge[ray]'")
from cai_judge.ray.lines import line_blocks, split_lines
from cai_judge.ray.stage import parse_rows

# Line breaks to str.splitlines (which Ray Data's read_text splits with), written raw by
# json.dumps(ensure_ascii=False), as the SDK writes its upload files.
BREAKS = ("\u2028", "\u2029", "\x85")
PAIRS = [
    {"id": f"u{i}", "prompt": f"one{mark}two", "response_a": f"a{mark}", "response_b": "b"}
    for i, mark in enumerate(BREAKS)
]


def _chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _rows(data: bytes, chunk: int) -> list[Pair | str | None]:
    return [row for block in line_blocks(_chunked(data, chunk), 2) for row in parse_rows(block)]


@pytest.mark.parametrize("chunk", [1, 2, 5, 1 << 20])
def test_lines_split_on_newline_alone_wherever_chunks_end(chunk: int):
    data = "a\nb\u2028c\r\n\n\x85d\ne".encode()
    lines = list(split_lines(_chunked(data, chunk)))
    assert lines == [b"a", "b\u2028c\r".encode(), b"", "\x85d".encode(), b"e"]
    # A file that ends in "\n" has no line after it; an empty file has none at all.
    assert list(split_lines(_chunked(b"a\n\n", chunk))) == [b"a", b""]
    assert list(split_lines([])) == []


@pytest.mark.parametrize("chunk", [3, 1 << 20])
def test_pairs_holding_unicode_line_breaks_read_as_the_cli_reads_them(tmp_path: Path, chunk: int):
    path = tmp_path / "pairs.jsonl"
    text = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in [*PAIRS, PAIRS[0]])
    assert all(mark in text for mark in BREAKS)
    path.write_text(text.replace(f'{PAIRS[0]["id"]}"', 'dup"', 1) + "\n{not json\n")

    rows = _rows(path.read_bytes(), chunk)
    cli = read_pairs(path)
    # Row numbers are line numbers: every pair on its line, the blank line and the bad one
    # after them where the CLI finds them.
    pairs = {number: row for number, row in enumerate(rows, 1) if isinstance(row, Pair)}
    assert pairs == {cli.line_numbers[p.id]: p for p in cli.pairs}
    assert [p.prompt for p in pairs.values()] == [
        "one\u2028two",
        "one\u2029two",
        "one\x85two",
        "one\u2028two",
    ]
    assert rows[4] is None
    assert [(n, why) for n, why in enumerate(rows, 1) if isinstance(why, str)] == [
        (b.line_number, b.reason) for b in cli.bad_lines
    ]
    assert len(rows) == 6


def test_a_byte_that_is_not_utf8_fails_its_line_alone():
    good = [json.dumps(p, ensure_ascii=False).encode() for p in PAIRS]
    data = b"\n".join([good[0], b'{"id": "x\xff"}', good[1], b"\xc3", good[2]]) + b"\n"
    rows = _rows(data, 4)
    assert rows[1] == "not UTF-8 text (byte 0xff at column 10)"
    assert rows[3] == "not UTF-8 text (byte 0xc3 at column 1)"
    assert [r.id for r in rows if isinstance(r, Pair)] == ["u0", "u1", "u2"]
