"""Request-scoped dependencies: the shared services, the authenticated caller.

`Annotated` aliases, as in full-stack-fastapi-template, so a route's signature says what
it needs (`services: ServicesDep, caller: CallerDep`) and nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request

from cai_judge.services.container import Services
from cai_judge.services.errors import Unauthenticated, Unavailable
from cai_judge.services.security import Caller

logger = logging.getLogger(__name__)
T = TypeVar("T")
DISCONNECT_POLL_S = 0.1


def get_services(request: Request) -> Services:
    services: Services | None = request.app.state.services
    if services is None:  # only between the socket opening and the lifespan finishing
        raise Unavailable("the service is starting", type="starting", retry_after_s=1)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


# The query parameter the trainer routes take a key in (their clients send no headers).
URL_KEY_PARAM = "api_key"


def _presented(authorization: str | None, x_api_key: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return x_api_key


def authenticate(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Caller:
    """The caller, from `Authorization: Bearer KEY` or `X-API-Key`; 401 when keys are set.

    A key in the URL is refused here (401, whether or not a header key came too): URLs end
    up in proxies' and browsers' logs, so only the trainer routes, whose clients cannot
    send a header, take one (`authenticate_trainer`)."""
    if URL_KEY_PARAM in request.query_params:
        raise Unauthenticated(
            f"an API key in the URL (`?{URL_KEY_PARAM}=`) is accepted only on "
            "/v1/rewards/openrlhf and /v1/rewards/slime; send it as `Authorization: Bearer "
            "KEY` or `X-API-Key`",
            param=URL_KEY_PARAM,
        )
    address = request.client.host if request.client else "anonymous"
    return services.auth.authenticate(_presented(authorization, x_api_key), address)


def authenticate_trainer(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Caller:
    """The trainer routes' caller: a header key as everywhere, else `?api_key=KEY`, the
    one credential OpenRLHF's and slime's clients can carry (in the URL they are given).
    The server never logs it (api/logs.py redacts it from every log line)."""
    presented = _presented(authorization, x_api_key) or request.query_params.get(URL_KEY_PARAM)
    address = request.client.host if request.client else "anonymous"
    return services.auth.authenticate(presented, address)


TrainerCallerDep = Annotated[Caller, Depends(authenticate_trainer)]
CallerDep = Annotated[Caller, Depends(authenticate)]


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Run `work`; if the client disconnects first, cancel it (vLLM aborts its requests)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_S)

    watcher = asyncio.create_task(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    logger.info("client disconnected; its engine work was aborted")
    return None
