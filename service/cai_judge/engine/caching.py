"""The label cache: an Engine decorator that answers repeated score units from a store.

DESIGN.md §5: a repeated pair costs no engine work; the cache fails open; concurrent
identical units are computed once. The key is sha256 of the engine's model identity
(engine/identity.py) plus `model_revision`, the two answer token ids and the unit's prompt
token ids, which already encode the template, constitution, principle, order and texts;
engine settings are left out because labels do not depend on them (DESIGN.md §3). A lookup
that errs or takes over 50 ms goes to the engine; writes happen in the background.

The reasoning at length: docs/internals.md, section "engine/caching.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any

from cai_judge.engine.base import (
    Engine,
    GenerationParams,
    GenerationPrompt,
    ScoreUnit,
    ScoreUnitsFailed,
    UnitScore,
    caller_results,
)
from cai_judge.engine.identity import EngineIdentity
from cai_judge.engine.single_flight import Flight, SingleFlight
from cai_judge.store import keys
from cai_judge.store.base import UnitCacheStore

logger = logging.getLogger(__name__)

# logprob_a, logprob_b, prompt tokens the engine read when it computed the unit.
_VALUE = struct.Struct("<ddI")

CacheResult = str  # "hit" | "miss" | "error"


def unit_digest(model_identity: str, unit: ScoreUnit) -> str:
    digest = hashlib.sha256()
    digest.update(model_identity.encode())
    digest.update(b"\0")
    digest.update(struct.pack("<2q", *unit.answer_token_ids))
    digest.update(struct.pack(f"<{len(unit.prompt_token_ids)}q", *unit.prompt_token_ids))
    return digest.hexdigest()


def encode_score(score: UnitScore) -> bytes:
    return _VALUE.pack(score.logprob_a, score.logprob_b, score.prompt_tokens)


def decode_score(value: bytes) -> UnitScore:
    logprob_a, logprob_b, _ = _VALUE.unpack(value)
    # The engine read nothing for this unit: no prompt tokens, and flagged as cached.
    return UnitScore(logprob_a, logprob_b, prompt_tokens=0, cached_tokens=0, from_cache=True)


class CachingEngine:
    """Wraps an Engine; the same interface, with a content-addressed cache per score unit."""

    def __init__(
        self,
        engine: Any,
        store: UnitCacheStore,
        model_identity: str | Callable[[], str],
        *,
        ttl_s: int,
        timeout_s: float = 0.05,
        on_lookup: Callable[[CacheResult, int], None] | None = None,
    ) -> None:
        self.inner = engine
        self.store = store
        # A callable is read per call: a remote fleet's identity is known only once a
        # server has answered, which may be after this process started.
        self._identity = model_identity
        self.model_name: str = engine.model_name
        self.max_model_len: int = engine.max_model_len
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._on_lookup = on_lookup
        self._flights: SingleFlight[str, UnitScore] = SingleFlight()
        self._writes: set[asyncio.Task[None]] = set()

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    @property
    def identity(self) -> EngineIdentity:
        identity: EngineIdentity = self.inner.identity
        return identity

    @property
    def model_identity(self) -> str:
        """The model part of every cache key now."""
        return self._identity if isinstance(self._identity, str) else self._identity()

    def _count(self, result: CacheResult, units: int) -> None:
        if self._on_lookup is not None and units:
            self._on_lookup(result, units)

    async def score(self, units: Sequence[ScoreUnit]) -> list[UnitScore]:
        model_identity = self.model_identity
        digests = [unit_digest(model_identity, u) for u in units]
        by_digest = dict(zip(digests, units, strict=True))

        def start(new: list[str]) -> None:
            # One background lookup-then-compute for the units this caller brought first.
            owned = {d: by_digest[d] for d in new}
            futures = {d: self._flight(d).future for d in new}
            self._flights.bind(new, asyncio.create_task(self._fill(owned, futures)))

        flights = await self._flights.wait(digests, start)
        return caller_results([f.future for f in flights])

    def _flight(self, digest: str) -> Flight[UnitScore]:
        flight = self._flights.get(digest)
        assert flight is not None, "a joined digest always has its flight"
        return flight

    async def _fill(
        self, owned: dict[str, ScoreUnit], mine: dict[str, asyncio.Future[UnitScore]]
    ) -> None:
        digests = list(owned)
        try:
            found = await self._lookup(digests)
            missing = [d for d in digests if found.get(d) is None]
            for digest, score in found.items():
                if score is not None:
                    mine[digest].set_result(score)
            if missing:
                await self._compute(missing, owned, mine)
        except asyncio.CancelledError:
            for future in mine.values():
                if not future.done():
                    future.cancel()
            raise
        except Exception as error:  # never leave a waiter hanging
            for future in mine.values():
                if not future.done():
                    future.set_exception(error)

    async def _lookup(self, digests: list[str]) -> dict[str, UnitScore | None]:
        try:
            async with asyncio.timeout(self.timeout_s):
                values = await self.store.get_many([keys.cache_unit(d) for d in digests])
        except asyncio.CancelledError:
            raise
        except Exception as error:  # fail open: Redis down, slow or confused
            logger.warning("label cache lookup failed, using the engine: %r", error)
            self._count("error", len(digests))
            return {}
        found: dict[str, UnitScore | None] = {}
        for digest, value in zip(digests, values, strict=True):
            found[digest] = decode_score(value) if value is not None else None
        hits = sum(1 for v in found.values() if v is not None)
        self._count("hit", hits)
        self._count("miss", len(digests) - hits)
        return found

    async def _compute(
        self,
        missing: list[str],
        owned: dict[str, ScoreUnit],
        mine: dict[str, asyncio.Future[UnitScore]],
    ) -> None:
        try:
            results: Sequence[UnitScore | BaseException] = await self.inner.score(
                [owned[d] for d in missing]
            )
        except ScoreUnitsFailed as partial:
            results = partial.results
        except asyncio.CancelledError:
            raise
        except Exception as error:
            results = [error] * len(missing)
        fresh: dict[str, bytes] = {}
        for digest, outcome in zip(missing, results, strict=True):
            future = mine[digest]
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)  # failures are never cached
            else:
                future.set_result(outcome)
                fresh[keys.cache_unit(digest)] = encode_score(outcome)
        if fresh:
            task = asyncio.create_task(self._write(fresh))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write(self, items: dict[str, bytes]) -> None:
        try:
            # Writes are off the request path, so they may wait longer than lookups.
            async with asyncio.timeout(max(self.timeout_s * 20, 1.0)):
                await self.store.set_many(items, self.ttl_s)
        except Exception as error:
            logger.warning("label cache write failed (%d units): %r", len(items), error)
            self._count("error", len(items))

    async def generate(
        self, prompts: Sequence[GenerationPrompt], params: GenerationParams
    ) -> list[str]:
        # Generations are sampled (revisions) or short-lived (CoT rationales): not cached.
        result: list[str] = await self.inner.generate(prompts, params)
        return result

    async def check_health(self) -> None:
        await self.inner.check_health()

    async def flush(self) -> None:
        """Wait for the background writes (tests, shutdown)."""
        if self._writes:
            await asyncio.wait(set(self._writes))

    async def shutdown(self) -> None:
        """Finish the pending writes; the inner engine belongs to whoever started it."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout=2.0)


def model_identity(engine: Engine, revision_setting: str) -> str:
    """The model part of a cache key: what the engine reports it is (its checkpoint's
    digest, the dtype it really runs in: engine/identity.py) and the operator's
    CAI_JUDGE_MODEL_REVISION, for a change no digest can see."""
    return f"{engine.identity.key()}\0{revision_setting}"
