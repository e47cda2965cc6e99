"""Fixtures for the SDK's own tests: fast retry policies and one face over both clients.

These tests need only the SDK, pytest, pytest-asyncio and respx (`pip install -e
'clients/python[test]'`). respx fakes the HTTP layer here, and only for what a live server
cannot produce on demand: retry counts, Retry-After, idempotency keys across retries,
timeouts, a job slower than `wait_job`'s timeout. The calls themselves
are tested against a real server in tests/e2e/test_sdk_live.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import cai_judge_client as sdk
from sdk_support import Judge, make_client


@pytest_asyncio.fixture(params=["sync", "async"], loop_scope="session")
async def judge(request: pytest.FixtureRequest) -> AsyncIterator[Judge]:
    client = make_client(request.param)
    yield Judge(request.param, client)
    if isinstance(client, sdk.AsyncCaiJudge):
        await client.close()
    else:
        client.close()
