"""Fitting the length term without gold (`calibrate --unlabeled`, issue 32): β from the
judge's margins alone removes the margin's dependence on the log length ratio, so the
debiased judge picks the longer response about half the time; and a file of the policy's
sampled groups becomes the pairs within each group. Pure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cai_judge.cli.pairs_file import holds_groups, read_groups
from cai_judge.evaluation.calibration_fit import (
    LengthSample,
    debiased_margins,
    estimate_length_sensitivity,
    group_pairs,
)
from cai_judge.evaluation.metrics import length_bias
from cai_judge.labeling.label_math import preferred_from_margin
from cai_judge.labeling.reward_schema import RewardGroup

PRINCIPLES = ("p1", "p2")


def synthetic(betas: dict[str, float], n: int, seed: int, noise: float) -> list[LengthSample]:
    """Margins m_i = β_i·L + ε with ε ~ N(0, noise²) independent of L: a judge whose only
    systematic preference is length."""
    rng = np.random.default_rng(seed)
    samples = []
    for k in range(n):
        tokens_a, tokens_b = (int(t) for t in rng.integers(5, 400, size=2))
        length = math.log(tokens_a) - math.log(tokens_b)
        each = {p: betas[p] * length + float(rng.normal(0.0, noise)) for p in PRINCIPLES}
        samples.append(
            LengthSample(
                pair_id=f"x{k}",
                group=f"x{k}",
                margin=sum(each.values()) / len(each),
                tokens_a=tokens_a,
                tokens_b=tokens_b,
                principles=PRINCIPLES,
                principle_margins=tuple(each.items()),
            )
        )
    return samples


def prefers_longer(samples: list[LengthSample], margins: list[float]) -> float:
    verdicts = [preferred_from_margin(m) for m in margins]
    found = length_bias(verdicts, [s.tokens_a for s in samples], [s.tokens_b for s in samples])
    assert found.prefers_longer is not None
    return found.prefers_longer


@settings(max_examples=10)
@given(
    beta1=st.floats(0.3, 2.0),
    beta2=st.floats(0.3, 2.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_fit_recovers_beta_and_the_debiased_judge_stops_picking_the_longer(
    beta1: float, beta2: float, seed: int
):
    betas = {"p1": beta1, "p2": beta2}
    samples = synthetic(betas, 1000, seed, noise=0.5)
    fitted = estimate_length_sensitivity(samples)
    # The slope's standard error is noise / sqrt(Σ L²) ≈ 0.5 / sqrt(1000 · 2.2) ≈ 0.011.
    assert fitted == pytest.approx(betas, abs=0.05)
    debiased = [float(m) for m in debiased_margins(samples, fitted)]
    # No linear dependence on L is left: Σ (m − β̄·L)·L = 0 (the normal equation).
    lengths = np.array([s.length_feature for s in samples])
    assert abs(float(np.dot(debiased, lengths))) < 1e-6 * float(lengths @ lengths)
    raw = prefers_longer(samples, [s.margin for s in samples])
    assert raw > 0.65  # β̄ ≥ 0.3 against noise 0.5: the raw judge picks the longer
    assert prefers_longer(samples, debiased) == pytest.approx(0.5, abs=0.06)


def test_group_pairs_are_every_pair_within_the_group_once():
    group = RewardGroup(
        id="g",
        prompt="Why is the sky blue?",
        completions=["Rayleigh scattering.", "", "Because of the air.", "Rayleigh scattering.",
                     "Short blue light scatters more off air molecules."],
    )  # fmt: skip
    pairs = group_pairs(group)
    # 5 completions make 10 pairs; the empty one (4) and the identical texts 0 and 3 are left out.
    assert [p.id for p in pairs] == ["g:0-2", "g:0-4", "g:2-3", "g:2-4", "g:3-4"]
    for pair in pairs:
        i, j = (int(x) for x in pair.id.split(":")[1].split("-"))
        assert (pair.response_a, pair.response_b) == (group.completions[i], group.completions[j])
        assert pair.prompt == group.prompt


def test_a_groups_file_reads_as_the_pairs_within_each_group(tmp_path: Path):
    path = tmp_path / "samples.jsonl"
    lines = [
        {"id": "a", "prompt": "q1", "completions": ["one", "two words", "three words here"]},
        {"id": "b", "prompt": [{"role": "user", "content": "q2"}], "completions": ["x", "y y"]},
        {"id": "c", "prompt": "q3", "completions": ["only one"]},
        {"id": "a", "prompt": "q4", "completions": ["p", "q"]},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert holds_groups(path)
    found = read_groups(path)
    assert [p.id for p in found.pairs] == ["a:0-1", "a:0-2", "a:1-2", "b:0-1", "a:0-1"]
    assert [b.line_number for b in found.bad_lines] == [3]
    assert "at least 2" in found.bad_lines[0].reason
    assert found.duplicate_ids == {"a": [1, 4]}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "p", "prompt": "q", "response_a": "a", "response_b": "b"}))
    assert not holds_groups(pairs)
