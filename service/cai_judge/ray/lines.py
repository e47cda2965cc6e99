"""A JSON Lines file as Ray Data rows: one row per line, split on "\\n" alone, as bytes.

Ray Data's `read_text` does not read JSON Lines as `cai-judge label` does. It decodes the
whole file and splits it with `str.splitlines`, which also breaks at U+2028, U+2029, U+0085
and a few control characters. `json.dumps(..., ensure_ascii=False)` (the SDK's upload
files) writes those three raw inside strings, so a pair holding one became two "not valid
JSON" rows and every later row number was off by one. And one byte that is not UTF-8 failed
the whole file's read. Here each line stays bytes up to the stage (`stage.parse_rows`), which
decodes it alone: a bad byte fails its line only, reported with its row number.

The file is read in chunks, so a block of rows goes downstream before the whole file is
read. Ray Data replays a read task's blocks from the start of the file when it retries one
(`iterate_with_retry`); the chunking depends only on the bytes, so a replay yields the same
blocks.

Imported only by `run.read_pairs_dataset`: this module imports Ray Data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

# The rows' one column: a line's bytes, without its "\n".
from cai_judge.ray.stage import LINE

if TYPE_CHECKING:
    from ray.data.block import Block

_CHUNK_BYTES = 4 << 20
# A block is cut at whichever comes first: labeling batches are far smaller (run.py
# repartitions to the batch size), so this only bounds the reader's memory.
_BLOCK_LINES = 10_000
_BLOCK_BYTES = 16 << 20


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a byte stream given in chunks, split on b"\\n" alone and without it.

    As `cai-judge label` numbers them: a blank line is a line, and a last line without a
    line end is one too, while the end of a file that ends in "\\n" starts none.
    """
    tail = b""
    for chunk in chunks:
        parts = (tail + chunk).split(b"\n")
        tail = parts.pop()
        yield from parts
    if tail:
        yield tail


def line_blocks(
    chunks: Iterable[bytes], max_lines: int = _BLOCK_LINES, max_bytes: int = _BLOCK_BYTES
) -> Iterator[pa.Table]:
    """`split_lines` as Arrow tables of one binary column, `LINE`."""
    lines: list[bytes] = []
    size = 0
    for line in split_lines(chunks):
        lines.append(line)
        size += len(line)
        if len(lines) >= max_lines or size >= max_bytes:
            yield _table(lines)
            lines, size = [], 0
    if lines:
        yield _table(lines)


def _table(lines: list[bytes]) -> pa.Table:
    # large_binary: one block may hold more than binary's 2 GiB of offsets can address.
    return pa.table({LINE: pa.array(lines, pa.large_binary())})


def _chunks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    while chunk := read(_CHUNK_BYTES):
        yield chunk


class JsonLinesDatasource(FileBasedDatasource):
    """`ray.data.read_datasource(JsonLinesDatasource(paths, filesystem=...))`: every file's
    lines in order, one row each (the file listing, compression by extension and retries
    are FileBasedDatasource's, as for `read_text`)."""

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[Block]:
        yield from line_blocks(_chunks(f.read))
