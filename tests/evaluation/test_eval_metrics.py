"""Evaluation metrics on hand-built inputs with known answers (pure, no engine)."""

from __future__ import annotations

import numpy as np
import pytest

from cai_judge.evaluation import metrics
from cai_judge.evaluation.metrics import (
    agreement_scores,
    bootstrap_interval,
    brier_score,
    calibration,
    estimate,
    expected_calibration_error,
    grouped_estimates,
    length_bias,
    mass_summary,
    per_principle_agreement,
    reliability_bins,
)


def test_agreement_counts_a_tie_as_half():
    scores = agreement_scores(["a", "b", "tie", "a"], ["a", "a", "b", "b"])
    assert scores.tolist() == [1.0, 0.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="3 verdicts for 2"):
        agreement_scores(["a", "b", "a"], ["a", "b"])


def test_brier_score_hand_computed():
    # (1−1)² + (0−1)² + (0.5−0)², over 3
    assert brier_score([1.0, 0.0, 0.5], [1.0, 1.0, 0.0]) == pytest.approx(1.25 / 3)
    # A soft reference: the score is the squared distance to it.
    assert brier_score([0.7], [0.7]) == 0.0


def test_ece_hand_computed():
    p = [0.15, 0.15, 0.85, 0.85, 0.85, 0.85]
    target = [0, 0, 1, 1, 1, 0]
    # bin [0.1, 0.2): |0.15 − 0| with weight 2/6; bin [0.8, 0.9): |0.85 − 0.75| with 4/6
    assert expected_calibration_error(p, target) == pytest.approx(2 / 6 * 0.15 + 4 / 6 * 0.10)


def test_ece_is_zero_when_each_bin_matches_its_frequency():
    p = [0.25] * 4 + [0.75] * 4
    target = [1, 0, 0, 0, 1, 1, 1, 0]
    assert expected_calibration_error(p, target) == pytest.approx(0.0, abs=1e-12)
    # ...and maximal for a confidently wrong judge.
    assert expected_calibration_error([1.0, 0.0], [0, 1]) == pytest.approx(1.0)


def test_reliability_bins_cover_both_ends_and_count_everything():
    bins = reliability_bins([0.0, 0.05, 0.1, 0.5, 0.99, 1.0], [0, 0, 1, 1, 1, 1], n_bins=10)
    assert len(bins) == 10
    assert [b.count for b in bins] == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins[0].low == 0.0 and bins[-1].high == 1.0
    assert bins[0].mean_p == pytest.approx(0.025) and bins[0].mean_target == 0.0
    assert bins[2].mean_p is None and bins[2].mean_target is None
    assert bins[9].mean_p == pytest.approx(0.995) and bins[9].mean_target == 1.0


def test_calibration_bundles_brier_ece_and_bins():
    found = calibration([0.2, 0.8], [0, 1], n_bins=5)
    assert found.brier == pytest.approx(0.04)
    assert found.ece == pytest.approx(0.2)
    assert len(found.bins) == 5


def test_calibration_refuses_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        brier_score([], [])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.2], [1])
    with pytest.raises(ValueError, match="one length"):
        brier_score([0.5, 0.5], [1])


def test_bootstrap_interval_is_reproducible_and_brackets_the_mean():
    data = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=float)
    first = bootstrap_interval(data, seed=3)
    assert first == bootstrap_interval(data, seed=3)
    assert first[0] <= data.mean() <= first[1]
    assert bootstrap_interval(np.ones(20)) == (1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_bootstrap_chunking_does_not_change_the_draws(monkeypatch: pytest.MonkeyPatch):
    data = np.random.default_rng(1).random(50)
    whole = bootstrap_interval(data, n_resamples=500)
    monkeypatch.setattr(metrics, "_BOOTSTRAP_CHUNK_ELEMENTS", 170)  # 3 resamples a chunk
    assert bootstrap_interval(data, n_resamples=500) == whole


def test_bootstrap_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    # 200 synthetic gold sets of 80 pairs, each judged right with probability 0.7.
    rng = np.random.default_rng(2024)
    true_accuracy = 0.7
    covered = 0
    for dataset in range(200):
        correct = (rng.random(80) < true_accuracy).astype(float)
        low, high = bootstrap_interval(correct, n_resamples=1000, seed=dataset)
        covered += low <= true_accuracy <= high
    # The percentile bootstrap runs a little under nominal at this n; 0.90–0.99 allows for
    # that and for the binomial noise of 200 trials (sd ≈ 1.5 points).
    assert 0.90 <= covered / 200 <= 0.99


def test_estimate_and_groups():
    found = estimate([1.0, 0.0, 1.0, 1.0])
    assert found is not None and found.value == 0.75 and found.n == 4
    assert found.low <= 0.75 <= found.high
    assert estimate([]) is None
    groups = grouped_estimates([1.0, 0.0, 1.0, 0.5], ["x", "y", "x", None])
    assert list(groups) == ["x", "y"]
    assert groups["x"].value == 1.0 and groups["x"].n == 2
    assert groups["y"].value == 0.0 and groups["y"].n == 1


def test_length_bias_skips_equal_lengths_and_counts_ties_half():
    verdicts = ["a", "b", "tie", "a", "b"]
    length_a = [10, 10, 10, 5, 7]
    length_b = [5, 20, 3, 5, 2]
    # longer: a, b, a, (equal: skipped), a → picked longer, longer, tie, –, shorter
    found = length_bias(verdicts, length_a, length_b)
    assert found.n == 4
    assert found.prefers_longer == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert length_bias(["a"], [3], [3]).prefers_longer is None


def test_gold_and_judge_length_bias_are_the_same_function():
    gold = ["a", "a", "b", "b"]
    length_a = [100, 10, 100, 10]
    length_b = [10, 100, 10, 100]
    assert length_bias(gold, length_a, length_b).prefers_longer == 0.5
    always_longer = ["a", "b", "a", "b"]
    assert length_bias(always_longer, length_a, length_b).prefers_longer == 1.0


def test_per_principle_agreement():
    gold = ["a", "b", "a", "b"]
    found = per_principle_agreement(
        {"kind": ["a", "b", "a", "b"], "honest": ["b", "b", "tie", "a"]}, gold, n_resamples=200
    )
    assert list(found) == ["kind", "honest"]
    assert found["kind"].value == 1.0 and found["kind"].n == 4
    assert found["honest"].value == pytest.approx((0 + 1 + 0.5 + 0) / 4)


def test_mass_summary():
    found = mass_summary([0.9, 0.4, 0.7, 0.2], threshold=0.5)
    assert found.mean == pytest.approx(0.55)
    assert found.min == pytest.approx(0.2)
    assert found.low_confidence_share == 0.5
    assert mass_summary([], 0.5).mean is None
