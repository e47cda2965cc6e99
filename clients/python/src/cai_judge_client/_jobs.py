"""Request bodies and paging for batch jobs (the wire contract in docs/DESIGN.md §5).

A job's pairs go up as NDJSON, streamed. A body must be sendable again on a retry (same
Idempotency-Key, same bytes, so the server sees the same job), so pairs from an iterable
are first spooled to a temporary file (in memory up to a few MiB, on disk past that) and
each attempt streams from its start; a file given by path is reopened per attempt.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from cai_judge_client import _constants as c
from cai_judge_client._dataset import as_dict
from cai_judge_client.types import LabelResult, PairInput, parse_result

READ_BYTES = 256 * 1024
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024

PairsSource = Iterable[PairInput] | str | os.PathLike[str]


# Options added after the first release of the service (calibration, CoT). They are sent
# only when set: the service refuses fields it does not know (422), so a call that leaves
# them at their defaults still works against a server that predates them.
# Sent only when set, so a request with the defaults is what servers before them accepted.
OPTIONAL_OPTION_DEFAULTS: dict[str, Any] = {"calibrated": False, "mode": "plain",
                                            "cot_max_tokens": None, "ensemble": "full",
                                            "ensemble_delta": 0.1}  # fmt: skip


def wire_options(options: dict[str, Any]) -> dict[str, Any]:
    """The labeling options as a request sends them: the later ones only when set."""
    return {
        name: value
        for name, value in options.items()
        if name not in OPTIONAL_OPTION_DEFAULTS or value != OPTIONAL_OPTION_DEFAULTS[name]
    }


def job_params(options: dict[str, Any]) -> dict[str, Any]:
    """The options of an NDJSON job upload, as query parameters."""
    return {
        name: ("true" if value else "false") if isinstance(value, bool) else value
        for name, value in wire_options(options).items()
    }


class JobBody:
    """An NDJSON body that can be streamed again from its first byte on every attempt."""

    def __init__(self, source: PairsSource) -> None:
        self._path: Path | None = None
        self._spool: IO[bytes] | None = None
        if isinstance(source, str | os.PathLike):
            self._path = Path(source)
            if not self._path.is_file():
                raise FileNotFoundError(f"no pairs file at {self._path}")
        else:
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
            for pair in source:
                spool.write(json.dumps(as_dict(pair), ensure_ascii=False).encode() + b"\n")
            self._spool = spool

    def _open(self) -> IO[bytes]:
        if self._path is not None:
            return self._path.open("rb")
        assert self._spool is not None
        self._spool.seek(0)
        return self._spool

    def _reads(self) -> Iterator[bytes]:
        handle = self._open()
        try:
            while block := handle.read(READ_BYTES):
                yield block
        finally:
            if self._path is not None:
                handle.close()

    def sync_content(self) -> Callable[[], Iterator[bytes]]:
        return self._reads

    def async_content(self) -> Callable[[], AsyncIterator[bytes]]:
        async def reads() -> AsyncIterator[bytes]:
            # Local file reads of 256 KiB: short enough not to stall the event loop.
            for block in self._reads():
                yield block

        return reads

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


NDJSON_HEADERS = {"Content-Type": "application/x-ndjson"}


def parse_page(response: httpx.Response, cursor: int) -> tuple[list[LabelResult], int, str | None]:
    """The results on one page, the cursor after them, and the job's state."""
    results = [
        parse_result(json.loads(line)) for line in response.text.splitlines() if line.strip()
    ]
    next_cursor = response.headers.get(c.NEXT_CURSOR_HEADER)
    after = int(next_cursor) if next_cursor is not None else cursor + len(results)
    return results, after, response.headers.get(c.JOB_STATE_HEADER)
