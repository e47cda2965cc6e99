"""The transport-neutral services as the app builds them (`Services.build`), on the fake
engine, for service-level tests: a use case called on its object, no HTTP in between, as
vLLM's test_serving_chat.py calls its serving class (DESIGN.md §8)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.options import LabelOptions
from cai_judge.services.container import Services
from cai_judge.services.security import Caller
from cai_judge.settings import Settings
from tests.support.fake_engine import FakeEngine

USER = Caller(identity="user", is_admin=False)
OTHER = Caller(identity="other", is_admin=False)
ADMIN = Caller(identity="admin", is_admin=True)


@asynccontextmanager
async def built(engine: FakeEngine, **settings: Any) -> AsyncIterator[Services]:
    """`Services.build` on `engine` with the built-in constitutions and `settings`; no job
    consumer runs (a test that wants one starts it), and everything is closed after."""
    values: dict[str, Any] = {"max_model_len": 1024, "jobs_consumer": False, **settings}
    services = Services.build(Settings(**values), engine, ConstitutionRegistry.with_builtins())
    try:
        yield services
    finally:
        await services.close()


def options(**fields: Any) -> LabelOptions:
    """The harmless constitution on 2 principles unless told otherwise."""
    return LabelOptions(**{"constitution": "harmless", "principles": 2, **fields})


async def lines(rows: Iterable[bytes]) -> AsyncIterator[bytes]:
    """A job's upload as the routes stream it in: one line at a time."""
    for row in rows:
        yield row
