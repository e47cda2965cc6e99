"""The Judge gRPC service: proto messages in, the same service calls as HTTP, messages out.

DESIGN.md §8: a gRPC method maps wire types to a service call and back, and nothing else.
`Label` is `POST /v1/labels`; `Rewards` is `POST /v1/rewards` (RewardService.rewards);
`ListConstitutions` and `GetConstitution` are the registry routes; `LabelStream` feeds
`LabelService.label` in groups (grpc/stream.py). The engine, the batching, auth, the rate
limit, the queue bound and the drain are the `Services` object the HTTP app uses, in the
same process, so a key, a limit or a drain applies to both wires at once. Errors are
mapped in one place, grpc/errors.py.

Every call is counted in the HTTP metric families, `cai_judge_requests_total` and
`cai_judge_request_duration_seconds`, with `protocol="grpc"` and the full method name as
the route (a bounded set, as route templates are).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, NoReturn, TypeVar

import grpc

from cai_judge.grpc.convert import (
    command_from_proto,
    constitution_list,
    constitution_to_proto,
    label_response,
    pair_from_proto,
    reward_command_from_proto,
    rewards_response,
    stream_response,
)
from cai_judge.grpc.errors import GrpcError, domain_to_grpc, http_code, to_grpc
from cai_judge.grpc.gen.v1 import judge_pb2 as pb
from cai_judge.grpc.gen.v1 import judge_pb2_grpc
from cai_judge.grpc.stream import LabelStreamSession, StreamLimits
from cai_judge.services.container import Services
from cai_judge.services.errors import InvalidRequest, ServiceError
from cai_judge.services.security import Caller

logger = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Judge"].full_name


def route_of(method: str) -> str:
    return f"/{SERVICE_NAME}/{method}"


def presented_key(metadata: Mapping[str, str | bytes]) -> str | None:
    """`authorization: Bearer KEY` or `x-api-key: KEY`, as the HTTP API reads its headers."""
    authorization = metadata.get("authorization")
    if isinstance(authorization, str) and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    key = metadata.get("x-api-key")
    return key if isinstance(key, str) else None


def peer_host(peer: str) -> str:
    """`ipv4:127.0.0.1:5000` -> `127.0.0.1`: the client address, as HTTP's `client.host`."""
    _, _, address = peer.partition(":")
    host, _, _ = address.rpartition(":")
    return host.strip("[]") or "anonymous"


class JudgeServicer(judge_pb2_grpc.JudgeServicer):  # type: ignore[misc]
    def __init__(self, services: Services) -> None:
        self.services = services
        settings = services.settings
        self.stream_limits = StreamLimits(
            window_s=settings.batch_window_ms / 1000,
            max_group=min(settings.max_pairs_per_request, settings.grpc_stream_max_in_flight),
            max_in_flight=settings.grpc_stream_max_in_flight,
        )
        # Open LabelStream calls: the drain waits for them as it waits for requests.
        self.open_streams = 0

    # -- the five methods ------------------------------------------------------------------

    async def Label(self, request: pb.LabelRequest, context: Any) -> pb.LabelResponse:
        async def work() -> pb.LabelResponse:
            caller = self._caller(context)
            if not request.pairs:
                raise InvalidRequest("pairs: at least 1 pair is required", param="pairs")
            command = command_from_proto(request.options, request.pairs)
            return label_response(await self.services.labels.label(command, caller))

        return await self._unary("Label", context, work)

    async def Rewards(self, request: pb.RewardsRequest, context: Any) -> pb.RewardsResponse:
        async def work() -> pb.RewardsResponse:
            caller = self._caller(context)
            command = reward_command_from_proto(request)
            return rewards_response(await self.services.rewards.rewards(command, caller))

        return await self._unary("Rewards", context, work)

    async def ListConstitutions(
        self, request: pb.ListConstitutionsRequest, context: Any
    ) -> pb.ListConstitutionsResponse:
        async def work() -> pb.ListConstitutionsResponse:
            self._caller(context)
            return constitution_list(await self.services.constitutions.list())

        return await self._unary("ListConstitutions", context, work)

    async def GetConstitution(
        self, request: pb.GetConstitutionRequest, context: Any
    ) -> pb.Constitution:
        async def work() -> pb.Constitution:
            self._caller(context)
            return constitution_to_proto(await self.services.constitutions.get(request.ref))

        return await self._unary("GetConstitution", context, work)

    async def LabelStream(
        self, requests: AsyncIterator[pb.LabelStreamRequest], context: Any
    ) -> AsyncIterator[pb.LabelStreamResponse]:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        self.open_streams += 1
        try:
            session, pairs = await self._open_stream(requests, context)
            if session is not None:
                async for index, result in session.answers(pairs):
                    yield stream_response(index, result)
        except ServiceError as error:
            mapped = to_grpc(error)
            code = mapped.code
            await context.abort(mapped.code, mapped.details, mapped.trailing_metadata)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            domain = domain_to_grpc(error, self.services.settings.retry_after_s)
            code = grpc.StatusCode.INTERNAL if domain is None else domain.code
            await self._abort_unexpected(context, "LabelStream", domain)
        finally:
            self.open_streams -= 1
            self._observe("LabelStream", code, started)

    # -- helpers ---------------------------------------------------------------------------

    async def _open_stream(
        self, requests: AsyncIterator[pb.LabelStreamRequest], context: Any
    ) -> tuple[LabelStreamSession | None, AsyncIterator[Mapping[str, Any]]]:
        """Checks in the order LabelService.label makes them, before any pair is read."""
        caller = self._caller(context)
        first = await anext(aiter(requests), None)
        if first is None:  # the client sent nothing: nothing to answer
            return None, _no_pairs()
        if not first.HasField("options"):
            raise InvalidRequest(
                "the first LabelStream message carries the options (constitution, ...)",
                param="options",
            )
        command = command_from_proto(first.options, [])
        services = self.services
        services.admission.ensure_open()
        services.labels.check_rate(caller)
        await services.constitutions.get(first.options.constitution)  # NOT_FOUND before any pair
        session = LabelStreamSession(
            services.labels, services.admission, caller, command, self.stream_limits
        )
        return session, _stream_pairs(first, requests)

    def _caller(self, context: Any) -> Caller:
        metadata = dict(context.invocation_metadata() or ())
        return self.services.auth.authenticate(
            presented_key(metadata), anonymous_identity=peer_host(context.peer())
        )

    async def _unary(self, method: str, context: Any, work: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await work()
        except ServiceError as error:
            mapped = to_grpc(error)
            code = mapped.code
            await context.abort(mapped.code, mapped.details, mapped.trailing_metadata)
        except asyncio.CancelledError:
            # The client went away: its engine work is cancelled with this task.
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            domain = domain_to_grpc(error, self.services.settings.retry_after_s)
            code = grpc.StatusCode.INTERNAL if domain is None else domain.code
            await self._abort_unexpected(context, method, domain)
        finally:
            self._observe(method, code, started)
        raise AssertionError("context.abort returned")  # pragma: no cover

    async def _abort_unexpected(
        self, context: Any, method: str, mapped: GrpcError | None
    ) -> NoReturn:
        """A domain ValueError (`mapped`) gets the status HTTP gives it; else INTERNAL."""
        if mapped is None:
            await self._abort_internal(context, method)
        else:
            await context.abort(mapped.code, mapped.details, mapped.trailing_metadata)
        raise AssertionError("context.abort returned")  # pragma: no cover

    async def _abort_internal(self, context: Any, method: str) -> NoReturn:
        logger.exception("unhandled error in gRPC %s", method)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        raise AssertionError("context.abort returned")  # pragma: no cover

    def _observe(self, method: str, code: grpc.StatusCode, started: float) -> None:
        metrics = self.services.metrics
        route = route_of(method)
        metrics.requests.labels(route=route, code=str(http_code(code)), protocol="grpc").inc()
        metrics.request_duration.labels(route=route, protocol="grpc").observe(
            time.perf_counter() - started
        )


async def _no_pairs() -> AsyncIterator[Mapping[str, Any]]:
    return
    yield  # an empty async generator


async def _stream_pairs(
    first: pb.LabelStreamRequest, requests: AsyncIterator[pb.LabelStreamRequest]
) -> AsyncIterator[Mapping[str, Any]]:
    if first.HasField("pair"):
        yield pair_from_proto(first.pair)
    async for message in requests:
        if message.HasField("options"):
            raise InvalidRequest(
                "LabelStream takes options on its first message only", param="options"
            )
        if not message.HasField("pair"):
            raise InvalidRequest(
                "every LabelStream message after the first carries a pair", param="pair"
            )
        yield pair_from_proto(message.pair)
