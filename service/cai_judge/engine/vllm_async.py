"""The engine of `serve`: vLLM's v1 AsyncLLM, its core in a child process (DESIGN.md §3).

Scoring is one prefill and no decoding: `max_tokens=1`, greedy, and `logprob_token_ids`
for exactly the two answer tokens; `prompt_logprobs` is never used (it bypasses the prefix
cache). Block size and prefix caching never change a unit's tokens, so never a label.
`score` returns every unit that succeeded and raises `ScoreUnitsFailed` with each unit's
score or error, because vLLM fails requests one by one.

The reasoning at length: docs/internals.md, section "engine/vllm_async.py".
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cai_judge.engine.base import (
    EngineError,
    GenerationParams,
    GenerationPrompt,
    ScoreUnit,
    UnitScore,
    score_by_prefix_group,
)
from cai_judge.engine.identity import (
    EngineIdentity,
    checkpoint_digest,
    dtype_name,
    local_model_label,
)

if TYPE_CHECKING:
    from vllm import SamplingParams

logger = logging.getLogger(__name__)

# Under the priority policy vLLM runs the lowest number first: every other request (a
# follower, a generation) is 0, so a leader waits behind followers whose prefix is cached.
# Under fcfs every request is sent at 0 (vLLM may refuse priorities it does not schedule).
LEADER_PRIORITY = 1


@dataclass(frozen=True, slots=True)
class VllmEngineConfig:
    model: str
    dtype: str = "auto"
    max_model_len: int | None = 4096
    seed: int = 0
    enable_prefix_caching: bool = True
    # Smaller blocks let more of a prefix be reused (only whole blocks are cached); the
    # CPU backend prefers multiples of 32. None keeps vLLM's own default. Followers find
    # their whole prefix cached when this divides the template's prefix_pad_multiple.
    block_size: int | None = 32
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    # None: eager on the CPU, CUDA graphs on a GPU (resolve_enforce_eager).
    enforce_eager: bool | None = None
    # CPU build only: KV cache size in GiB and the cores the worker's OpenMP threads use.
    cpu_kv_cache_gib: float = 4.0
    cpu_threads_bind: str = "all"
    # GPU build only.
    gpu_memory_utilization: float = 0.85
    # `followers_first`: a prefix group's followers go ahead of every waiting leader
    # (vLLM's priority policy), so they run while their leader's prefix is still cached.
    # `fifo`: vLLM's default order, where a follower queues behind every leader sent
    # before it; a request of more units than the KV cache holds then evicts each
    # prefix before its followers run (bench/NOTES.md §14).
    score_order: Literal["followers_first", "fifo"] = "followers_first"
    # The KV cache in blocks, overriding its size in bytes: tests and benchmarks that must
    # overflow the cache use it. None: sized from cpu_kv_cache_gib / gpu_memory_utilization.
    kv_cache_blocks: int | None = None


def resolve_threads_bind(setting: str) -> str:
    """`all` binds the worker to every core this process may use (e.g. "0-1"), at most as
    many as its cgroup's CPU quota allows (engine/cpu_quota.py)."""
    if setting != "all":
        return setting
    from cai_judge.engine.cpu_quota import cap_cores, read_cpu_limit

    cores = cap_cores(os.sched_getaffinity(0), read_cpu_limit(), socket.gethostname())
    if cores == list(range(cores[0], cores[-1] + 1)):
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(str(c) for c in cores)


def resolve_dtype(setting: str) -> str:
    """`auto` means float32 on vLLM's CPU build, the checkpoint's dtype elsewhere.

    Without AVX-512 bf16 (CI's AVX2 EPYC), oneDNN has no bf16 matmul and vLLM falls back
    to torch's: labeling the example file took 195 s in bf16 and 39 s in float32.
    """
    if setting != "auto":
        return setting
    from vllm.platforms import current_platform

    return "float32" if current_platform.is_cpu() else "auto"


def engine_identity(config: VllmEngineConfig, model_config: Any) -> EngineIdentity:
    """The identity of an engine built from `config`, whose vLLM model config (the dtype
    vLLM resolved "auto" to, the revision it loaded) is `model_config`. Reads the
    checkpoint's files: call it off the event loop."""
    return EngineIdentity(
        model=local_model_label(config.model),
        revision=checkpoint_digest(config.model) or str(model_config.revision or ""),
        dtype=dtype_name(model_config.dtype),
    )


def apply_cpu_environment(config: VllmEngineConfig) -> None:
    # vLLM reads these from the environment when the engine starts, and its worker
    # processes inherit them; explicit user settings in the environment win.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep progress bars readable
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{config.cpu_kv_cache_gib:g}")
    os.environ.setdefault(
        "VLLM_CPU_OMP_THREADS_BIND", resolve_threads_bind(config.cpu_threads_bind)
    )


def resolve_enforce_eager(enforce_eager: bool | None) -> bool:
    """Eager on the CPU, where CUDA graphs do not exist; graphs on CUDA, where CoT labels
    and SL-CAI revisions decode and graphs cut the per-token launch cost (scoring, one
    prefill per unit, gains little either way)."""
    if enforce_eager is not None:
        return enforce_eager
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def engine_arguments(config: VllmEngineConfig) -> dict[str, Any]:
    """vLLM's engine arguments, the same for the subprocess and the in-process core."""
    return {
        "model": config.model,
        "dtype": resolve_dtype(config.dtype),
        "max_model_len": config.max_model_len,
        "seed": config.seed,
        "enable_prefix_caching": config.enable_prefix_caching,
        "block_size": config.block_size,
        "max_num_seqs": config.max_num_seqs,
        "max_num_batched_tokens": config.max_num_batched_tokens,
        "enforce_eager": resolve_enforce_eager(config.enforce_eager),
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "disable_log_stats": True,
        "scheduling_policy": "priority" if config.score_order == "followers_first" else "fcfs",
        "num_gpu_blocks_override": config.kv_cache_blocks,
    }


class VllmScorer:
    """Scoring and generation on a vLLM engine, whichever process runs its core.

    Subclasses only submit one request and return its final output (`_submit`); how units
    are grouped, and what a score is, is decided here once for both.
    """

    def __init__(
        self,
        tokenizer: Any,
        config: VllmEngineConfig,
        max_model_len: int,
        identity: EngineIdentity,
    ) -> None:
        self._tokenizer = tokenizer
        self.config = config
        self.model_name = config.model
        self.max_model_len = max_model_len
        self.identity = identity
        self._request_ids = itertools.count()
        self._score_params: dict[tuple[int, int], SamplingParams] = {}

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    async def _submit(
        self, prompt_token_ids: list[int], params: SamplingParams, priority: int = 0
    ) -> Any:
        """Run one request to completion; its final `RequestOutput`. Cancelling the
        awaiting coroutine (a client went away) must abort the request in the engine.
        `priority`: lower runs first under the priority policy; ignored under fcfs."""
        raise NotImplementedError

    async def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (benchmarks compare paths from the same start)."""
        raise NotImplementedError

    async def check_health(self) -> None:
        raise NotImplementedError

    async def shutdown(self) -> None:
        raise NotImplementedError

    def _next_request_id(self) -> str:
        return f"req-{next(self._request_ids)}"

    def _params_for(self, answer_ids: tuple[int, int]) -> SamplingParams:
        params = self._score_params.get(answer_ids)
        if params is None:
            from vllm import SamplingParams

            params = SamplingParams(
                max_tokens=1,
                temperature=0.0,
                logprob_token_ids=list(answer_ids),
                detokenize=False,
            )
            self._score_params[answer_ids] = params
        return params

    async def _score_one(self, unit: ScoreUnit, priority: int = 0) -> UnitScore:
        final = await self._submit(
            list(unit.prompt_token_ids), self._params_for(unit.answer_token_ids), priority
        )
        if final is None or not final.outputs or not final.outputs[0].logprobs:
            raise EngineError("a score request returned no log-probs")
        logprobs = final.outputs[0].logprobs[0]
        id_a, id_b = unit.answer_token_ids
        try:
            logprob_a, logprob_b = logprobs[id_a].logprob, logprobs[id_b].logprob
        except KeyError as missing:
            raise EngineError(f"engine did not return the log-prob of token {missing}") from None
        return UnitScore(
            logprob_a=float(logprob_a),
            logprob_b=float(logprob_b),
            prompt_tokens=len(unit.prompt_token_ids),
            cached_tokens=int(final.num_cached_tokens or 0),
        )

    async def _score_prefix_group(
        self, units: Sequence[ScoreUnit]
    ) -> list[UnitScore | BaseException]:
        """Each unit's score or its error; only cancellation propagates."""
        # vLLM caches a block only once it is computed: units sent in the same step as
        # their prefix's first computation all recompute it. So one unit goes first and
        # the rest follow once its prefix sits in the cache.
        try:
            leader: UnitScore | BaseException = await self._score_one(
                units[0], LEADER_PRIORITY if self.config.score_order == "followers_first" else 0
            )
        except Exception as error:
            # The followers share the prefix that failed (the usual cause: a prompt vLLM
            # refuses). Sending them would only fail again, or hide the cause.
            return [error] * len(units)
        followers = await asyncio.gather(
            *(self._score_one(u) for u in units[1:]), return_exceptions=True
        )
        for follower in followers:
            if isinstance(follower, asyncio.CancelledError):
                raise follower
        return [leader, *followers]

    async def score(self, units: Sequence[ScoreUnit]) -> list[UnitScore]:
        return await score_by_prefix_group(units, self._score_prefix_group)

    async def generate(
        self, prompts: Sequence[GenerationPrompt], params: GenerationParams
    ) -> list[str]:
        from vllm import SamplingParams

        # A per-request seed gives each request its own generator in vLLM, so a seeded
        # prompt samples the same tokens whatever batch it shares.
        sampling = SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            stop=list(params.stop),
            seed=params.seed,
        )

        async def one(prompt: GenerationPrompt) -> str:
            # Text is tokenized here, on the event loop: callers that care (the Judge, the
            # reviser) pass token ids rendered in their planning thread instead.
            ids = list(prompt) if isinstance(prompt, tuple) else self._tokenizer.encode(prompt)
            final = await self._submit(ids, sampling)
            return str(final.outputs[0].text) if final is not None and final.outputs else ""

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    async def warm_up(self) -> None:
        """One short request, so the first real batch does not pay one-time costs and a
        server reports ready only once the engine has answered."""
        await self._submit([0] * 8, self._params_for((0, 1)))


class VllmEngine(VllmScorer):
    """Implements `cai_judge.engine.base.Engine` on AsyncLLM, whose engine core runs in
    its own process: the service's default, so the HTTP event loop never shares a GIL
    with the engine's scheduler and model code."""

    # vLLM's own default, 5 s, is shorter than the engine core needs to tear down its
    # worker on this CPU (measured 4.9 s idle, more after work): it was force-killed.
    SHUTDOWN_TIMEOUT_S = 30.0
    # A core that does not answer one utility call in PROBE_S is hung (usually the
    # watchdog's verdict already): it gets HUNG_SHUTDOWN_TIMEOUT_S, not 30 s for a teardown
    # it can never do, so a hung pod exits and is restarted at once.
    PROBE_S = 2.0
    HUNG_SHUTDOWN_TIMEOUT_S = 1.0

    def __init__(
        self, llm: Any, tokenizer: Any, config: VllmEngineConfig, identity: EngineIdentity
    ) -> None:
        super().__init__(tokenizer, config, llm.model_config.max_model_len, identity)
        self._llm = llm

    @classmethod
    async def start(cls, config: VllmEngineConfig) -> VllmEngine:
        apply_cpu_environment(config)
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from cai_judge.engine import lifeline

        # The core process must not outlive this one when it is killed (lifeline.py).
        lifeline.install()
        llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_arguments(config)))
        tokenizer = AutoTokenizer.from_pretrained(config.model)
        identity = await asyncio.to_thread(engine_identity, config, llm.model_config)
        return cls(llm, tokenizer, config, identity)

    async def _submit(
        self, prompt_token_ids: list[int], params: SamplingParams, priority: int = 0
    ) -> Any:
        from vllm.inputs import TokensPrompt

        if self._llm is None:
            raise EngineError("engine is shut down")
        final = None
        # Cancelling this coroutine (a client went away) makes AsyncLLM abort the request.
        async for output in self._llm.generate(
            TokensPrompt(prompt_token_ids=prompt_token_ids),
            params,
            self._next_request_id(),
            priority=priority,
        ):
            final = output
        return final

    async def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (benchmarks compare paths from the same start)."""
        if self._llm is not None:
            await self._llm.reset_prefix_cache()

    async def check_health(self) -> None:
        """Raise if the engine core is dead; hang if it stopped answering.

        AsyncLLM.check_health only reads a flag that is set once the core process has
        exited. A core that is alive but stuck never sets it, so the check also makes a
        round trip to the core (a utility call it answers between two engine steps): the
        caller's timeout then tells a hung engine from a healthy one.
        """
        if self._llm is None:
            raise EngineError("engine is shut down")
        await self._llm.check_health()
        await self._llm.is_sleeping()

    async def shutdown(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            answers = await _answers_within(llm, self.PROBE_S)
            # On the loop, blocking it: off it, AsyncLLM's output handler would run on
            # and log the core it sees exit as an EngineDeadError.
            llm.shutdown(
                timeout=self.SHUTDOWN_TIMEOUT_S if answers else self.HUNG_SHUTDOWN_TIMEOUT_S
            )
            # AsyncLLM.__del__ calls shutdown() again, at interpreter exit if a background
            # task still holds the engine, when module globals are already gone: it then
            # raises. Shutting down twice does nothing useful, so make the second a no-op.
            llm.shutdown = lambda *args, **kwargs: None


async def _answers_within(llm: Any, timeout_s: float) -> bool:
    """Whether the engine core answers a utility call (between two steps) in time."""
    try:
        await asyncio.wait_for(llm.is_sleeping(), timeout_s)
    except Exception:  # a timeout (hung) or EngineDeadError (dead): no teardown to wait for
        return False
    return True
