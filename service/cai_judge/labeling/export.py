"""Bradley–Terry training rows from labels (DESIGN.md §2), as pure functions.

Two conventions, one per column, so either trainer reads the file as it expects:
- `p_chosen` is the soft label for `−[p·log σ(r_c − r_r) + (1 − p)·log σ(r_r − r_c)]`.
- `margin` is TRL RewardTrainer's column: `loss = −log σ(r_chosen − r_rejected − margin)`;
  here it is the judge's log-odds |margin| in nats, which is ≥ 0 by construction.
"""

from __future__ import annotations

from typing import Any

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
