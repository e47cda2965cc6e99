"""The parts of `label_dataset` that do not depend on sync or async: numbering and chunking
the input, the resumable output file, the progress bar, and turning a chunk's answer into
results numbered by their place in the dataset.

Memory stays bounded by `concurrency × chunk_size` pairs: the input is read lazily, at most
`concurrency` chunks are in flight, and results leave in input order as soon as the oldest
chunk is done. The output file is written in input order, one line per pair (a label or a
per-item error), so resuming needs no index of finished ids: the first N lines are the first
N pairs, checked id by id.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cai_judge_client._exceptions import APIStatusError, RequestTooLargeError
from cai_judge_client.types import (
    TRANSIENT_ERROR_TYPES,
    ErrorDetail,
    Label,
    LabelResult,
    Pair,
    PairError,
    PairInput,
    Usage,
    parse_result,
)

IndexedPair = tuple[int, dict[str, Any]]
Chunk = list[IndexedPair]


@dataclass
class DatasetSummary:
    """What `label_dataset` did. `errors` holds every per-item error (also in the output
    file, in place); `results` holds every result only when no output file was given."""

    labeled: int = 0
    failed: int = 0
    resumed: int = 0
    usage: Usage = field(default_factory=Usage)
    errors: list[PairError] = field(default_factory=list)
    output: Path | None = None
    results: list[LabelResult] | None = None

    def record(self, result: LabelResult) -> None:
        if isinstance(result, PairError):
            self.failed += 1
            self.errors.append(result)
        else:
            self.labeled += 1


def as_dict(pair: PairInput) -> dict[str, Any]:
    return pair.model_dump(mode="json") if isinstance(pair, Pair) else pair


def chunked(pairs: Iterable[IndexedPair], size: int) -> Iterator[Chunk]:
    chunk: Chunk = []
    for item in pairs:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def is_splittable(error: APIStatusError, chunk: Chunk) -> bool:
    """A whole-request refusal caused by the chunk's size (too many pairs or tokens, a body
    over the limit): halving the chunk fixes it. An error about an option does not."""
    if len(chunk) < 2:
        return False
    return isinstance(error, RequestTooLargeError) or (
        error.status_code == 422 and error.param == "pairs"
    )


def chunk_error(error: APIStatusError, chunk: Chunk) -> list[LabelResult]:
    """A single pair the server refused as a whole request: reported in its place."""
    detail = ErrorDetail(
        type=error.type or "request_too_large", message=error.message, param="pairs"
    )
    return [PairError(id=_pair_id(pair), index=index, error=detail) for index, pair in chunk]


def renumber(results: list[LabelResult], chunk: Chunk) -> list[LabelResult]:
    """Per-item errors name their place in the request; make it the place in the dataset."""
    out: list[LabelResult] = []
    for result, (index, _) in zip(results, chunk, strict=True):
        if isinstance(result, PairError):
            result = result.model_copy(update={"index": index})
        out.append(result)
    return out


def _pair_id(pair: dict[str, Any]) -> str | None:
    value = pair.get("id") if isinstance(pair, dict) else None
    return value if isinstance(value, str) else None


def result_line(result: LabelResult) -> str:
    return json.dumps(result.model_dump(mode="json", exclude_none=True), ensure_ascii=False) + "\n"


class ResumeMismatch(ValueError):
    pass


def _check_resumed(
    line_no: int, result: LabelResult, pair: dict[str, Any], expect: dict[str, Any], path: Path
) -> None:
    fix = f"use another output file, or delete {path} to start over"
    pair_id = _pair_id(pair)
    if result.id != pair_id:
        raise ResumeMismatch(
            f"{path} line {line_no} is for pair {result.id!r} but input pair {line_no} is "
            f"{pair_id!r}: the output is from other input; {fix}"
        )
    if isinstance(result, Label):
        constitution_id = str(expect["constitution"]).split("@", 1)[0]
        found = {
            "constitution": result.constitution.id,
            "principles": result.selection,
            "aggregator": result.aggregator,
            "calibrated": result.calibration is not None,
            "mode": result.mode or "plain",
        }
        wanted = {"constitution": constitution_id, "principles": expect["principles"],
                  "aggregator": expect["aggregator"],
                  "calibrated": bool(expect.get("calibrated", False)),
                  "mode": expect.get("mode", "plain")}  # fmt: skip
        for name, value in wanted.items():
            if found[name] != value:
                raise ResumeMismatch(
                    f"{path} line {line_no} was labeled with {name}={found[name]!r}, this run "
                    f"asks for {name}={value!r}; {fix}"
                )


def open_resumable(
    path: Path, pairs: Iterator[IndexedPair], expect: dict[str, Any], summary: DatasetSummary
) -> IO[str]:
    """Open `path` for appending after the pairs it already holds (consumed from `pairs`).

    A half-written last line (a killed run) is cut off and its pair labeled again. So is
    a line whose result is a transient error (the server's engine was unreachable), with
    every line after it: the file stays one line per pair in input order, and the pairs
    after it come back from the server's label cache.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with path.open("rb+") as raw:
            good_bytes = 0
            for line_no, line in enumerate(raw, start=1):
                if not line.endswith(b"\n"):
                    break
                try:
                    result = parse_result(json.loads(line))
                except ValueError as error:
                    raise ResumeMismatch(
                        f"{path} line {line_no} is not a result ({error}); it is not an "
                        "output of label_dataset: use another output file"
                    ) from None
                if isinstance(result, PairError) and result.error.type in TRANSIENT_ERROR_TYPES:
                    break  # labeled again, from this pair on
                try:
                    _, pair = next(pairs)
                except StopIteration:
                    raise ResumeMismatch(
                        f"{path} has more lines than the input has pairs; use another output file"
                    ) from None
                _check_resumed(line_no, result, pair, expect, path)
                summary.resumed += 1
                good_bytes += len(line)
            raw.truncate(good_bytes)
    return path.open("a", encoding="utf-8")


class Progress:
    """A tqdm bar when asked for (or when tqdm is installed and stderr is a terminal)."""

    def __init__(self, enabled: bool | None, total: int | None, initial: int, desc: str) -> None:
        self._bar: Any = None
        if enabled is False:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            if enabled:
                raise ImportError(
                    "progress=True needs tqdm: pip install 'cai-judge-client[progress]'"
                ) from None
            return
        if enabled is None and not sys.stderr.isatty():
            return
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit="pair", dynamic_ncols=True)

    def update(self, n: int, failed: int) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if failed:
                self._bar.set_postfix(failed=failed, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def length_hint(pairs: object) -> int | None:
    try:
        return len(pairs)  # type: ignore[arg-type]
    except TypeError:
        return None


def fsync_close(handle: IO[str]) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
