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


# What a label records about how it was made. Two labels that differ in any of these come
# from different judges or runs (the model, the template, the constitution version, the
# principles and their seed, the aggregator, the calibration profile, CoT's rationale
# budget and clamp) or have different shapes (`per_principle`), so an output file is only
# resumed, and only appended to, by a run whose labels agree with it on all of them.
# These are the fields the CLI's resume compares (`cai-judge label`), formatted alike; the
# SDK cannot import the service, so tests/cli/test_resume_provenance.py holds the two to
# one definition. Each maps to the option (or the server's setting) that decides it.
RESUME_FIELDS: dict[str, str] = {
    "model": "the server's judge model",
    "constitution": "constitution",
    "template": "the server's judge template",
    "selection": "principles",
    "seed": "seed",
    "aggregator": "aggregator",
    "calibration": "calibrated (the server's calibration profile)",
    "per_principle": "per_principle",
    "mode": "mode",
    "cot_max_tokens": "cot_max_tokens",
    "cot_max_probability": "the server's CoT clamp (CAI_JUDGE_COT_MAX_PROBABILITY)",
    "ensemble": "ensemble and ensemble_delta",
}
MISSING = "(none)"


def provenance(record: dict[str, Any]) -> dict[str, str]:
    """A label record's RESUME_FIELDS as comparable text (a label as the wire sends it)."""

    def ref(value: Any) -> str:
        if isinstance(value, dict) and "id" in value and "version" in value:
            return f"{value['id']}@{value['version']}"
        return MISSING

    def plain(value: Any) -> str:
        return MISSING if value is None else str(value)

    calibration = record.get("calibration")
    return {
        "model": plain(record.get("model")),
        "constitution": ref(record.get("constitution")),
        "template": ref(record.get("template")),
        "selection": plain(record.get("selection")),
        "seed": plain(record.get("seed")),
        "aggregator": plain(record.get("aggregator")),
        "calibration": (
            str(calibration["profile"])
            if isinstance(calibration, dict) and "profile" in calibration
            else MISSING
        ),
        "per_principle": "on" if record.get("per_principle") is not None else "off",
        "mode": plain(record.get("mode") or "plain"),
        "cot_max_tokens": plain(record.get("cot_max_tokens")),
        "cot_max_probability": plain(record.get("cot_max_probability")),
        "ensemble": _ensemble_text(record.get("ensemble")),
    }


def _ensemble_text(value: Any) -> str:
    # As the CLI's pairs_file.ensemble_text formats it.
    if isinstance(value, dict) and "delta" in value:
        return f"adaptive δ={value['delta']}"
    return "full"


def label_provenance(label: Label) -> dict[str, str]:
    return provenance(label.model_dump(mode="json", exclude_none=True))


def _run_disagrees(name: str, found: str, expect: dict[str, Any]) -> str | None:
    """What this run asks for in field `name` when it is known before anything is sent
    and `found` is not it; None when it agrees or only the server knows (the model, the
    template, the latest version, the profile, the default CoT budget: those are checked
    against the server's first new label, see `ResumeCheck.check`)."""
    cot = expect.get("mode", "plain") == "cot"
    wanted: str | None
    if name == "constitution":
        asked = str(expect["constitution"])
        asked_id, at, asked_version = asked.partition("@")
        found_id, _, found_version = found.partition("@")
        if found_id != asked_id or (at and not found_version.startswith(asked_version)):
            return asked
        return None
    if name == "calibration":
        calibrated = bool(expect.get("calibrated", False))
        if calibrated != (found != MISSING):
            return "a profile" if calibrated else MISSING
        return None
    if name == "selection":
        wanted = str(expect.get("principles", "all"))
    elif name == "seed":
        wanted = str(expect.get("seed", 0))
    elif name == "aggregator":
        wanted = str(expect.get("aggregator", "mean_logodds"))
    elif name == "per_principle":
        wanted = "on" if expect.get("per_principle", False) else "off"
    elif name == "mode":
        wanted = "cot" if cot else "plain"
    elif name == "cot_max_tokens":
        given = expect.get("cot_max_tokens")
        wanted = (str(given) if given is not None else None) if cot else MISSING
    elif name == "cot_max_probability":
        wanted = None if cot else MISSING
    elif name == "ensemble":
        adaptive = expect.get("ensemble", "full") == "adaptive"
        delta = expect.get("ensemble_delta", 0.1)
        wanted = f"adaptive δ={delta}" if adaptive else "full"
    else:
        wanted = None
    return wanted if wanted is not None and wanted != found else None


class ResumeCheck:
    """Keeps an output file to one run's labels: every label it holds or gets agrees on
    RESUME_FIELDS with the file's first label.

    What the options decide is checked against the resumed lines before anything is sent;
    what only the server knows (its model and template, the version `constitution="id"`
    resolves to today, its calibration profile and CoT defaults) is checked on each new
    label before it is written, so a resume against a changed server stops without
    appending a line.
    """

    def __init__(self, path: Path, expect: dict[str, Any]) -> None:
        self.path = path
        self.expect = expect
        self.first: dict[str, str] | None = None
        self.lines = 0

    def _fix(self) -> str:
        return f"use another output file, or delete {self.path} to start over"

    def resumed(self, line_no: int, label: Label) -> None:
        found = label_provenance(label)
        for name, value in found.items():
            wanted = _run_disagrees(name, value, self.expect)
            if wanted is not None:
                raise ResumeMismatch(
                    f"{self.path} line {line_no} was labeled with {RESUME_FIELDS[name]}="
                    f"{value!r}, this run asks for {wanted!r}; {self._fix()}"
                )
        self._agrees(line_no, found, "holds")

    def check(self, label: Label) -> None:
        """Before writing `label` as the file's next line."""
        self._agrees(self.lines + 1, label_provenance(label), "would get")

    def _agrees(self, line_no: int, found: dict[str, str], verb: str) -> None:
        if self.first is None:
            self.first = found
            return
        for name, value in found.items():
            if value != self.first[name]:
                raise ResumeMismatch(
                    f"{self.path} line {line_no} {verb} a label made with "
                    f"{RESUME_FIELDS[name]}={value!r}, but its first line was made with "
                    f"{self.first[name]!r}: one file would mix two judges' labels; "
                    f"{self._fix()}"
                )


def _check_resumed(
    line_no: int, result: LabelResult, pair: dict[str, Any], check: ResumeCheck, path: Path
) -> None:
    fix = f"use another output file, or delete {path} to start over"
    pair_id = _pair_id(pair)
    if result.id != pair_id:
        raise ResumeMismatch(
            f"{path} line {line_no} is for pair {result.id!r} but input pair {line_no} is "
            f"{pair_id!r}: the output is from other input; {fix}"
        )
    if isinstance(result, Label):
        check.resumed(line_no, result)


def open_resumable(
    path: Path, pairs: Iterator[IndexedPair], expect: dict[str, Any], summary: DatasetSummary
) -> tuple[IO[str], ResumeCheck]:
    """Open `path` for appending after the pairs it already holds (consumed from `pairs`),
    with the check each label written next must pass (`ResumeCheck.check`).

    A half-written last line (a killed run) is cut off and its pair labeled again. So is
    a line whose result is a transient error (the server's engine was unreachable), with
    every line after it: the file stays one line per pair in input order, and the pairs
    after it come back from the server's label cache.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    check = ResumeCheck(path, expect)
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
                _check_resumed(line_no, result, pair, check, path)
                summary.resumed += 1
                good_bytes += len(line)
            raw.truncate(good_bytes)
    check.lines = summary.resumed
    return path.open("a", encoding="utf-8"), check


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
