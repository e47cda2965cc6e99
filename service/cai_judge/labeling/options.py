"""The one labeling options type, on every path (DESIGN.md §8: HTTP, gRPC, jobs, CLI, rewards).

Each wire builds this one frozen object, so a bound is checked by one model and a new
option cannot be forgotten by one front end. A command is `(options, pairs)`. A stored job
keeps `to_dict()`; `from_dict()` owns the defaults of records written before an option
existed, so old jobs still load.

`low_mass_threshold` and `cot_max_probability` are the server's tuning, not the caller's:
no wire accepts them and `to_dict()` leaves them out; the service (from its settings) or
the CLI (from its flags) fills them in with `tuned()` before the Judge sees the options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cai_judge.constants import (
    DEFAULT_COT_MAX_PROBABILITY,
    DEFAULT_COT_TOKENS,
    DEFAULT_LOW_MASS_THRESHOLD,
    DEFAULT_PRINCIPLES,
    DEFAULT_SEED,
    MAX_COT_TOKENS,
    MAX_PRINCIPLES,
    MAX_SEED,
)
from cai_judge.labeling.ensemble import DEFAULT_DELTA, Ensemble
from cai_judge.labeling.label_math import Aggregator

__all__ = ["CALLER_FIELDS", "DEFAULT_COT_TOKENS", "LabelOptions"]

# The bounds, shared with the wire models that describe these fields for OpenAPI.
ConstitutionRefText = Annotated[str, Field(min_length=1, max_length=200)]
Principles = Annotated[int, Field(ge=1, le=MAX_PRINCIPLES)] | Literal["all"]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Mode = Literal["plain", "cot"]
CotMaxTokens = Annotated[int, Field(ge=1, le=MAX_COT_TOKENS)]
EnsembleDelta = Annotated[float, Field(ge=1e-6, le=0.5)]

# What a caller chooses: the fields `to_dict()` keeps and every wire carries.
CALLER_FIELDS = (
    "constitution",
    "principles",
    "seed",
    "aggregator",
    "per_principle",
    "calibrated",
    "mode",
    "cot_max_tokens",
    "ensemble",
    "ensemble_delta",
)
# Options added after jobs were first stored: `to_dict()` leaves each out while it holds its
# default, so a job body that does not use it keeps the digest it had before the option
# existed (an Idempotency-Key retried across an upgrade still finds its job), and
# `from_dict()` gives it back its default.
OMITTED_AT_DEFAULT = ("ensemble", "ensemble_delta")


def check_ensemble(ensemble: str, mode: str) -> None:
    """Refuse adaptive CoT: CoT writes every rationale before any unit is scored, so
    rounds would serialize generation for little gain; the two are not combined."""
    if ensemble == "adaptive" and mode == "cot":
        raise ValueError("ensemble `adaptive` works with mode `plain` only, not `cot`")


class LabelOptions(BaseModel):
    """How every pair of one command is labeled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # None when the constitution is handed to the Judge separately (CLI, evaluation).
    constitution: ConstitutionRefText | None = Field(
        default=None,
        description="`id` (latest version) or `id@version` (a unique prefix of >= 8 hex digits).",
    )
    # Each field's default, type and description is the one declaration: the CLI derives its
    # flags from them (cli/common.py, `label_flags`), the HTTP and gRPC wires read the same
    # defaults, and tests/test_option_defaults.py holds every front to them.
    principles: Principles = Field(
        default=DEFAULT_PRINCIPLES,
        description=f"`all`, or k principles sampled per pair (1 to {MAX_PRINCIPLES}, seeded).",
    )
    seed: Seed = Field(
        default=DEFAULT_SEED,
        description="Seeds every random choice (principle sampling; eval's coin and bootstrap).",
    )
    aggregator: Aggregator = Field(
        default=Aggregator.MEAN_LOGODDS, description="How principles' margins combine."
    )
    per_principle: bool = Field(default=False, description="Include each principle's numbers.")
    calibrated: bool = Field(
        default=False, description="Take p_a, margin and preferred from a calibration profile."
    )
    mode: Mode = Field(
        default="plain",
        description="`plain` scores the answer at once; `cot` first generates a greedy "
        "rationale per principle and order (DESIGN.md §2, CoT mode): slower, and each "
        "order's probability clamped to [1 - p, p], p = CAI_JUDGE_COT_MAX_PROBABILITY.",
    )
    # None: DEFAULT_COT_TOKENS, capped by the service's limit.
    cot_max_tokens: CotMaxTokens | None = Field(
        default=None,
        description="CoT mode: rationale tokens per principle and order (default "
        f"{DEFAULT_COT_TOKENS}).",
    )
    ensemble: Ensemble = Field(
        default="full",
        description="`full` scores every selected principle; `adaptive` scores them in "
        "seeded rounds and stops once the side cannot change at confidence 1 - "
        "ensemble_delta (DESIGN.md §2): fewer score units, the label names those scored.",
    )
    ensemble_delta: EnsembleDelta = Field(
        default=DEFAULT_DELTA,
        description="Adaptive ensembles: the chance allowed of stopping on the side the "
        "full ensemble would not take.",
    )
    # The server's tuning (see the module docstring).
    low_mass_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = DEFAULT_LOW_MASS_THRESHOLD
    cot_max_probability: Annotated[float, Field(gt=0.5, lt=1.0)] = Field(
        default=DEFAULT_COT_MAX_PROBABILITY,
        description="CoT mode: each order's probability is clamped to [1 - this, this].",
    )

    @model_validator(mode="after")
    def _adaptive_is_plain(self) -> LabelOptions:
        check_ensemble(self.ensemble, self.mode)
        return self

    @property
    def k(self) -> int | None:
        return None if self.principles == "all" else self.principles

    @property
    def rationale_tokens(self) -> int:
        """CoT: the rationale budget per (principle, order) the Judge generates."""
        return self.cot_max_tokens or DEFAULT_COT_TOKENS

    def to_dict(self) -> dict[str, Any]:
        """The caller's options as JSON values: what a job stores and its digest reads."""
        stored = self.model_dump(mode="json", include=set(CALLER_FIELDS))
        for name in OMITTED_AT_DEFAULT:
            if getattr(self, name) == type(self).model_fields[name].default:
                del stored[name]
        return stored

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelOptions:
        """Options from `to_dict()`, or from a record written before some options existed:
        a missing field takes its default (jobs before CoT were plain and uncalibrated)."""
        return cls.model_validate({k: data[k] for k in CALLER_FIELDS if k in data})

    def tuned(self, *, low_mass_threshold: float, cot_max_probability: float) -> LabelOptions:
        """These options with the server's tuning filled in."""
        return self.model_copy(
            update={
                "low_mass_threshold": low_mass_threshold,
                "cot_max_probability": cot_max_probability,
            }
        )
