"""vLLM's engine core in this process: the offline CLI's engine (DESIGN.md §4).

AsyncLLM costs three processes that each import vLLM and torch (~5 s each, ~16 s on a cold
disk) and a slow shutdown, most of a one-pair `cai-judge label`. Here the synchronous
`LLMEngine` runs with multiprocessing off, driven by one thread that builds it (the CPU
worker binds the OpenMP threads of its builder) and steps it. The service keeps the
subprocess core (`vllm_async.VllmEngine`), where scheduling would share the HTTP loop's GIL.

The reasoning at length: docs/internals.md, section "engine/vllm_offline.py".
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cai_judge.engine.base import EngineError
from cai_judge.engine.identity import EngineIdentity
from cai_judge.engine.vllm_async import (
    VllmEngineConfig,
    VllmScorer,
    apply_cpu_environment,
    engine_arguments,
    engine_identity,
)

if TYPE_CHECKING:
    from vllm import SamplingParams

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Add:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    reply: Future[Any]
    priority: int = 0


@dataclass(frozen=True, slots=True)
class _Abort:
    request_id: str


@dataclass(frozen=True, slots=True)
class _Call:
    """Run `function(engine)` between two steps: a health round trip, a cache reset."""

    function: Callable[[Any], Any]
    reply: Future[Any]


class _Stop:
    pass


_Command = _Add | _Abort | _Call | _Stop


def _settle(reply: Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Resolve a reply unless its caller cancelled it meanwhile (from its own thread)."""
    try:
        if error is None:
            reply.set_result(result)
        else:
            reply.set_exception(error)
    except InvalidStateError:
        pass


class _EngineThread(threading.Thread):
    """Owns the LLMEngine: every call into it happens on this thread."""

    def __init__(self, config: VllmEngineConfig) -> None:
        super().__init__(name="vllm-engine", daemon=True)
        self._config = config
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._pending: dict[str, Future[Any]] = {}
        self.ready: Future[Any] = Future()  # vLLM's model config, once built
        self.failure: BaseException | None = None

    def send(self, command: _Command) -> None:
        self._commands.put(command)

    def run(self) -> None:
        try:
            engine = self._build()
        except BaseException as error:  # reported to whoever awaits `ready`
            self.ready.set_exception(error)
            return
        self.ready.set_result(engine.model_config)
        try:
            self._serve(engine)
        except BaseException as error:  # every waiter must hear of it
            logger.exception("the in-process vLLM engine failed")
            self.failure = error
        finally:
            self._fail_pending(EngineError(f"engine stopped: {self.failure or 'shut down'}"))
            engine.engine_core.shutdown()

    def _build(self) -> Any:
        from vllm.engine.arg_utils import EngineArgs
        from vllm.v1.engine.llm_engine import LLMEngine

        # Read by vLLM while it builds the engine (the CPU platform lets the uniprocessor
        # executor through only with it off); restored after, so an AsyncLLM started
        # later in this process (tests) gets vLLM's defaults.
        previous = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        try:
            arguments = engine_arguments(self._config)
            return LLMEngine.from_engine_args(
                EngineArgs(**arguments, distributed_executor_backend="uni")
            )
        finally:
            if previous is None:
                os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
            else:
                os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = previous

    def _serve(self, engine: Any) -> None:
        while True:
            # Idle: block until there is something to do. Busy: take what has arrived
            # since the last step, so new requests join the next batch.
            busy = engine.has_unfinished_requests()
            try:
                command: _Command | None = self._commands.get(block=not busy)
            except queue.Empty:
                command = None
            while command is not None:
                if isinstance(command, _Stop):
                    return
                self._handle(engine, command)
                try:
                    command = self._commands.get_nowait()
                except queue.Empty:
                    command = None
            if engine.has_unfinished_requests():
                for output in engine.step():
                    if output.finished:
                        reply = self._pending.pop(output.request_id, None)
                        if reply is not None:
                            _settle(reply, output)

    def _handle(self, engine: Any, command: _Command) -> None:
        if isinstance(command, _Add):
            if command.reply.done():  # cancelled before it reached the engine
                return
            from vllm.inputs import TokensPrompt

            try:
                engine.add_request(
                    command.request_id,
                    TokensPrompt(prompt_token_ids=command.prompt_token_ids),
                    command.params,
                    priority=command.priority,
                )
            except Exception as error:  # a request vLLM refuses fails alone
                _settle(command.reply, error=error)
            else:
                self._pending[command.request_id] = command.reply
        elif isinstance(command, _Abort):
            if self._pending.pop(command.request_id, None) is not None:
                engine.abort_request([command.request_id])
        elif isinstance(command, _Call):
            try:
                _settle(command.reply, command.function(engine))
            except Exception as error:
                _settle(command.reply, error=error)

    def _fail_pending(self, error: EngineError) -> None:
        pending, self._pending = self._pending, {}
        for reply in pending.values():
            _settle(reply, error=error)
        # Requests still queued behind the stop never reached the engine.
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if isinstance(command, _Add | _Call):
                _settle(command.reply, error=error)


class OfflineVllmEngine(VllmScorer):
    """Implements `cai_judge.engine.base.Engine` on vLLM's LLMEngine in this process."""

    def __init__(
        self,
        thread: _EngineThread,
        tokenizer: Any,
        config: VllmEngineConfig,
        identity: EngineIdentity,
    ) -> None:
        super().__init__(tokenizer, config, thread.ready.result().max_model_len, identity)
        self._thread: _EngineThread | None = thread

    @classmethod
    async def start(cls, config: VllmEngineConfig) -> OfflineVllmEngine:
        apply_cpu_environment(config)
        from transformers import AutoTokenizer

        # Before the engine thread starts, not beside it: two threads importing the same
        # lazy transformers/accelerate modules at once can see one half-initialised
        # ("cannot import name ... from partially initialized module", seen in CI).
        tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, config.model)
        thread = _EngineThread(config)
        thread.start()
        try:
            model_config = await asyncio.wrap_future(thread.ready)
        except BaseException:
            thread.join()
            raise
        identity = await asyncio.to_thread(engine_identity, config, model_config)
        return cls(thread, tokenizer, config, identity)

    def _running_thread(self) -> _EngineThread:
        thread = self._thread
        if thread is None:
            raise EngineError("engine is shut down")
        if not thread.is_alive():
            raise EngineError(f"engine stopped: {thread.failure or 'thread exited'}")
        return thread

    async def _submit(
        self, prompt_token_ids: list[int], params: SamplingParams, priority: int = 0
    ) -> Any:
        thread = self._running_thread()
        request_id = self._next_request_id()
        reply: Future[Any] = Future()
        thread.send(_Add(request_id, prompt_token_ids, params, reply, priority))
        try:
            return await asyncio.wrap_future(reply)
        except asyncio.CancelledError:
            # The caller went away (a client disconnected, a drain deadline): the engine
            # must not keep computing for nobody.
            reply.cancel()
            thread.send(_Abort(request_id))
            raise

    async def _call(self, function: Callable[[Any], Any]) -> Any:
        reply: Future[Any] = Future()
        self._running_thread().send(_Call(function, reply))
        return await asyncio.wrap_future(reply)

    async def reset_prefix_cache(self) -> None:
        await self._call(lambda engine: engine.reset_prefix_cache())

    async def check_health(self) -> None:
        """Raise if the engine thread died; hang if it stopped answering: the round trip
        is answered between two engine steps, so the caller's timeout tells a hung engine
        from a busy one."""
        await self._call(lambda engine: None)

    async def shutdown(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            thread.send(_Stop())
            # Joining blocks until the current step ends: off the loop.
            await asyncio.to_thread(thread.join)
