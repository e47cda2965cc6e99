"""Agreement, calibration and bias metrics: pure functions over numpy arrays.

Conventions, shared by every function here:

- A verdict is "a", "b" or "tie". Agreement with a gold verdict scores 1, 0, or ½ for a
  tie (a tie is a coin flip, so it is worth half a correct answer in expectation).
- `target` is the reference probability that response a is better: 1 or 0 from a hard
  gold label, or the gold file's own `p_a` when it gives one.
- Empty inputs give `None` rather than NaN, because reports are JSON and JSON has no NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from cai_judge.constants import DEFAULT_SEED

Verdict = Literal["a", "b", "tie"]
FloatArray = npt.NDArray[np.float64]

# Cap on indices drawn at once by the bootstrap: 2,000 resamples of a 100k-pair gold set
# would otherwise need 1.6 GB.
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True, slots=True)
class Estimate:
    """A mean with its percentile-bootstrap interval."""

    value: float
    low: float
    high: float
    n: int


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    low: float
    high: float
    count: int
    mean_p: float | None
    mean_target: float | None


@dataclass(frozen=True, slots=True)
class Calibration:
    brier: float
    ece: float
    bins: tuple[ReliabilityBin, ...]


@dataclass(frozen=True, slots=True)
class LengthBias:
    """P(verdict picks the longer response), over pairs whose responses differ in length."""

    prefers_longer: float | None
    n: int


@dataclass(frozen=True, slots=True)
class MassSummary:
    mean: float | None
    min: float | None
    low_confidence_share: float | None
    threshold: float


def agreement_scores(verdicts: Sequence[Verdict], gold: Sequence[Verdict]) -> FloatArray:
    """1 where the verdict matches gold, 0 where it does not, ½ where either is a tie."""
    if len(verdicts) != len(gold):
        raise ValueError(f"{len(verdicts)} verdicts for {len(gold)} gold labels")
    return np.array(
        [
            0.5 if v == "tie" or g == "tie" else float(v == g)
            for v, g in zip(verdicts, gold, strict=True)
        ],
        dtype=np.float64,
    )


def bootstrap_interval(
    values: npt.ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling items).

    For a paired comparison of two judges on the same items, pass the per-item
    differences: resampling items keeps each pair's two scores together.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("bootstrap needs a non-empty 1-d array")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    n = data.size
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        means[start:stop] = data[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def estimate(
    values: npt.ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = DEFAULT_SEED,
) -> Estimate | None:
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return None
    low, high = bootstrap_interval(data, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return Estimate(value=float(data.mean()), low=low, high=high, n=int(data.size))


def grouped_estimates(
    values: npt.ArrayLike,
    groups: Sequence[str | None],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = DEFAULT_SEED,
) -> dict[str, Estimate]:
    """One estimate per group, in sorted group order; items without a group are skipped."""
    data = np.asarray(values, dtype=np.float64)
    if data.shape != (len(groups),):
        raise ValueError(f"{data.shape} values for {len(groups)} groups")
    names = sorted({g for g in groups if g is not None})
    result: dict[str, Estimate] = {}
    for name in names:
        mask = np.array([g == name for g in groups], dtype=bool)
        found = estimate(data[mask], confidence=confidence, n_resamples=n_resamples, seed=seed)
        if found is not None:
            result[name] = found
    return result


def brier_score(p: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Mean squared error of p_a against the reference probability."""
    probs, targets = _checked(p, target)
    return float(np.mean((probs - targets) ** 2))


def _bin_index(probs: FloatArray, n_bins: int) -> npt.NDArray[np.intp]:
    # Right-open bins [k/n, (k+1)/n), the last one closed so that p = 1 has a bin.
    return np.minimum((probs * n_bins).astype(np.intp), n_bins - 1)


def reliability_bins(
    p: npt.ArrayLike, target: npt.ArrayLike, n_bins: int = 10
) -> tuple[ReliabilityBin, ...]:
    """Equal-width bins of p_a over [0, 1]: mean predicted vs mean reference per bin.

    Binned on p_a itself rather than on max(p, 1−p): p_a is the soft label the reward
    model trains on, so what must be calibrated is "p_a = P(a is better)".
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    probs, targets = _checked(p, target)
    index = _bin_index(probs, n_bins)
    bins = []
    for k in range(n_bins):
        mask = index == k
        count = int(mask.sum())
        bins.append(
            ReliabilityBin(
                low=k / n_bins,
                high=(k + 1) / n_bins,
                count=count,
                mean_p=float(probs[mask].mean()) if count else None,
                mean_target=float(targets[mask].mean()) if count else None,
            )
        )
    return tuple(bins)


def expected_calibration_error(p: npt.ArrayLike, target: npt.ArrayLike, n_bins: int = 10) -> float:
    """Σ_bins (n_bin / N)·|mean p_a − mean reference| over the bins of `reliability_bins`."""
    probs, _ = _checked(p, target)
    total = probs.size
    return float(
        sum(
            b.count / total * abs(b.mean_p - b.mean_target)
            for b in reliability_bins(p, target, n_bins)
            if b.mean_p is not None and b.mean_target is not None
        )
    )


def calibration(p: npt.ArrayLike, target: npt.ArrayLike, n_bins: int = 10) -> Calibration:
    return Calibration(
        brier=brier_score(p, target),
        ece=expected_calibration_error(p, target, n_bins),
        bins=reliability_bins(p, target, n_bins),
    )


def length_bias(
    verdicts: Sequence[Verdict], length_a: Sequence[int], length_b: Sequence[int]
) -> LengthBias:
    """How often the verdict picks the longer response (a tie counts ½).

    Pairs of equal length say nothing about length and are left out. Run the same
    function on the gold verdicts: a judge is length-biased only relative to gold.
    """
    if not len(verdicts) == len(length_a) == len(length_b):
        raise ValueError("verdicts and lengths differ in count")
    longer: list[Verdict] = []
    picked: list[Verdict] = []
    for verdict, la, lb in zip(verdicts, length_a, length_b, strict=True):
        if la != lb:
            longer.append("a" if la > lb else "b")
            picked.append(verdict)
    if not longer:
        return LengthBias(prefers_longer=None, n=0)
    return LengthBias(prefers_longer=float(agreement_scores(picked, longer).mean()), n=len(longer))


def mass_summary(masses: npt.ArrayLike, threshold: float) -> MassSummary:
    data = np.asarray(masses, dtype=np.float64)
    if data.size == 0:
        return MassSummary(mean=None, min=None, low_confidence_share=None, threshold=threshold)
    return MassSummary(
        mean=float(data.mean()),
        min=float(data.min()),
        low_confidence_share=float((data < threshold).mean()),
        threshold=threshold,
    )


def per_principle_agreement(
    verdicts: Mapping[str, Sequence[Verdict]],
    gold: Sequence[Verdict],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = DEFAULT_SEED,
) -> dict[str, Estimate]:
    """Agreement of each principle's own (both-order) verdict with gold, in input order."""
    result: dict[str, Estimate] = {}
    for principle, principle_verdicts in verdicts.items():
        found = estimate(
            agreement_scores(principle_verdicts, gold),
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
        )
        if found is not None:
            result[principle] = found
    return result


def _checked(p: npt.ArrayLike, target: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    probs = np.asarray(p, dtype=np.float64)
    targets = np.asarray(target, dtype=np.float64)
    if probs.ndim != 1 or probs.shape != targets.shape or probs.size == 0:
        raise ValueError(
            f"need two non-empty 1-d arrays of one length: {probs.shape}, {targets.shape}"
        )
    if np.any((probs < 0) | (probs > 1)) or np.any((targets < 0) | (targets > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    return probs, targets
