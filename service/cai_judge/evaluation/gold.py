"""Gold files: pairs with a human or reference preference, validated line by line.

Unlike `cai-judge label`, a bad gold line is fatal: metrics over a silently shrunken
gold set would be compared with metrics over the whole one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from cai_judge.labeling.schema import Pair
from cai_judge.labeling.validation import describe_validation_error, read_json_lines

GoldPreference = Literal["a", "b"]


class GoldPair(Pair):
    """A pair plus its reference label. Unknown fields (e.g. `note`, `source`) are accepted
    and ignored, so annotation files can carry their own bookkeeping."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    preferred: GoldPreference
    p_a: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        default=None, description="Soft reference label, e.g. the share of annotators for a."
    )
    category: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _p_a_agrees_with_preferred(self) -> GoldPair:
        # A soft label that points the other way is an annotation error, not a nuance.
        if self.p_a is not None and (
            (self.preferred == "a" and self.p_a < 0.5) or (self.preferred == "b" and self.p_a > 0.5)
        ):
            raise ValueError(f"p_a={self.p_a} contradicts preferred={self.preferred!r}")
        return self

    @property
    def target(self) -> float:
        """Probability that a is better, by the reference: p_a when given, else 1 or 0."""
        if self.p_a is not None:
            return self.p_a
        return 1.0 if self.preferred == "a" else 0.0

    def as_pair(self) -> Pair:
        """The plain pair the judge sees: no reference fields leak into the judge's input."""
        return Pair(
            id=self.id, prompt=self.prompt, response_a=self.response_a, response_b=self.response_b
        )


@dataclass(frozen=True, slots=True)
class GoldProblem:
    line_number: int
    reason: str


@dataclass
class GoldFile:
    pairs: list[GoldPair] = field(default_factory=list)
    problems: list[GoldProblem] = field(default_factory=list)


def read_gold(path: Path) -> GoldFile:
    """Parse every line; every problem (bad JSON, bad field, duplicate id) is collected
    with its line number so one run shows them all."""
    result = GoldFile()
    first_line: dict[str, int] = {}
    for line_number, raw, not_json in read_json_lines(path):
        if not_json is not None:
            result.problems.append(GoldProblem(line_number, not_json))
            continue
        if not isinstance(raw, dict):
            result.problems.append(GoldProblem(line_number, "expected a JSON object"))
            continue
        try:
            pair = GoldPair.model_validate(raw)
        except ValidationError as error:
            result.problems.append(
                GoldProblem(line_number, describe_validation_error(error, whole="(line)"))
            )
            continue
        if pair.id in first_line:
            result.problems.append(
                GoldProblem(
                    line_number,
                    f"id: duplicate {pair.id!r}, first on line {first_line[pair.id]}",
                )
            )
            continue
        first_line[pair.id] = line_number
        result.pairs.append(pair)
    return result
