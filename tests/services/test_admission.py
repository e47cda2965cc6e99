"""Admission (services/admission.py) through the services that use it, built as the app
builds them, on the fake engine: a draining or engine-dead service refuses new work with
503 and Retry-After before any engine work; the queue bound refuses work that does not fit
now (503) apart from work that never fits (422, naming the capacity); a shutdown's abort
cuts admitted work with a retryable `shutdown`, and every refusal gives its units back."""

from __future__ import annotations

import asyncio

import pytest

from cai_judge.services.errors import InvalidRequest, Unavailable
from cai_judge.services.labels import LabelCommand
from cai_judge.services.rewards import RewardCommand
from tests.support.api import pair
from tests.support.fake_engine import FakeEngine
from tests.support.services import USER, built, options


@pytest.mark.parametrize("why", ["draining", "engine_dead"])
async def test_a_closed_service_refuses_labels_and_rewards_with_retry_after(
    fake_engine: FakeEngine, why: str
) -> None:
    async with built(fake_engine, retry_after_s=9) as services:
        setattr(services.admission, why, True)
        group = {"id": "g", "prompt": "Hi?", "completions": ["Hello.", "Go away."]}
        calls = [
            services.labels.label(LabelCommand(options(), [pair(0)]), USER),
            services.rewards.rewards(RewardCommand(options(), "group", [group]), USER),
        ]
        for call in calls:
            with pytest.raises(Unavailable) as refused:
                await call
            assert (refused.value.type, refused.value.retry_after_s) == ("draining", 9)
        assert services.admission.active_requests == 0
    assert fake_engine.calls == []


async def test_work_over_the_queue_capacity_is_422_and_work_over_what_is_free_503(
    fake_engine: FakeEngine,
) -> None:
    # 2 pairs × 2 principles × 2 orders = 8 score units.
    command = LabelCommand(options(), [pair(0), pair(1)])
    async with built(fake_engine, max_queued_units=7) as services:
        with pytest.raises(InvalidRequest) as never:
            await services.labels.label(command, USER)
    assert (never.value.type, never.value.param) == ("request_too_large", "pairs")
    assert "8 score units, over the queue capacity of 7" in str(never.value)

    async with built(fake_engine, max_queued_units=10) as services:
        async with services.admission.reserve(4):  # another request's units, in flight
            with pytest.raises(Unavailable) as not_now:
                await services.labels.label(command, USER)
            assert not_now.value.type == "queue_full" and not_now.value.retry_after_s
            assert "4 of 10 score units" in str(not_now.value)
            assert services.admission.queued_units == 4  # the refused request took none
        outcome = await services.labels.label(command, USER)  # fits once the other left
        assert outcome.usage.score_units == 8 and services.admission.queued_units == 0


async def test_a_shutdown_cuts_admitted_work_with_a_retryable_error() -> None:
    engine = FakeEngine(max_model_len=1024, blocking=True)  # every score waits for release
    async with built(engine, retry_after_s=5) as services:
        call = asyncio.create_task(services.labels.label(LabelCommand(options(), [pair(0)]), USER))
        await asyncio.wait_for(engine.entered.wait(), 10)
        assert services.admission.queued_units == 4
        services.admission.start_draining()
        assert services.admission.abort_admitted() == 1
        with pytest.raises(Unavailable) as cut:
            await call
        assert (cut.value.type, cut.value.retry_after_s) == ("shutdown", 5)
        assert services.admission.queued_units == 0 and services.admission.active_requests == 0
    assert engine.cancelled, "the engine work was not aborted"
