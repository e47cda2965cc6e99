"""Helpers shared by the SDK's own tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Any

import cai_judge_client as sdk

BASE_URL = "http://judge.test"
FAST = sdk.RetryPolicy(max_retries=3, initial_delay_s=0.01, max_delay_s=0.05)


class Judge:
    """Awaits the async client, or runs the sync one in a thread: one test, both clients."""

    def __init__(self, kind: str, client: sdk.CaiJudge | sdk.AsyncCaiJudge) -> None:
        self.kind = kind
        self.client = client

    def _call(self, method: str) -> Any:
        """`"label"`, or a resource's call as `"labels.create"`."""
        return functools.reduce(getattr, method.split("."), self.client)

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call = self._call(method)
        if self.kind == "async":
            return await call(*args, **kwargs)
        return await asyncio.to_thread(call, *args, **kwargs)

    async def collect(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        if self.kind == "async":
            return [item async for item in self._call(method)(*args, **kwargs)]
        return await asyncio.to_thread(lambda: list(self._call(method)(*args, **kwargs)))

    def with_options(self, **kwargs: Any) -> Judge:
        return Judge(self.kind, self.client.with_options(**kwargs))


def make_client(kind: str, **kwargs: Any) -> sdk.CaiJudge | sdk.AsyncCaiJudge:
    settings: dict[str, Any] = {"base_url": BASE_URL, "api_key": "k", "retry_policy": FAST}
    settings.update(kwargs)
    return sdk.CaiJudge(**settings) if kind == "sync" else sdk.AsyncCaiJudge(**settings)


def label_json(pair_id: str, p_a: float = 0.7) -> dict[str, Any]:
    """A label as the service sends it (the wire shape; values are not under test here)."""
    margin = math.log(p_a / (1 - p_a))
    return {
        "id": pair_id, "preferred": "a" if margin > 0 else "b", "margin": margin, "p_a": p_a,
        "position_bias": 0.0, "consistency": 1.0, "answer_mass": 0.9, "low_confidence": False,
        "principles": ["less-harmful"], "selection": 1, "aggregator": "mean_logodds",
        "constitution": {"id": "harmless", "version": "v" * 64},
        "template": {"id": "cai-mc-v1", "version": "t1"}, "model": "tiny", "seed": 0,
    }  # fmt: skip


def pairs(n: int) -> list[dict[str, str]]:
    return [
        {"id": f"p{i}", "prompt": f"q{i}", "response_a": f"a{i}", "response_b": f"b{i}"}
        for i in range(n)
    ]
