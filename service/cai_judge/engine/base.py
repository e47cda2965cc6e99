"""The Engine protocol (DESIGN.md §4): score units in, answer log-probs out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


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
