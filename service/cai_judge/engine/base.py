"""The Engine protocol (DESIGN.md §4): score units in, answer log-probs out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cai_judge.engine.identity import EngineIdentity


@dataclass(frozen=True, slots=True)
class ScoreUnit:
    """One principle, one order, one forward pass.

    `prefix_length` counts the leading tokens this unit shares with the other principles
    of the same (pair, order): the engine schedules one unit of each prefix first so the
    rest find that prefix in the cache. Zero means no shared prefix: sent at once.

    `affinity_length` counts the leading tokens it shares with the units of the pair's
    other order (the template and the conversation): a fleet routes on them, so both
    orders, and every pair on the same conversation, meet one server's cache. Zero means
    route on the prefix alone. Not part of a unit's identity: it follows from its tokens.
    """

    prompt_token_ids: tuple[int, ...]
    answer_token_ids: tuple[int, int]
    prefix_length: int
    affinity_length: int = field(default=0, compare=False)

    @property
    def prefix_key(self) -> tuple[int, ...]:
        return self.prompt_token_ids[: self.prefix_length]

    @property
    def affinity_key(self) -> tuple[int, ...]:
        """What a fleet routes on: the pair's shared part, else the prefix, else all."""
        length = self.affinity_length or self.prefix_length or len(self.prompt_token_ids)
        return self.prompt_token_ids[:length]


@dataclass(frozen=True, slots=True)
class UnitScore:
    logprob_a: float
    logprob_b: float
    prompt_tokens: int
    cached_tokens: int
    # Served by the label cache (engine/caching.py): no engine work at all.
    from_cache: bool = False


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling for `Engine.generate`.

    `seed` seeds each request's own sampler, so with temperature > 0 a prompt gives the
    same text whatever else shares its batch; None leaves sampling unseeded.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


# A prompt for `generate`: text the engine tokenizes, or token ids rendered by the caller
# (the Judge renders in its planning thread, so the engine never tokenizes on the loop).
GenerationPrompt = str | tuple[int, ...]


class EngineError(RuntimeError):
    """The engine failed or refused a request."""


class EngineUnavailable(EngineError):
    """The engine cannot be reached now, but is not broken: a remote fleet with no healthy
    server. The service answers 503 with Retry-After and reports it in readiness; unlike a
    dead in-process engine, restarting this process would not bring the fleet back."""


class ScoreUnitsFailed(EngineError):
    """Some units of one `score` call failed and the others have scores.

    vLLM fails requests one by one (a prompt it refuses, say), so one bad unit need not
    cost its neighbours their scores: `results` holds, per unit in call order, its score
    or the error that unit alone met.
    """

    def __init__(self, results: Sequence[UnitScore | BaseException]) -> None:
        self.results = list(results)
        failed = [r for r in self.results if isinstance(r, BaseException)]
        super().__init__(f"{len(failed)} of {len(self.results)} score units failed: {failed[0]}")

    @property
    def failed_indices(self) -> list[int]:
        return [i for i, r in enumerate(self.results) if isinstance(r, BaseException)]


class Engine(Protocol):
    model_name: str
    max_model_len: int

    @property
    def identity(self) -> EngineIdentity:
        """What its numbers depend on besides a unit's tokens (engine/identity.py)."""
        ...

    @property
    def tokenizer(self) -> Any: ...

    async def score(self, units: Sequence[ScoreUnit]) -> list[UnitScore]:
        """One result per unit, in order; `ScoreUnitsFailed` when only some units failed."""
        ...

    async def generate(
        self, prompts: Sequence[GenerationPrompt], params: GenerationParams
    ) -> list[str]:
        """One completion per prompt, in order; the prompt's own text is not included."""
        ...

    async def check_health(self) -> None: ...

    async def shutdown(self) -> None: ...


async def score_by_prefix_group(
    units: Sequence[ScoreUnit],
    score_group: Callable[[list[ScoreUnit]], Awaitable[list[UnitScore | BaseException]]],
) -> list[UnitScore]:
    """Score every prefix group at once (each group schedules its own leader first) and
    return the scores in unit order: the part of `score` every engine shares.

    Groups catch their units' errors, so a sibling's failure never leaves the others running
    unattended; what still escapes a group (cancellation) is re-raised. Then: all scored,
    the scores; nothing scored, or the engine unavailable, the error itself (the whole call
    is retried, rather than pairs reported failed for a cause that is not theirs); else
    `ScoreUnitsFailed` with each unit's own outcome.
    """
    groups: dict[object, list[int]] = {}
    for index, unit in enumerate(units):
        # A unit that declares no shared prefix is its own group: sent at once.
        key: object = unit.prefix_key if unit.prefix_length else index
        groups.setdefault(key, []).append(index)
    group_results = await asyncio.gather(
        *(score_group([units[i] for i in indices]) for indices in groups.values()),
        return_exceptions=True,
    )
    results: list[UnitScore | BaseException | None] = [None] * len(units)
    for indices, outcome in zip(groups.values(), group_results, strict=True):
        if isinstance(outcome, BaseException):
            raise outcome
        for index, result in zip(indices, outcome, strict=True):
            results[index] = result
    scores = [r for r in results if isinstance(r, UnitScore)]
    if len(scores) == len(units):
        return scores
    failures = [r for r in results if isinstance(r, BaseException)]
    unavailable = [f for f in failures if isinstance(f, EngineUnavailable)]
    if unavailable or not scores:
        raise unavailable[0] if unavailable else failures[0]
    raise ScoreUnitsFailed([r for r in results if r is not None])


def caller_results(futures: Sequence[asyncio.Future[UnitScore]]) -> list[UnitScore]:
    """One caller's units from shared futures (the batching and caching decorators): every
    score; the error itself when all its units failed; else `ScoreUnitsFailed` with each
    unit's own outcome, so one bad unit costs its caller nothing else."""
    outcomes: list[UnitScore | BaseException] = []
    for future in futures:
        if future.cancelled():
            raise asyncio.CancelledError
        error = future.exception()
        outcomes.append(error if error is not None else future.result())
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if not failed:
        return outcomes  # type: ignore[return-value]
    if len(failed) == len(outcomes):
        raise failed[0]
    raise ScoreUnitsFailed(outcomes)
