"""Configuration: arguments, the environment, with_options, context managers; and the
rule that the SDK never imports the service package."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
import pytest
import respx

import cai_judge_client as sdk

SOURCE = Path(sdk.__file__).parent


def test_the_sdk_never_imports_the_service() -> None:
    for path in SOURCE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                assert root not in {"cai_judge", "torch", "vllm", "transformers"}, f"{path}: {name}"


def test_environment_then_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAI_JUDGE_BASE_URL", "http://env.test:9/")
    monkeypatch.setenv("CAI_JUDGE_API_KEY", "env-key")
    with sdk.CaiJudge() as client:
        assert client.base_url == "http://env.test:9" and client.api_key == "env-key"
    with sdk.CaiJudge(base_url="http://arg.test", api_key="arg-key") as client:
        assert client.base_url == "http://arg.test" and client.api_key == "arg-key"
    monkeypatch.delenv("CAI_JUDGE_BASE_URL")
    monkeypatch.delenv("CAI_JUDGE_API_KEY")
    with sdk.CaiJudge() as client:
        assert client.base_url == "http://127.0.0.1:8000" and client.api_key is None


def test_with_options_copies_and_shares_the_pool() -> None:
    with sdk.CaiJudge(base_url="http://a.test", api_key="k", max_retries=4) as client:
        other = client.with_options(api_key="admin", max_retries=0, timeout=5.0,
                                    default_headers={"X-Team": "rl"})  # fmt: skip
        assert (other.api_key, other.retry_policy.max_retries, other.timeout) == ("admin", 0, 5.0)
        assert other.default_headers == {"X-Team": "rl"}
        assert (client.api_key, client.retry_policy.max_retries) == ("k", 4)
        assert other._http is client._http
        other.close()  # a copy does not own the pool
        assert not client._http.is_closed
    assert client._http.is_closed


async def test_async_context_manager_closes_its_pool() -> None:
    async with sdk.AsyncCaiJudge(base_url="http://a.test") as client:
        copy = client.with_options(timeout=1.0)
        assert copy._http is client._http
    assert client._http.is_closed


def test_no_key_sends_no_authorization_and_get_sends_no_idempotency_key() -> None:
    with respx.mock(base_url="http://a.test") as mock, sdk.CaiJudge(base_url="http://a.test") as c:
        route = mock.get("/v1/constitutions").mock(
            return_value=httpx.Response(200, json={"constitutions": []})
        )
        assert c.list_constitutions() == []
    headers = route.calls.last.request.headers
    assert "authorization" not in headers and "idempotency-key" not in headers
    assert headers["user-agent"].startswith("cai-judge-client/")
