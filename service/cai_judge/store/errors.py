"""The store's one failure: Redis cannot be reached (DESIGN.md §5, §6).

Whatever redis-py raises (a refused connection, a timeout, a reply cut by a restart, a
consumer group lost with the data) and the socket errors under it, a store call that
fails surfaces as `StoreUnavailable`, naming the call and the cause. Callers catch one
type, not redis-py's hierarchy; the transports answer it 503 / UNAVAILABLE with
Retry-After, since retrying (on another replica, or once Redis is back) is the recovery.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import RedisError, WatchError

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)

# OSError: a socket error redis-py did not wrap (and TimeoutError, one of them since 3.11).
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


class StoreUnavailable(Exception):
    """A store call failed because Redis is unreachable or lost its state mid-call."""

    def __init__(self, what: str, cause: BaseException) -> None:
        self.what = what
        self.cause = cause
        super().__init__(
            f"the store (Redis) is unreachable while {what} ({type(cause).__name__}: {cause})"
        )


class StoreContended(StoreUnavailable):
    """A transaction kept losing its optimistic lock to concurrent writers of the same keys
    (many submits from one key race on its usage), past the store's bounded retries.

    Nothing was written. It is a StoreUnavailable so that every transport answers it 503
    with Retry-After, as it answers an unreachable Redis: retrying is the recovery.
    """

    def __init__(self, what: str, attempts: int, waited_s: float) -> None:
        self.what = what
        self.attempts = attempts
        self.waited_s = waited_s
        self.cause = WatchError(f"lost the race {attempts} times in {waited_s:.2f} s")
        # Exception's own __init__: StoreUnavailable's message says "unreachable".
        Exception.__init__(
            self,
            f"the store is contended while {what}: concurrent writes to the same keys won "
            f"{attempts} times in a row over {waited_s:.2f} s",
        )


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise StoreUnavailable(`what`) for any Redis or socket error inside the block."""
    try:
        yield
    except STORE_ERRORS as error:
        raise StoreUnavailable(what, error) from error


def _async_translated(what: str, call: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(call)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with translated(what):
            return await call(*args, **kwargs)

    return wrapper


def _sync_translated(what: str, call: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(call)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with translated(what):
            return call(*args, **kwargs)

    return wrapper


def raises_store_unavailable(cls: C) -> C:
    """Wrap every public method defined on `cls` so that its Redis errors surface as
    StoreUnavailable naming `Class.method`: no call of the store can leak redis-py's types,
    and a new method is covered without anyone remembering to."""
    for name, member in list(vars(cls).items()):
        if name.startswith("_") or not inspect.isfunction(member):
            continue
        what = f"{cls.__name__}.{name}"
        wrapped: Any = (
            _async_translated(what, member)
            if inspect.iscoroutinefunction(member)
            else _sync_translated(what, member)
        )
        setattr(cls, name, wrapped)
    return cls
