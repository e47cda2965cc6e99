"""The HTTP API in process (httpx's ASGI transport, the app's own lifespan) and the request
bodies and error-envelope check the API tests share (DESIGN.md §6: every error is
`{"error": {"type", "message", "param"}}`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from cai_judge.api.app import create_app
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.settings import Settings
from tests.support.fake_engine import FakeEngine

PAIR = {
    "id": "p1",
    "prompt": "How do I boil an egg?",
    "response_a": "Simmer it for nine minutes, then cool it in cold water.",
    "response_b": "I won't help with cooking.",
}
Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client(fake_engine: FakeEngine) -> Client:
    """`async with client(**settings) as http`: the app on the fake engine (admission,
    limits and error mapping are not the engine's logic)."""

    @asynccontextmanager
    async def make(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(
            Settings(max_model_len=1024, **settings),
            engine=fake_engine,
            registry=ConstitutionRegistry.with_builtins(),
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                http.app = app  # type: ignore[attr-defined]
                yield http

    return make


def assert_envelope(response: httpx.Response, status: int, param: str | None, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message", "param"}
    assert error["param"] == param
    for word in words:
        assert word in error["message"]


def pair(i: int, words: int = 8) -> dict[str, str]:
    """A distinct pair per `i`, `words` long on each side."""
    return {
        "id": f"p{i}",
        "prompt": f"Question number {i}: how should I answer?",
        "response_a": f"Answer {i}: " + "carefully " * words,
        "response_b": f"Reply {i}: " + "quickly " * words,
    }
