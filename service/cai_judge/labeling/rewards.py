"""Rewards from labels: match schedules, outcomes → rewards, Bradley–Terry (DESIGN.md §9).

RL trainers want one number per completion; a constitution judges pairs (§2). This module
is the pure part of the rewards path, with no I/O and no engine, so every number in it is
pinned by tests on hand-computed cases and properties:

- Which pairs to judge in **group** mode: every completion of a group meets `opponents`
  others, `"all"` (round robin, G(G−1)/2 matches) or `m` (a seeded, balanced schedule in
  which every completion plays exactly m matches, G·m/2 matches). Balance matters: a
  completion that met fewer or weaker opponents would get a noisier reward for reasons
  unrelated to its quality.
- In which order to send a group's matches: a match (i, j) in order `ab` renders
  prompt + i + j, so every unit whose first shown completion is i shares the prefix
  prompt + i. `prefix_order` lists the units so that those sharing a first completion are
  contiguous, which lets the engine's prefix cache compute prompt + i once (§3, §9).
- Outcomes → rewards: a match's outcome for a is the label's `p_a`, for b `1 − p_a`; the
  reward is a completion's mean outcome. A round-robin group's rewards average exactly 0.5
  (every match hands out exactly 1). `bradley_terry` fits strengths on the same soft
  outcomes instead (Newton on the penalised log-likelihood; the ridge keeps a sweep, one
  completion winning everything, finite) and reports them centred.
- **reference** mode is a label with the completion as a: reward = `p_a`; nothing to
  compute here beyond `reference_reward`, kept so both modes read alike.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Order = Literal["ab", "ba"]
# One match: the indices, within a group, of the completions shown as a and as b.
Match = tuple[int, int]
Opponents = int | Literal["all"]

# The smallest group that can be judged against itself.
MIN_GROUP = 2
# Ridge on Bradley–Terry log-strengths: small enough to leave well-determined strengths
# alone (a 3-completion round robin moves by < 1e-2), large enough that a completion that
# wins every match with p_a = 1 gets a finite strength.
DEFAULT_RIDGE = 1e-2
# Relative step below which Newton's iterate has stopped moving (`bradley_terry`).
STEP_TOLERANCE = 1e-12
# Gradient under which a fit whose line search stalls is at its minimum.
STALL_GRADIENT = 1e-6


class ScheduleError(ValueError):
    """A schedule that cannot exist; names the request field and the limit."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def round_robin(size: int) -> list[Match]:
    """Every pair of a group once, a before b in index order: G(G−1)/2 matches."""
    return [(a, b) for a in range(size) for b in range(a + 1, size)]


def balanced_schedule(
    size: int, opponents: int, seed: int, *, param: str = "opponents"
) -> list[Match]:
    """A seeded schedule in which each of `size` completions plays exactly `opponents`
    matches against distinct opponents: G·m/2 matches.

    Built as a circulant graph on a seeded permutation of the completions: each one meets
    its neighbours at offsets ±1 … ±⌊m/2⌋ around the shuffled circle, plus the one opposite
    it when m is odd. Every vertex then has degree exactly m, no pair repeats (all offsets
    differ and stay below G/2, the opposite one aside), and which completions meet is
    decided by the seed alone, never by their text or position in the batch.
    Refused (naming `param` and the limit) when no such schedule exists: m < 1, m ≥ G
    (there are only G − 1 opponents), or G·m odd (matches hand out two seats each).
    """
    if size < MIN_GROUP:
        raise ScheduleError(
            f"a group needs at least {MIN_GROUP} completions to be judged, got {size}",
            param="completions",
        )
    if opponents < 1 or opponents >= size:
        raise ScheduleError(
            f"{param} must be between 1 and {size - 1} (the group's size minus one) "
            f"for a group of {size}, got {opponents}",
            param=param,
        )
    if size * opponents % 2:
        raise ScheduleError(
            f"{param}={opponents} with {size} completions needs {size}·{opponents}/2 matches, "
            f"not a whole number: use an even {param} for an odd group size",
            param=param,
        )
    circle = list(range(size))
    random.Random(seed).shuffle(circle)
    offsets = list(range(1, opponents // 2 + 1))
    if opponents % 2:
        offsets.append(size // 2)
    matches: set[Match] = set()
    for position, player in enumerate(circle):
        for offset in offsets:
            other = circle[(position + offset) % size]
            matches.add((min(player, other), max(player, other)))
    return sorted(matches)


def schedule(size: int, opponents: Opponents, seed: int) -> list[Match]:
    """The matches of one group: round robin for `"all"` (and for m = G − 1, which is the
    same set), else the balanced m-opponent schedule."""
    if opponents == "all" or (size >= MIN_GROUP and opponents == size - 1):
        if size < MIN_GROUP:
            raise ScheduleError(
                f"a group needs at least {MIN_GROUP} completions to be judged, got {size}",
                param="completions",
            )
        return round_robin(size)
    return balanced_schedule(size, opponents, seed)


def prefix_order(matches: Sequence[Match]) -> list[tuple[int, Order]]:
    """The units of `matches` (both orders each) as (match index, order), grouped by the
    completion shown first, so units sharing the prefix prompt + that completion are
    contiguous. Within a first completion, matches keep their schedule order."""
    units: list[tuple[int, int, Order]] = []
    for index, (a, b) in enumerate(matches):
        units.append((a, index, "ab"))
        units.append((b, index, "ba"))
    units.sort(key=lambda unit: (unit[0], unit[1]))
    return [(index, order) for _, index, order in units]


def trie_floor(sequences: Sequence[Sequence[int]]) -> int:
    """Tokens that must be computed at least once for `sequences`: the node count of their
    token trie, i.e. every distinct prefix's last token once. What a perfect prefix cache
    with unbounded memory would compute; the benchmark reports schedules against it."""
    root: dict[int, dict] = {}  # type: ignore[type-arg]
    nodes = 0
    for tokens in sequences:
        node = root
        for token in tokens:
            child = node.get(token)
            if child is None:
                child = node[token] = {}
                nodes += 1
            node = child
    return nodes


def _check_outcomes(size: int, matches: Sequence[Match], outcomes: Sequence[float]) -> None:
    if len(matches) != len(outcomes):
        raise ValueError(f"{len(matches)} matches but {len(outcomes)} outcomes")
    for a, b in matches:
        if not (0 <= a < size and 0 <= b < size) or a == b:
            raise ValueError(f"match ({a}, {b}) is not a pair of distinct completions of {size}")
    for outcome in outcomes:
        if not 0.0 <= outcome <= 1.0:
            raise ValueError(f"an outcome is a probability in [0, 1], got {outcome}")


def mean_rewards(size: int, matches: Sequence[Match], outcomes: Sequence[float]) -> list[float]:
    """Each completion's mean outcome over its matches: `p_a` for a, `1 − p_a` for b.
    A completion without a match (every one of its matches failed) gets 0.5: no evidence
    either way, zero advantage in GRPO."""
    _check_outcomes(size, matches, outcomes)
    totals = [0.0] * size
    counts = [0] * size
    for (a, b), p_a in zip(matches, outcomes, strict=True):
        totals[a] += p_a
        totals[b] += 1.0 - p_a
        counts[a] += 1
        counts[b] += 1
    return [total / count if count else 0.5 for total, count in zip(totals, counts, strict=True)]


@dataclass(frozen=True)
class BradleyTerryFit:
    strengths: list[float]
    iterations: int
    converged: bool


def bradley_terry(
    size: int,
    matches: Sequence[Match],
    outcomes: Sequence[float],
    *,
    ridge: float = DEFAULT_RIDGE,
    tolerance: float = 1e-10,
    max_iterations: int = 100,
) -> BradleyTerryFit:
    """Bradley–Terry log-strengths θ fitted on soft outcomes, centred (mean 0).

    Minimises −Σ_matches [o·log σ(θ_a − θ_b) + (1 − o)·log σ(θ_b − θ_a)] + ridge/2·Σθ², by
    Newton's method with step halving: the loss is convex, strictly so with ridge > 0, so
    the minimum is unique. With ridge = 0 a sweep has no finite minimum and a completion
    without matches is undetermined; both then fall back on the minimum-norm step (lstsq)
    and may report `converged=False`.
    """
    _check_outcomes(size, matches, outcomes)
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    theta = np.zeros(size)
    if not matches:
        return BradleyTerryFit([0.0] * size, 0, True)
    first = np.array([a for a, _ in matches])
    second = np.array([b for _, b in matches])
    observed = np.asarray(outcomes, dtype=float)

    def loss(values: np.ndarray) -> float:
        diff = values[first] - values[second]
        # −[o·log σ(d) + (1 − o)·log σ(−d)], with log σ(x) = −log(1 + e^{−x}) kept stable.
        return float(
            np.sum(observed * np.logaddexp(0.0, -diff) + (1 - observed) * np.logaddexp(0.0, diff))
            + ridge / 2 * np.dot(values, values)
        )

    converged = False
    iteration = 0
    current = loss(theta)
    for iteration in range(1, max_iterations + 1):  # noqa: B007 (reported below)
        diff = theta[first] - theta[second]
        predicted = 1.0 / (1.0 + np.exp(-diff))
        residual = predicted - observed
        weight = predicted * (1.0 - predicted)
        gradient = ridge * theta
        np.add.at(gradient, first, residual)
        np.add.at(gradient, second, -residual)
        hessian = ridge * np.eye(size)
        np.add.at(hessian, (first, first), weight)
        np.add.at(hessian, (second, second), weight)
        np.add.at(hessian, (first, second), -weight)
        np.add.at(hessian, (second, first), -weight)
        if float(np.max(np.abs(gradient))) < tolerance:
            converged = True
            break
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        scale = 1.0
        while scale > 1e-8:
            candidate = theta - scale * step
            candidate_loss = loss(candidate)
            if candidate_loss <= current:
                break
            scale /= 2
        else:
            # No step lowers the loss at float precision: the minimum, unless the gradient
            # says otherwise (a sweep without ridge, whose minimum is at infinity).
            converged = float(np.max(np.abs(gradient))) < STALL_GRADIENT
            break
        moved = float(np.max(np.abs(candidate - theta)))
        theta, current = candidate, candidate_loss
        # A Newton step that no longer moves θ (at float precision) is at the minimum,
        # even where rounding keeps the gradient a hair over `tolerance` (issue 28: one
        # ordinary 5-completion group in 25 reported converged=False after 100 steps).
        if moved <= STEP_TOLERANCE * (1.0 + float(np.max(np.abs(theta)))):
            converged = True
            break
    theta = theta - theta.mean()
    return BradleyTerryFit([float(x) for x in theta], iteration, converged)


def reference_reward(p_a: float) -> float:
    """Reference mode: P(completion ≻ reference), the label's `p_a` with the completion as a."""
    if math.isnan(p_a) or not 0.0 <= p_a <= 1.0:
        raise ValueError(f"p_a is a probability in [0, 1], got {p_a}")
    return p_a
