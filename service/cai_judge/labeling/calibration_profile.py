"""Calibration profiles and applying one to a label: the serve-time half of calibration.

A judge's raw `p_a = σ(margin)` (DESIGN.md §2) is rarely calibrated (a small instruct judge:
ECE 0.38, and it picked the longer response 84% of the time where people did 50%). A profile
(schema 2, fitted by evaluation/calibration_fit.py) maps the margin to `z = w·(margin − β̄_S·L)`,
L = log(tokens_a / tokens_b): β_i is the judge's own length sensitivity per principle,
removed rather than imitated (schema 1's gold-fitted λ is refused), w an inverse
temperature. A swap gives 1 − p_a to the bit. A profile names the model, template,
constitution, aggregator and principle selection it was fitted for, and nothing else gets it.

The reasoning at length: docs/internals.md, section "labeling/calibration_profile.py".
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cai_judge.labeling.label_math import Aggregator, preferred_from_margin, sigmoid
from cai_judge.labeling.schema import ConstitutionRef, Label, LabelCalibration, TemplateRef

if TYPE_CHECKING:
    from cai_judge.labeling.constitution import ConstitutionSpec
    from cai_judge.labeling.options import LabelOptions

PROFILE_FORMAT: Final = "cai-judge-calibration-profile"
PROFILE_SCHEMA_VERSION: Final = 2


class CalibrationError(ValueError):
    """A profile that cannot be read or cannot be applied; the message names the fix."""


class ProfileMismatch(CalibrationError):
    """A profile fitted for another model, template, constitution version, aggregator or
    principle selection than the labels it was asked to calibrate."""

    def __init__(self, message: str, fields: Sequence[str]) -> None:
        super().__init__(message)
        self.fields = tuple(fields)


class CalibrationTerms(BaseModel):
    """The fitted numbers of z (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inverse_temperature: Annotated[float, Field(allow_inf_nan=False)] = Field(
        description="w = 1/T: the weight of the (debiased) margin; 1 for a profile fitted "
        "without gold; negative only in a profile fitted with --allow-reversal, which turns "
        "the judge's preferences around."
    )
    length_sensitivity: dict[str, Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None,
        description="β per principle id: the judge's own slope of that principle's margin on "
        "log(tokens_a / tokens_b), subtracted from the margin; null without length control.",
    )

    @property
    def temperature(self) -> float | None:
        """T = 1/w; None when w = 0 (the margin carries no weight at all)."""
        return 1.0 / self.inverse_temperature if self.inverse_temperature != 0 else None

    @property
    def reverses_judge(self) -> bool:
        return self.inverse_temperature < 0

    def mean_sensitivity(self, principles: Sequence[str]) -> float:
        """β̄_S over the label's principles S, summed in their (constitution) order."""
        if self.length_sensitivity is None:
            return 0.0
        if not principles:
            raise CalibrationError("a label with no principles cannot be length-debiased")
        missing = [p for p in principles if p not in self.length_sensitivity]
        if missing:
            raise CalibrationError(
                f"the profile has no length sensitivity for principle(s) {', '.join(missing)}"
            )
        return sum(self.length_sensitivity[p] for p in principles) / len(principles)


class FitRecord(BaseModel):
    """Where a profile's temperature came from, so a reader can judge how far to trust it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gold_sha256: str
    gold_pairs: int = Field(description="gold pairs the final fit used")
    folds: int
    seed: int
    ece_raw: float
    ece_cross_validated: float
    brier_raw: float
    brier_cross_validated: float


class LengthFitRecord(BaseModel):
    """The pairs the length sensitivities were estimated on (their labels, if any, unused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["gold", "unlabeled"] = Field(
        description="gold: the gold set's own pairs; unlabeled: `--unlabeled PAIRS.jsonl`"
    )
    path: str = Field(description="the file's name as given to `cai-judge calibrate`")
    sha256: str = Field(description="sha256 of the file's bytes")
    pairs: int = Field(description="pairs scored and used")


class ProfileKey(BaseModel):
    """What a profile must agree with to be applied: everything the margin's scale depends on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    template: TemplateRef
    constitution: ConstitutionRef
    aggregator: Aggregator
    selection: int | Literal["all"]

    @classmethod
    def for_labels(
        cls, model: str, spec: ConstitutionSpec, template_version: str, options: LabelOptions
    ) -> ProfileKey:
        """The key of the labels `model` makes with constitution `spec` (its template at
        `template_version`, which only the tokenizer knows) and `options`: the one way the
        service, `label`, `eval` and `calibrate` name the profile their labels need."""
        return cls(
            model=model,
            template=TemplateRef(id=spec.template, version=template_version),
            constitution=ConstitutionRef(id=spec.id, version=spec.version),
            aggregator=options.aggregator,
            selection=options.principles,
        )

    def describe(self) -> dict[str, str]:
        return {
            "model": self.model,
            "template": f"{self.template.id}@{self.template.version}",
            "constitution": f"{self.constitution.id}@{self.constitution.version}",
            "aggregator": self.aggregator.value,
            "selection": str(self.selection),
        }


# How each key field is set, so a mismatch message names what to change.
_KEY_FIELD_SOURCES = {
    "model": "the judge model (--model, CAI_JUDGE_MODEL)",
    "template": "the judge template version (the model's chat format, CAI_JUDGE_CHAT_TEMPLATE)",
    "constitution": "the constitution version",
    "aggregator": "the aggregator",
    "selection": "the principle selection (`principles`)",
}


def _short(value: str) -> str:
    name, at, version = value.rpartition("@")
    if at and len(version) > 12 and all(c in "0123456789abcdef" for c in version):
        return f"{name}@{version[:12]}"
    return value


def key_mismatches(profile: ProfileKey, wanted: ProfileKey) -> list[str]:
    """One phrase per key field that differs, 'profile has X, labels have Y'."""
    have, want = profile.describe(), wanted.describe()
    return [
        f"{_KEY_FIELD_SOURCES[name]}: the profile was fitted for {_short(have[name])}, "
        f"these labels use {_short(want[name])}"
        for name in have
        if have[name] != want[name]
    ]


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class CalibrationProfile(BaseModel):
    """A fitted calibration, frozen and named by the sha256 of its content.

    Build one with `CalibrationProfile.create(...)`; reading a file checks that the stored
    hash is the content's, so an edited profile is refused rather than applied under a
    name that no longer describes it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["cai-judge-calibration-profile"] = PROFILE_FORMAT
    schema_version: Literal[2] = PROFILE_SCHEMA_VERSION
    key: ProfileKey
    terms: CalibrationTerms
    fitted_on: FitRecord | None = Field(
        description="the gold set the temperature was fitted on; null when there was none"
    )
    length_fitted_on: LengthFitRecord | None = Field(
        description="the pairs β was estimated on; null without length control"
    )
    hash: str = Field(description="sha256 of the canonical JSON of every other field")

    @classmethod
    def create(
        cls,
        key: ProfileKey,
        terms: CalibrationTerms,
        fitted_on: FitRecord | None,
        length_fitted_on: LengthFitRecord | None = None,
    ) -> CalibrationProfile:
        content = {
            "format": PROFILE_FORMAT,
            "schema_version": PROFILE_SCHEMA_VERSION,
            "key": key.model_dump(mode="json"),
            "terms": terms.model_dump(mode="json"),
            "fitted_on": None if fitted_on is None else fitted_on.model_dump(mode="json"),
            "length_fitted_on": (
                None if length_fitted_on is None else length_fitted_on.model_dump(mode="json")
            ),
        }
        return cls.model_validate({**content, "hash": _content_hash(content)})

    @model_validator(mode="before")
    @classmethod
    def _known_schema(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("schema_version") == 1:
            raise ValueError(
                "this is a schema 1 profile, whose length term (λ, fitted to gold and kept) "
                "imitated gold's length preference; schema 2 removes the judge's own length "
                "bias instead. Refit it with `cai-judge calibrate`"
            )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> CalibrationProfile:
        if (self.terms.length_sensitivity is None) != (self.length_fitted_on is None):
            raise ValueError("length_sensitivity and length_fitted_on must be set together")
        if self.fitted_on is None and self.terms.inverse_temperature != 1.0:
            raise ValueError("a profile fitted on no gold must have inverse_temperature 1")
        content = self.model_dump(mode="json", exclude={"hash"})
        if self.hash != _content_hash(content):
            raise ValueError(
                "the stored hash does not match the profile's content: the file was edited "
                "after it was fitted; refit it with `cai-judge calibrate`"
            )
        return self

    @property
    def length_control(self) -> bool:
        """Whether the profile debiases length, and so needs the responses' token counts."""
        return self.terms.length_sensitivity is not None

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def check_applies_to(self, wanted: ProfileKey) -> None:
        found = key_mismatches(self.key, wanted)
        if found:
            raise ProfileMismatch(
                f"calibration profile {self.short_hash} does not apply: " + "; ".join(found),
                sorted(_mismatched(self.key, wanted)),
            )

    def logit(
        self,
        margin: float,
        tokens_a: int | None = None,
        tokens_b: int | None = None,
        principles: Sequence[str] = (),
    ) -> float:
        """The calibrated log-odds z that response a is better (module docstring)."""
        length = log_length_ratio(tokens_a, tokens_b) if self.length_control else 0.0
        return terms_logit(self.terms, margin, length, principles)


def _mismatched(have: ProfileKey, want: ProfileKey) -> set[str]:
    a, b = have.describe(), want.describe()
    return {name for name in a if a[name] != b[name]}


def _content_hash(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def log_length_ratio(tokens_a: int | None, tokens_b: int | None) -> float:
    """log(tokens_a / tokens_b), as a difference of logs so that swapping negates it exactly."""
    if tokens_a is None or tokens_b is None:
        raise CalibrationError(
            "this profile debiases length and needs both responses' token counts"
        )
    if tokens_a < 1 or tokens_b < 1:
        raise CalibrationError(f"token counts must be at least 1, got {tokens_a}, {tokens_b}")
    return math.log(tokens_a) - math.log(tokens_b)


def debiased_margin(margin: float, sensitivity: float, length_feature: float) -> float:
    """m − β·L: odd in (m, L) together, so a swap negates it bit for bit."""
    return margin - sensitivity * length_feature


def terms_logit(
    terms: CalibrationTerms, margin: float, length_feature: float, principles: Sequence[str]
) -> float:
    """z = w·(m − β̄_S·L), or w·m without length control: odd in (m, L) bit for bit.

    The one function the service, `label`, `export` and the fit all apply."""
    if terms.length_sensitivity is not None:
        margin = debiased_margin(margin, terms.mean_sensitivity(principles), length_feature)
    return terms.inverse_temperature * margin


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def response_token_count(tokenizer: Tokenizer, text: str) -> int:
    """A response's length for the length term: its tokens alone, without special tokens.

    The one definition shared by the fit, the service and `export`, so a profile's β always
    multiplies the same quantity. At least 1, so the log-ratio is finite.
    """
    return max(1, len(tokenizer.encode(text, add_special_tokens=False)))


def label_key(label: Label) -> ProfileKey:
    return ProfileKey(
        model=label.model,
        template=label.template,
        constitution=label.constitution,
        aggregator=label.aggregator,
        selection=label.selection,
    )


def calibrate_label(
    label: Label,
    profile: CalibrationProfile,
    tokens_a: int | None = None,
    tokens_b: int | None = None,
) -> Label:
    """The label with `margin`, `p_a` and `preferred` from the profile; the raw margin and
    p_a, and the profile's hash, are kept in `calibration`. Pure.

    A label already calibrated is recalibrated from its raw numbers, never calibrated twice.
    Raises ProfileMismatch when the profile was fitted for other labels.
    """
    raw_margin, raw_p_a = label.margin, label.p_a
    if label.calibration is not None:
        raw_margin, raw_p_a = label.calibration.raw_margin, label.calibration.raw_p_a
    profile.check_applies_to(label_key(label))
    z = profile.logit(raw_margin, tokens_a, tokens_b, label.principles)
    return label.model_copy(
        update={
            "margin": z,
            "p_a": sigmoid(z),
            "preferred": preferred_from_margin(z),
            "calibration": LabelCalibration(
                profile=profile.hash, raw_margin=raw_margin, raw_p_a=raw_p_a
            ),
        }
    )


def raw_label(label: Label) -> Label:
    """The label as the judge made it, before any profile."""
    if label.calibration is None:
        return label
    raw = label.calibration
    return label.model_copy(
        update={
            "margin": raw.raw_margin,
            "p_a": raw.raw_p_a,
            "preferred": preferred_from_margin(raw.raw_margin),
            "calibration": None,
        }
    )


# -- files -------------------------------------------------------------------------------


def read_profile(path: Path) -> CalibrationProfile:
    """One profile file, its hash checked; every problem is a CalibrationError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CalibrationError(f"cannot read calibration profile {path}: {error}") from None
    try:
        return CalibrationProfile.model_validate_json(text)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}"
            for e in error.errors()[:5]
        )
        raise CalibrationError(
            f"{path} is not a valid calibration profile ({problems}); write one with "
            "`cai-judge calibrate`"
        ) from None


class ProfileSet:
    """The profiles of a folder, loaded once; finds the one that fits a labeling run."""

    def __init__(self, profiles: Iterable[tuple[Path, CalibrationProfile]]) -> None:
        self.profiles: list[tuple[Path, CalibrationProfile]] = []
        seen: dict[str, Path] = {}
        for path, profile in profiles:
            key = canonical_json(profile.key.model_dump(mode="json"))
            if key in seen:
                raise CalibrationError(
                    f"{seen[key]} and {path} are both profiles for the same model, template, "
                    "constitution version, aggregator and selection; keep one of them"
                )
            seen[key] = path
            self.profiles.append((path, profile))

    @classmethod
    def from_dir(cls, directory: Path) -> ProfileSet:
        """Every `*.json` in the folder must be a valid profile: a start-up error beats a
        profile silently missing when a request asks for it."""
        if not directory.is_dir():
            raise CalibrationError(
                f"calibration folder {directory} does not exist or is not a folder "
                "(CAI_JUDGE_CALIBRATION_DIR)"
            )
        return cls((path, read_profile(path)) for path in sorted(directory.glob("*.json")))

    def __len__(self) -> int:
        return len(self.profiles)

    def select(self, wanted: ProfileKey) -> CalibrationProfile:
        """The profile fitted for exactly `wanted`, or ProfileMismatch naming what differs."""
        for _, profile in self.profiles:
            if profile.key == wanted:
                return profile
        if not self.profiles:
            raise ProfileMismatch(
                "no calibration profiles are loaded; fit one with `cai-judge calibrate` and "
                "put it in CAI_JUDGE_CALIBRATION_DIR",
                [],
            )
        # The closest profile (fewest differences) says what the caller would have to change.
        path, closest = min(self.profiles, key=lambda item: len(_mismatched(item[1].key, wanted)))
        found = key_mismatches(closest.key, wanted)
        raise ProfileMismatch(
            f"no calibration profile fits these labels ({len(self.profiles)} loaded); the "
            f"closest, {path.name} ({closest.short_hash}), differs in: " + "; ".join(found),
            sorted(_mismatched(closest.key, wanted)),
        )
