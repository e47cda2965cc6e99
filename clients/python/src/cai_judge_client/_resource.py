"""The base of every resource (`client.labels`, `client.jobs`, ...), after openai-python's
`_resource.py`: a resource is a thin shell that holds its client and sends through it.

A resource never owns a connection, a retry policy or configuration: those stay on the
client (`_base_client.py`), so `with_options()` copies carry over to every resource. What
the sync and async resources share is not here but in pure functions (`_labeling_plan.py`),
which is why each pair of classes differs only in `await`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Concatenate, Generic, ParamSpec, TypeVar, overload

import httpx

from cai_judge_client._base_client import AsyncAPIClient, RequestOptions, SyncAPIClient

if TYPE_CHECKING:
    from typing import Self  # read by type checkers only: the SDK runs on 3.10

ResourceT = TypeVar("ResourceT")
P = ParamSpec("P")
T = TypeVar("T")


class SyncAPIResource:
    """A group of calls over one `SyncAPIClient`; `self._request` sends with its retries."""

    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def _request(self, options: RequestOptions) -> httpx.Response:
        return self._client.request(options)

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class AsyncAPIResource:
    """A group of calls over one `AsyncAPIClient`; `await self._request(...)` sends."""

    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def _request(self, options: RequestOptions) -> httpx.Response:
        return await self._client.request(options)

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class alias(Generic[ResourceT, P, T]):  # lower case, as `property` is: a kind of attribute
    """A client attribute that is a resource's call under its first-release name:
    `label = alias("labels", Labels.create)` makes `client.label` the bound
    `client.labels.create` itself (same signature for type checkers, same docstring, a
    coroutine function on the async client), so no alias repeats a signature."""

    def __init__(self, resource: str, method: Callable[Concatenate[ResourceT, P], T]) -> None:
        self.resource = resource
        self.name = method.__name__
        self.__doc__ = f"`{resource}.{self.name}`: {method.__doc__ or ''}"

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Callable[P, T]: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> Self | Callable[P, T]:
        if obj is None:
            return self
        bound: Callable[P, T] = getattr(getattr(obj, self.resource), self.name)
        return bound
