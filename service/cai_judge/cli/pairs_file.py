"""Reading record files (pairs, SL-CAI prompts and revisions, labels) line by line, and
checking a label file before resuming it.

Every problem is reported with its line number and never stops the reading, so one pass
over a file shows everything that needs fixing. One reader (`read_records`) serves every
JSON Lines input of one model; labels have their own, since a label file is also the
output a killed run may have left half-written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from cai_judge.labeling.schema import Label, Pair
from cai_judge.labeling.validation import describe_validation_error, read_json_lines


@dataclass(frozen=True, slots=True)
class BadLine:
    line_number: int
    reason: str
    pair_id: str | None = None


M = TypeVar("M", bound=BaseModel)


@dataclass
class RecordsFile(Generic[M]):
    """The valid records of a file, where each was, the bad lines and the repeated ids."""

    records: list[M] = field(default_factory=list)
    line_numbers: dict[str, int] = field(default_factory=dict)
    bad_lines: list[BadLine] = field(default_factory=list)
    duplicate_ids: dict[str, list[int]] = field(default_factory=dict)

    @property
    def pairs(self) -> list[M]:
        """The records of a pairs file, by the name its readers use."""
        return self.records

    def duplicates_problem(self, path: Path | str, noun: str, matched: str) -> str | None:
        """Why a file with repeated ids is refused (its results are matched by id), or None."""
        if not self.duplicate_ids:
            return None
        shown = "; ".join(
            f"{pid!r} on lines {', '.join(map(str, lines))}"
            for pid, lines in list(self.duplicate_ids.items())[:10]
        )
        return (
            f"{len(self.duplicate_ids)} duplicate {noun} id(s) in {path}: {shown}. "
            f"Ids must be unique so {matched} can be matched and resumed."
        )


PairsFile = RecordsFile[Pair]


class UnreadableFile(ValueError):
    """A file that is not UTF-8 text: no line of it can be read."""


def read_records(path: Path, model: type[M], not_one: str = "") -> RecordsFile[M]:
    """Parse every line as `model`; bad lines are collected (their reason after `not_one`,
    e.g. "not a revision row: "), not fatal; repeated ids are found."""
    try:
        return _read_records(path, model, not_one)
    except UnicodeDecodeError as error:
        raise UnreadableFile(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); "
            "input files are JSON Lines in UTF-8"
        ) from None


def _read_records(path: Path, model: type[M], not_one: str) -> RecordsFile[M]:
    result: RecordsFile[M] = RecordsFile()
    seen_lines: dict[str, list[int]] = {}
    for line_number, raw, not_json in read_json_lines(path):
        if not_json is not None:
            result.bad_lines.append(BadLine(line_number, not_json))
            continue
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        pair_id = raw_id if isinstance(raw_id, str) else None
        if pair_id is not None:
            seen_lines.setdefault(pair_id, []).append(line_number)
        try:
            record = model.model_validate(raw)
        except ValidationError as error:
            reason = not_one + describe_validation_error(error, whole="(line)")
            result.bad_lines.append(BadLine(line_number, reason, pair_id))
            continue
        result.records.append(record)
        if pair_id is not None:
            result.line_numbers[pair_id] = line_number
    result.duplicate_ids = {pid: lines for pid, lines in seen_lines.items() if len(lines) > 1}
    return result


def read_pairs(path: Path) -> PairsFile:
    """A pairs file (`label`, `export`, `calibrate --unlabeled`)."""
    return read_records(path, Pair)


def holds_groups(path: Path) -> bool:
    """Whether a JSONL file holds reward groups (`{id, prompt, completions}`, the shape of
    POST /v1/rewards' `groups`) rather than pairs: its first JSON object says."""
    for _, raw, not_json in read_json_lines(path):
        if not_json is None:
            return isinstance(raw, dict) and "completions" in raw
    return False


def read_groups(path: Path) -> PairsFile:
    """A file of reward groups as the pairs formed within each group
    (evaluation/calibration_fit.py `group_pairs`); a bad group is one bad line, and a group id
    that repeats is a duplicate, as a pair id is in `read_pairs`."""
    from cai_judge.evaluation.calibration_fit import group_pairs
    from cai_judge.labeling.reward_schema import RewardGroup

    groups = read_records(path, RewardGroup)
    result = PairsFile(bad_lines=groups.bad_lines, duplicate_ids=groups.duplicate_ids)
    for group in groups.records:
        for pair in group_pairs(group):
            result.records.append(pair)
            result.line_numbers[pair.id] = groups.line_numbers[group.id]
    return result


def _raw_lines(data: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """Each line's number, bytes (without the line end) and whether a line end follows.

    Split on b"\\n" alone: a label is one `json.dumps` line, which escapes every other
    line break, and bytes are split before decoding so one non-UTF-8 line spoils only
    itself.
    """
    parts = data.split(b"\n")
    for index, part in enumerate(parts[:-1]):
        yield index + 1, part, True
    if parts[-1]:
        yield len(parts), parts[-1], False


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
        ) from None


@dataclass
class LabelsFile:
    labels: list[Label] = field(default_factory=list)
    line_numbers: dict[str, int] = field(default_factory=dict)
    bad_lines: list[BadLine] = field(default_factory=list)


def read_labels(path: Path) -> LabelsFile:
    """Every whole, valid label of a label file; each other line becomes a BadLine.

    A later line with an id already read is bad too, naming the first: exporting both
    would give the same pair twice to the reward model, and picking one silently would
    hide that the file was edited or concatenated.
    """
    result = LabelsFile()
    for line_number, raw, has_end in _raw_lines(path.read_bytes()):
        if not raw.strip():
            result.bad_lines.append(BadLine(line_number, "blank line"))
            continue
        if not has_end:
            result.bad_lines.append(
                BadLine(
                    line_number,
                    "half-written: the last line has no line end (a run stopped mid-write; "
                    "`cai-judge label` redoes that pair when resumed)",
                )
            )
            continue
        try:
            record = json.loads(_utf8(raw))
        except json.JSONDecodeError as error:
            result.bad_lines.append(BadLine(line_number, f"not valid JSON: {error.msg}"))
            continue
        except ValueError as error:
            result.bad_lines.append(BadLine(line_number, str(error)))
            continue
        raw_id = record.get("id") if isinstance(record, dict) else None
        pair_id = raw_id if isinstance(raw_id, str) else None
        try:
            label = Label.model_validate(record)
        except ValidationError as error:
            reason = f"not a label: {describe_validation_error(error, whole='(line)')}"
            result.bad_lines.append(BadLine(line_number, reason, pair_id))
            continue
        first = result.line_numbers.get(label.id)
        if first is not None:
            reason = f"duplicate id {label.id!r}, first labeled on line {first}; not exported"
            result.bad_lines.append(BadLine(line_number, reason, label.id))
            continue
        result.labels.append(label)
        result.line_numbers[label.id] = line_number
    return result


class ResumeError(ValueError):
    pass


# What a label records about how it was made, by the option that sets it. Two labels of
# one file that differ in any of these come from different judges (DESIGN.md §3: a label
# depends on the model, the template, the constitution and the principles chosen; a CoT
# label on its rationale budget and clamp too) or have different shapes (per_principle),
# so a file is only resumed by a run that agrees with it on all of them. The SDK's
# `label_dataset` resume compares the same fields, formatted alike (it cannot import this
# module: tests/cli/test_resume_provenance.py holds the two to one definition).
PROVENANCE_OPTIONS: dict[str, str] = {
    "model": "--model",
    "constitution": "--constitution",
    "template": "judge template (the model's chat format, CAI_JUDGE_CHAT_TEMPLATE)",
    "selection": "--principles",
    "seed": "--seed",
    "aggregator": "--aggregator",
    # A calibrated label's numbers come from its profile: two profiles are two judges.
    "calibration": "--calibration",
    "per_principle": "--per-principle",
    "mode": "--mode",
    # A CoT label's numbers depend on its rationales, so on their budget, and on the clamp.
    "cot_max_tokens": "--cot-max-tokens",
    "cot_max_probability": "CAI_JUDGE_COT_MAX_PROBABILITY",
    # An adaptive label scored a subset chosen by its rule and δ: another judge's label.
    "ensemble": "--ensemble / --ensemble-delta",
}
_MISSING = "(none)"


def provenance(record: Mapping[str, Any]) -> dict[str, str]:
    """A label record's provenance fields as comparable text; a run's provenance is built
    as a record of the same shape, so both sides are formatted by this one function."""

    def ref(value: Any) -> str:
        if isinstance(value, dict) and "id" in value and "version" in value:
            return f"{value['id']}@{value['version']}"
        return _MISSING

    def plain(value: Any) -> str:
        return _MISSING if value is None else str(value)

    def profile(value: Any) -> str:
        return str(value["profile"]) if isinstance(value, dict) and "profile" in value else _MISSING

    return {
        "model": plain(record.get("model")),
        "constitution": ref(record.get("constitution")),
        "template": ref(record.get("template")),
        "selection": plain(record.get("selection")),
        "seed": plain(record.get("seed")),
        "aggregator": plain(record.get("aggregator")),
        "calibration": profile(record.get("calibration")),
        "per_principle": "on" if record.get("per_principle") is not None else "off",
        "mode": plain(record.get("mode") or "plain"),
        "cot_max_tokens": plain(record.get("cot_max_tokens")),
        "cot_max_probability": plain(record.get("cot_max_probability")),
        "ensemble": ensemble_text(record.get("ensemble")),
    }


def ensemble_text(value: Any) -> str:
    """`full`, or `adaptive δ=<delta>` for a label's `ensemble` provenance."""
    if isinstance(value, dict) and "delta" in value:
        return f"adaptive δ={value['delta']}"
    return "full"


@dataclass(frozen=True, slots=True)
class Mismatch:
    field: str
    file_value: str
    line_number: int
    run_value: str

    def describe(self) -> str:
        return (
            f"{PROVENANCE_OPTIONS[self.field]}: the file has {_short(self.file_value)} "
            f"(line {self.line_number}), this run has {_short(self.run_value)}"
        )


def _short(value: str) -> str:
    # `id@<sha256 hex>` reads better cut to 12 hex digits, like `constitutions list`.
    name, at, version = value.rpartition("@")
    if at and len(version) > 12 and all(c in "0123456789abcdef" for c in version):
        return f"{name}@{version[:12]}"
    return value


@dataclass
class ExistingLabels:
    ids: set[str] = field(default_factory=set)
    # provenance field -> value -> the first line holding it
    provenance: dict[str, dict[str, int]] = field(default_factory=dict)
    # Where a half-written last line starts, when there is one: see drop_partial_tail.
    partial_tail_at: int | None = None

    def mismatches(self, run: Mapping[str, str], fields: tuple[str, ...]) -> list[Mismatch]:
        """Each value of `fields` in the file that is not the run's, first lines first."""
        found = [
            Mismatch(name, value, line, run[name])
            for name in fields
            for value, line in self.provenance.get(name, {}).items()
            if value != run[name]
        ]
        return sorted(found, key=lambda m: (m.line_number, m.field))


def load_existing_labels(path: Path) -> ExistingLabels:
    """Read a label file written by an earlier (maybe killed) run, for resuming.

    A run killed mid-write can leave a partial last line (no line end); it is noted, not
    cut here, so that a run refused for other reasons leaves the file as it found it.
    """
    existing = ExistingLabels()
    if not path.exists():
        return existing
    offset = 0
    for line_number, raw, has_end in _raw_lines(path.read_bytes()):
        if not has_end:
            existing.partial_tail_at = offset
            break
        try:
            record = json.loads(_utf8(raw))
            existing.ids.add(record["id"])
        except (ValueError, KeyError, TypeError) as error:
            raise ResumeError(
                f"{path}:{line_number} is not a label ({error}); it was not written by "
                "`cai-judge label`, so it is not resumed: choose another output file"
            ) from None
        for name, value in provenance(record).items():
            existing.provenance.setdefault(name, {}).setdefault(value, line_number)
        offset += len(raw) + 1
    return existing


def drop_partial_tail(path: Path, existing: ExistingLabels) -> None:
    """Cut a half-written last line, so appending continues on a clean line instead of
    gluing two records together."""
    if existing.partial_tail_at is not None:
        with path.open("r+b") as handle:
            handle.truncate(existing.partial_tail_at)
