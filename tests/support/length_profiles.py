"""A length-only calibration profile (T = 1, β per principle) for a running app's judge, so a
test can serve `calibrated: true` on the fake engine and predict every number it changes.

Distinct β per principle (0.05, 0.10, …) make β̄ depend on which principles a label used, so
a test that picks the wrong mean, or debiases after aggregation, sees the difference."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cai_judge.labeling.calibration_profile import (
    CalibrationProfile,
    CalibrationTerms,
    LengthFitRecord,
    ProfileKey,
    response_token_count,
)
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.schema import ConstitutionRef, TemplateRef


def length_profile(
    services: Any,
    constitution: str = "harmless",
    *,
    selection: int | str = "all",
    aggregator: Aggregator = Aggregator.MEAN_LOGODDS,
) -> CalibrationProfile:
    """The profile the service would select for these options, with a length term only."""
    spec = services.labels.registry.resolve(constitution)
    key = ProfileKey(
        model=services.judge.engine.model_name,
        template=TemplateRef(
            id=spec.template, version=services.judge.renderer(spec.template).version
        ),
        constitution=ConstitutionRef(id=spec.id, version=spec.version),
        aggregator=aggregator,
        selection=selection,
    )
    betas = {pid: 0.05 * (i + 1) for i, pid in enumerate(spec.principle_ids)}
    record = LengthFitRecord(source="unlabeled", path="samples.jsonl", sha256="1" * 64, pairs=64)
    return CalibrationProfile.create(
        key, CalibrationTerms(inverse_temperature=1.0, length_sensitivity=betas), None, record
    )


def write_profile(profile: CalibrationProfile, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{profile.key.constitution.id}-{profile.short_hash}.json"
    path.write_text(profile.to_json())
    return path


def length_term(
    profile: CalibrationProfile, tokenizer: Any, principles: list[str], a: str, b: str
) -> float:
    """β̄_S·log(tokens_a / tokens_b): what the profile subtracts from the margin of (a, b)."""
    beta = profile.terms.mean_sensitivity(principles)
    counts = response_token_count(tokenizer, a), response_token_count(tokenizer, b)
    return beta * (math.log(counts[0]) - math.log(counts[1]))


def logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)
