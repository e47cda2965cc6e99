"""Reading pair files and resuming label files, line by line."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from cai_judge.labeling.schema import Pair
from cai_judge.labeling.validation import describe_validation_error, read_json_lines


@dataclass(frozen=True, slots=True)
class BadLine:
    line_number: int
    reason: str
    pair_id: str | None = None


@dataclass
class PairsFile:
    pairs: list[Pair] = field(default_factory=list)
    line_numbers: dict[str, int] = field(default_factory=dict)
    bad_lines: list[BadLine] = field(default_factory=list)
    duplicate_ids: dict[str, list[int]] = field(default_factory=dict)


def read_pairs(path: Path) -> PairsFile:
    """Parse every line; bad lines are collected, not fatal; duplicate ids are found."""
    result = PairsFile()
    seen_lines: dict[str, list[int]] = {}
    for line_number, raw, not_json in read_json_lines(path):
        if not_json is not None:
            result.bad_lines.append(BadLine(line_number, not_json))
            continue
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(raw_id, str):
            seen_lines.setdefault(raw_id, []).append(line_number)
        try:
            pair = Pair.model_validate(raw)
        except ValidationError as error:
            reason = describe_validation_error(error, whole="(line)")
            pair_id = raw_id if isinstance(raw_id, str) else None
            result.bad_lines.append(BadLine(line_number, reason, pair_id))
            continue
        result.pairs.append(pair)
        result.line_numbers[pair.id] = line_number
    result.duplicate_ids = {pid: lines for pid, lines in seen_lines.items() if len(lines) > 1}
    return result


class ResumeError(ValueError):
    pass


@dataclass
class ExistingLabels:
    ids: set[str]
    constitution: tuple[str, str] | None
    model: str | None


def load_existing_labels(path: Path) -> ExistingLabels:
    """Read a label file written by an earlier (maybe killed) run, for resuming.

    A run killed mid-write can leave a partial last line; it is cut off here so that
    appending continues on a clean line instead of gluing two records together.
    """
    existing = ExistingLabels(set(), None, None)
    if not path.exists():
        return existing
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    good_end = 0
    counts: Counter[tuple[str, str]] = Counter()
    for line_number, raw_line in enumerate(lines, start=1):
        try:
            if not raw_line.endswith(b"\n"):
                raise ValueError("no line end")
            record = json.loads(raw_line)
            existing.ids.add(record["id"])
        except (ValueError, KeyError, TypeError) as error:
            if line_number == len(lines):
                break  # the partial write of a killed run: dropped below
            raise ResumeError(
                f"{path}:{line_number} is not a label ({error}); it was not written by "
                "`cai-judge label`, so it is not resumed: choose another output file"
            ) from None
        good_end += len(raw_line)
        constitution = record.get("constitution") or {}
        counts[(constitution.get("id", ""), constitution.get("version", ""))] += 1
        existing.model = existing.model or record.get("model")
    if good_end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(good_end)
    if counts:
        existing.constitution = counts.most_common(1)[0][0]
    return existing
