"""The runtime's order and signals with fake fronts on the fake engine (runtime/core.py):
fronts start in order and stop in reverse, a signal drains (admission first, then each
front, then the wait for in-flight work) before anything stops, a second signal ends the
wait, the deadline cuts admitted work, and a failure anywhere gives exit status 1. The
real processes (`serve`, `worker`) are tests/e2e/test_server.py and test_jobs_worker.py."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

import pytest

from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.runtime import Front, FrontError, Runtime
from cai_judge.runtime import core as runtime_core
from cai_judge.services.container import Services
from cai_judge.services.errors import Unavailable
from cai_judge.settings import Settings
from tests.support.fake_engine import FakeEngine


class FakeFront(Front):
    """Records what the runtime does to it, in one journal shared by every front."""

    def __init__(self, name: str, journal: list[str], *, fail_start: bool = False) -> None:
        self.name = name
        self.journal = journal
        self.fail_start = fail_start
        self.held = 0  # work in hand beyond admission: the drain waits for it
        self.services: Services | None = None
        self.ended = asyncio.Event()

    async def start(self, services: Services) -> None:
        if self.fail_start:
            raise FrontError(f"cannot serve {self.name} on port 1; set CAI_JUDGE_X_PORT")
        self.services = services
        self.journal.append(f"start {self.name}")

    async def drain(self) -> None:
        assert self.services is not None and self.services.admission.draining, (
            "admission refuses new work before any front drains"
        )
        self.journal.append(f"drain {self.name}")

    @property
    def in_flight(self) -> int:
        return self.held

    async def wait(self) -> None:
        await self.ended.wait()

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")


class JournaledEngine(FakeEngine):
    def __init__(self, journal: list[str]) -> None:
        super().__init__(max_model_len=1024)
        self.journal = journal

    async def shutdown(self) -> None:
        self.journal.append("engine shutdown")
        await super().shutdown()


def runtime_of(
    fronts: list[Front], journal: list[str], **settings: Any
) -> tuple[Runtime, JournaledEngine]:
    engine = JournaledEngine(journal)

    async def factory(_: Settings) -> JournaledEngine:
        journal.append("engine start")
        return engine

    runtime = Runtime(
        Settings(max_model_len=1024, **settings),
        fronts,
        registry=ConstitutionRegistry.with_builtins(),
        engine_factory=factory,
    )
    return runtime, engine


async def until(condition: Any, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def send(sig: signal.Signals) -> None:
    # Only with the runtime's handler on: the default action would end the test run.
    assert signal.getsignal(sig) not in (signal.SIG_DFL, signal.default_int_handler)
    os.kill(os.getpid(), sig)


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines: list[str] = []
    close = Services.close

    async def journaled_close(self: Services) -> None:
        lines.append("services close")
        await close(self)

    monkeypatch.setattr(Services, "close", journaled_close)
    return lines


async def test_sigterm_drains_every_front_before_stopping_them_in_reverse(journal: list[str]):
    fronts = [FakeFront(name, journal) for name in ("metrics", "consumer", "http")]
    runtime, _ = runtime_of(list(fronts), journal)
    run = asyncio.create_task(runtime.run())
    await until(lambda: "start http" in journal)
    fronts[1].held = 1  # a chunk in hand: the drain waits for it

    send(signal.SIGTERM)
    await until(lambda: "drain http" in journal)
    await asyncio.sleep(0.3)
    assert not run.done(), "stopped with work in flight"
    assert not any(line.startswith("stop") for line in journal)
    assert runtime.services is not None
    with pytest.raises(Unavailable, match="draining"):  # new work is refused meanwhile
        runtime.services.admission.ensure_open()

    fronts[1].held = 0
    assert await asyncio.wait_for(run, 5) == 0
    assert journal == [
        "engine start",
        "start metrics", "start consumer", "start http",
        "drain metrics", "drain consumer", "drain http",
        "stop http", "stop consumer", "stop metrics",
        "services close", "engine shutdown",
    ]  # fmt: skip


async def test_sigint_drains_as_sigterm_does(journal: list[str]):
    runtime, _ = runtime_of([FakeFront("http", journal)], journal)
    run = asyncio.create_task(runtime.run())
    await until(lambda: "start http" in journal)
    send(signal.SIGINT)
    assert await asyncio.wait_for(run, 5) == 0
    assert journal[-4:] == ["drain http", "stop http", "services close", "engine shutdown"]


async def test_a_second_signal_ends_the_drain_at_once(journal: list[str]):
    front = FakeFront("grpc", journal)
    runtime, _ = runtime_of([front], journal, drain_timeout_s=600)
    run = asyncio.create_task(runtime.run())
    await until(lambda: "start grpc" in journal)
    front.held = 1  # an open stream that never ends
    send(signal.SIGTERM)
    await until(lambda: "drain grpc" in journal)
    await asyncio.sleep(0.2)
    assert not run.done()
    send(signal.SIGTERM)
    assert await asyncio.wait_for(run, 5) == 0
    assert journal[-3:] == ["stop grpc", "services close", "engine shutdown"]


async def test_the_deadline_cuts_admitted_work_with_503_then_stops(
    journal: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr(runtime_core, "ABORT_ANSWER_GRACE_S", 0.3)
    runtime, _ = runtime_of([FakeFront("http", journal)], journal, drain_timeout_s=0.3)
    run = asyncio.create_task(runtime.run())
    await until(lambda: "start http" in journal)
    assert runtime.services is not None
    admission = runtime.services.admission

    async def admitted_request() -> None:
        async with admission.enter():
            await admission.run(asyncio.sleep(600))

    request = asyncio.create_task(admitted_request())
    await until(lambda: admission.active_requests == 1)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="cai_judge.runtime.core"):
        send(signal.SIGTERM)
        assert await asyncio.wait_for(run, 10) == 0
    assert time.monotonic() - started < 5
    with pytest.raises(Unavailable) as cut:
        await request
    assert cut.value.type == "shutdown" and cut.value.retry_after_s
    assert "drain timeout: cut 1 request(s), answering them 503" in caplog.text


async def test_a_front_that_cannot_start_fails_the_process_and_the_rest_still_stop(
    journal: list[str], caplog: pytest.LogCaptureFixture
):
    fronts = [
        FakeFront("metrics", journal),
        FakeFront("grpc", journal, fail_start=True),
        FakeFront("http", journal),
    ]
    runtime, _ = runtime_of(list(fronts), journal)
    with caplog.at_level(logging.ERROR, logger="cai_judge.runtime.core"):
        assert await asyncio.wait_for(runtime.run(), 5) == 1
    assert journal == [
        "engine start", "start metrics", "stop metrics", "services close", "engine shutdown",
    ]  # fmt: skip
    assert "cannot serve grpc on port 1; set CAI_JUDGE_X_PORT" in caplog.text
    assert runtime.failure is not None and "CAI_JUDGE_X_PORT" in runtime.failure


async def test_a_dead_engine_drains_and_exits_1(journal: list[str]):
    front = FakeFront("http", journal)
    runtime, engine = runtime_of([front], journal, engine_health_interval_s=0.05)
    run = asyncio.create_task(runtime.run())
    await until(lambda: "start http" in journal)
    engine.healthy = False  # the watchdog's next check fails, as a dead engine core's does
    assert await asyncio.wait_for(run, 5) == 1
    assert runtime.engine_dead
    assert journal[-4:] == ["drain http", "stop http", "services close", "engine shutdown"]


async def test_a_front_that_ends_on_its_own_fails_the_process(
    journal: list[str], caplog: pytest.LogCaptureFixture
):
    consumer = FakeFront("consumer", journal)
    runtime, _ = runtime_of([consumer, FakeFront("http", journal)], journal)
    run = asyncio.create_task(runtime.run())
    await until(lambda: "start http" in journal)
    with caplog.at_level(logging.ERROR, logger="cai_judge.runtime.core"):
        consumer.ended.set()
        assert await asyncio.wait_for(run, 5) == 1
    assert "the consumer front ended on its own" in caplog.text
    assert journal[-4:] == ["stop http", "stop consumer", "services close", "engine shutdown"]


async def test_serving_leaves_a_given_engine_running(journal: list[str]):
    """`serving()` is what an app embedded in tests runs: no signals, no drain, and an
    engine passed in belongs to the caller."""
    engine = JournaledEngine(journal)
    runtime = Runtime(
        Settings(max_model_len=1024),
        [FakeFront("consumer", journal)],
        engine=engine,
        registry=ConstitutionRegistry.with_builtins(),
    )
    async with runtime.serving() as services:
        assert services.admission.draining is False
    assert journal == ["start consumer", "stop consumer", "services close"]
    assert engine.healthy
