"""Bradley–Terry training rows from labels (DESIGN.md §2), as pure functions.

Two conventions, one per column, so either trainer reads the file as it expects:
- `p_chosen` is the soft label for `−[p·log σ(r_c − r_r) + (1 − p)·log σ(r_r − r_c)]`.
- `margin` is TRL RewardTrainer's column: `loss = −log σ(r_chosen − r_rejected − margin)`;
  here it is the judge's log-odds |margin| in nats, which is ≥ 0 by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cai_judge.labeling.calibration_profile import CalibrationProfile, calibrate_label
from cai_judge.labeling.schema import Label, Pair

COLUMN_CONVENTIONS: dict[str, str] = {
    "id": "the pair id",
    "prompt": "the pair's prompt: a string, or a list of chat messages {role, content}",
    "chosen": "the response the judge preferred",
    "rejected": "the other response",
    "margin": "TRL RewardTrainer margin: loss = -log sigmoid(r_chosen - r_rejected - margin); "
    "the judge's log-odds |margin| in nats (>= 0)",
    "p_chosen": "soft Bradley-Terry label: loss = -[p log sigmoid(r_c - r_r) + (1 - p) log "
    "sigmoid(r_r - r_c)]; p = P(chosen is better) >= 0.5",
    "low_confidence": "true when the judge put under the threshold of probability on A/B",
    "constitution": "id@version of the constitution that made the label",
    "model": "the judge model",
}


def preference_row(pair: Pair, label: Label) -> dict[str, Any] | None:
    """One training row, or None for a tie (no preference to learn from)."""
    if label.id != pair.id:
        raise ValueError(f"label {label.id!r} does not belong to pair {pair.id!r}")
    if label.preferred == "tie":
        return None
    a_wins = label.preferred == "a"
    return {
        "id": pair.id,
        "prompt": pair.prompt
        if isinstance(pair.prompt, str)
        else [m.model_dump() for m in pair.prompt],
        "chosen": pair.response_a if a_wins else pair.response_b,
        "rejected": pair.response_b if a_wins else pair.response_a,
        "margin": abs(label.margin),
        "p_chosen": label.p_a if a_wins else 1 - label.p_a,
        "low_confidence": label.low_confidence,
        "constitution": f"{label.constitution.id}@{label.constitution.version}",
        "model": label.model,
    }


CALIBRATION_COLUMN = (
    "present when margin and p_chosen are calibrated: the sha256 of the calibration profile "
    "(`cai-judge calibrate`) that made them from the judge's raw numbers"
)
# Every column a row may have, for the `.columns.json` written beside an export.
EXPORT_COLUMNS = {**COLUMN_CONVENTIONS, "calibration": CALIBRATION_COLUMN}


@dataclass
class Exported:
    """The training rows of a label file, and what was left out and why."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    ties: int = 0
    dropped: int = 0
    missing: int = 0


def export_rows(
    labels: Iterable[Label],
    pairs: Mapping[str, Pair],
    *,
    profile: CalibrationProfile | None = None,
    count_tokens: Callable[[str], int] | None = None,
    drop_low_confidence: bool = False,
) -> Exported:
    """Each label's training row (`cai-judge export`); with `profile`, its calibrated
    numbers (a label already calibrated is recalibrated from its raw numbers), the
    responses' tokens counted by `count_tokens` when the profile has a length term.
    Raises CalibrationError when the profile was fitted for other labels."""
    found = Exported()
    for label in labels:
        pair = pairs.get(label.id)
        if pair is None:
            found.missing += 1
            continue
        if profile is not None:
            tokens_a = count_tokens(pair.response_a) if count_tokens else None
            tokens_b = count_tokens(pair.response_b) if count_tokens else None
            label = calibrate_label(label, profile, tokens_a, tokens_b)
        row = preference_row(pair, label)
        if row is not None and label.calibration is not None:
            row["calibration"] = label.calibration.profile
        if row is None:
            found.ties += 1
        elif drop_low_confidence and row["low_confidence"]:
            found.dropped += 1
        else:
            found.rows.append(row)
    return found
