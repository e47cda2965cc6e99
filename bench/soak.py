"""Soak: mixed load on two replicas sharing one Redis, through a Redis restart and a kill.

    .venv/bin/python -m bench.soak                   # 600 s of load, the default model
    .venv/bin/python -m bench.soak --duration 90     # a quick check: every event scales

Restarts, outages and bad jobs under load (a benchmark, not a test). It starts a real
redis-server (append-only file, so jobs survive its restart: cai_judge/testing/redis_server.py)
and two real `cai-judge serve` replicas on the default model sharing it (HTTP and gRPC, two
API keys, each engine bound to its own core), then, for `--duration` seconds:

- `/v1/labels` at concurrency 8, small batches of distinct example pairs, alternating
  replicas; 503/429 retried after Retry-After and connection errors on the other replica,
  always with the request's one Idempotency-Key (as the SDK does);
- one gRPC LabelStream, fed a pair at a time (a window of unanswered pairs); a stream that
  ends in an error is reopened on the other replica with the pairs it had not answered;
- one 5,000-pair job (NDJSON, `principles` small) and one job whose options the labeler
  refuses (`calibrated: true` with no profiles loaded): answered 422 at submit (a labeler
  that accepted it would redeliver its chunk forever);
- at 30 % of the duration Redis is stopped (SIGTERM, it flushes its AOF) and started again
  on the same port and directory; at 60 % replica B's process group gets SIGKILL (a pod
  killed). B is not restarted: what is under test is the survivor taking B's job chunks
  over (`CAI_JUDGE_JOBS_CLAIM_IDLE_S`, lowered here) and serving all the load; a restarted
  replica would spend the rest of a short run starting its engine on two busy cores.

Then it reports requests by status on each wire (no 500 allowed), pairs accepted against
pairs labeled (every 200 has a result per pair; a gRPC stream that ends OK answered every
pair it read; the job's done + failed equals its stored results, each result is the input's
pair at its index, and every index without a result is still in a queued chunk),
duplicates (0), the RSS of each process at start and end (replicas flat within 10 %), and
the p50/p99 of /v1/labels. Writes bench/results/soak.json and bench/soak.png; exits 1 if a
500, a duplicate or a lost accepted pair was seen (with `--strict`, also if the refused job
was accepted or a replica's RSS grew by more than 10 %).

127.0.0.1 only; every loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import redis

from bench.common import RESULTS, ROOT, make_pairs, tree_rss
from bench.grpc_vs_http import to_proto
from bench.redis_jobs import start_service
from cai_judge.grpc.gen.v1 import judge_pb2 as pb
from cai_judge.grpc.gen.v1 import judge_pb2_grpc
from cai_judge.services.security import hash_api_key
from cai_judge.store import keys as redis_keys
from cai_judge.testing.ports import free_port
from cai_judge.testing.redis_server import RedisServer
from cai_judge.testing.service_process import ServiceProcess

MIB = 2**20
# Distinct offsets per source of pairs: no pair is labeled twice, so the shared label cache
# never answers for the engine and every request costs what a new one would.
LABELS_OFFSET, STREAM_OFFSET, JOB_OFFSET, REFUSED_OFFSET, WARMUP_OFFSET = (
    1_000_000,
    2_000_000,
    3_000_000,
    4_000_000,
    5_000_000,
)
MAX_ATTEMPTS = 30  # per logical request, across both replicas
MAX_STREAM_SESSIONS = 200
REQUEST_TIMEOUT_S = 300.0


class Clock:
    """Seconds since the load started."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0


@dataclass
class Replica:
    name: str
    service: ServiceProcess
    grpc_port: int
    log: Path
    down_until: float = 0.0  # client side: skip it after a connection error
    killed: bool = False

    @property
    def pid(self) -> int:
        return int(self.service.process.pid)


@dataclass
class Record:
    """Everything the clients saw, by time since the load started."""

    http_attempts: Counter[str] = field(default_factory=Counter)
    http_final: Counter[str] = field(default_factory=Counter)
    # (end time, latency, pairs) of each /v1/labels request that ended in 200
    http_ok: list[tuple[float, float, int]] = field(default_factory=list)
    http_pairs: Counter[str] = field(default_factory=Counter)  # labeled / pair_error / lost
    grpc_streams: Counter[str] = field(default_factory=Counter)  # how each stream ended
    grpc_pairs: Counter[str] = field(default_factory=Counter)
    grpc_answers: list[tuple[float, float]] = field(default_factory=list)  # (time, latency)
    jobs_api: Counter[str] = field(default_factory=Counter)
    job_progress: list[tuple[float, int, int, str]] = field(default_factory=list)
    rss: list[tuple[float, str, int]] = field(default_factory=list)  # (time, who, bytes)
    events: list[tuple[float, str]] = field(default_factory=list)
    bench_errors: list[str] = field(default_factory=list)


def processes(pid: int) -> list[dict[str, Any]]:
    """Each process of a tree with its RSS: the service and its engine core apart."""
    out = []
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for process in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                out.append(
                    {
                        "pid": process.pid,
                        "name": process.name(),
                        "rss_mib": round(process.memory_info().rss / MIB, 1),
                    }
                )
    return out


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("Retry-After", "1")), 10.0)
    except ValueError:
        return 1.0


class Soak:
    def __init__(
        self,
        args: argparse.Namespace,
        replicas: list[Replica],
        redis_server: RedisServer,
        api_keys: list[str],
    ) -> None:
        self.args = args
        self.replicas = replicas
        self.redis = redis_server
        self.keys = api_keys
        self.clock = Clock()
        self.record = Record()
        self.stop = asyncio.Event()
        self.drained = asyncio.Event()  # the load's last requests are answered
        self.drain_deadline = float("inf")
        self.next_label = LABELS_OFFSET
        self.next_stream = STREAM_OFFSET
        self.job_id: str | None = None
        self.job_pairs = make_pairs(args.job_pairs, JOB_OFFSET)
        self.refused: dict[str, Any] = {}
        self.rss_start: dict[str, Any] = {}
        self.rss_end: dict[str, Any] = {}
        self.server_500s: dict[str, float] = {}
        self.takeover: dict[str, Any] = {}
        self.http = httpx.AsyncClient(
            timeout=REQUEST_TIMEOUT_S, limits=httpx.Limits(max_connections=32)
        )

    # -- replicas as a client without a load balancer sees them --------------------------
    def pick(self, preferred: int) -> Replica:
        now = self.clock.now()
        for offset in range(len(self.replicas)):
            replica = self.replicas[(preferred + offset) % len(self.replicas)]
            if replica.down_until <= now:
                return replica
        return self.replicas[preferred % len(self.replicas)]

    def mark_down(self, replica: Replica) -> None:
        replica.down_until = self.clock.now() + 10.0

    def past_drain(self) -> bool:
        return self.clock.now() > self.drain_deadline

    async def call(
        self,
        method: str,
        path: str,
        key: str,
        counter: Counter[str],
        preferred: int,
        **kwargs: Any,
    ) -> httpx.Response | None:
        """One logical request: retried on 503/429 and connection errors, one key for all."""
        headers = {**auth(key), "Idempotency-Key": uuid.uuid4().hex, **kwargs.pop("headers", {})}
        for attempt in range(MAX_ATTEMPTS):
            if self.past_drain():
                counter["gave_up_at_drain_deadline"] += 1
                return None
            replica = self.pick(preferred + attempt)
            try:
                response = await self.http.request(
                    method, f"{replica.service.url}{path}", headers=headers, **kwargs
                )
            except httpx.ConnectError:
                counter["connect_error"] += 1
                self.mark_down(replica)
                await asyncio.sleep(0.5)
                continue
            except httpx.TimeoutException:
                counter["timeout"] += 1
                continue
            except httpx.TransportError:  # the connection died under the request (the kill)
                counter["connection_lost"] += 1
                self.mark_down(replica)
                await asyncio.sleep(0.5)
                continue
            counter[str(response.status_code)] += 1
            if response.status_code in (429, 503):
                await asyncio.sleep(retry_after(response))
                continue
            return response
        counter["gave_up_after_attempts"] += 1
        return None

    # -- load ---------------------------------------------------------------------------
    async def http_worker(self, worker: int) -> None:
        key = self.keys[worker % 2]
        for turn in range(10**6):
            if self.stop.is_set():
                return
            pairs = make_pairs(self.args.batch_pairs, self.next_label)
            self.next_label += self.args.batch_pairs
            body = {
                "constitution": "harmless",
                "pairs": pairs,
                "principles": self.args.principles,
            }
            started = self.clock.now()
            response = await self.call(
                "POST", "/v1/labels", key, self.record.http_attempts, worker + turn, json=body
            )
            if response is None:
                self.record.http_final["gave_up"] += 1
                continue
            self.record.http_final[str(response.status_code)] += 1
            if response.status_code != 200:
                continue
            now = self.clock.now()
            self.record.http_ok.append((now, now - started, len(pairs)))
            results = response.json().get("labels")
            if not isinstance(results, list):
                self.record.http_pairs["bad_body"] += len(pairs)
                continue
            answered = {r.get("id"): r for r in results}
            if len(results) != len(answered):
                self.record.http_pairs["duplicate"] += len(results) - len(answered)
            for pair in pairs:
                result = answered.get(pair["id"])
                if result is None:
                    self.record.http_pairs["lost"] += 1
                elif "error" in result:
                    self.record.http_pairs["pair_error"] += 1
                else:
                    self.record.http_pairs["labeled"] += 1

    async def grpc_worker(self) -> None:
        """One LabelStream at a time; starts on replica B, which is the one killed."""
        options = pb.LabelOptions(constitution="harmless", principles=self.args.principles)
        metadata = (("authorization", f"Bearer {self.keys[1]}"),)
        resend: deque[dict[str, Any]] = deque()
        preferred = 1
        for _ in range(MAX_STREAM_SESSIONS):
            if (self.stop.is_set() and not resend) or self.past_drain():
                break
            replica = self.pick(preferred)
            in_flight: dict[int, tuple[dict[str, Any], float]] = {}
            window = asyncio.Semaphore(self.args.stream_window)
            over = asyncio.Event()  # the call ended: the request iterator must end too

            async def requests(
                in_flight: dict[int, tuple[dict[str, Any], float]] = in_flight,
                window: asyncio.Semaphore = window,
                over: asyncio.Event = over,
            ) -> AsyncIterator[pb.LabelStreamRequest]:
                yield pb.LabelStreamRequest(options=options)
                for index in range(10**6):
                    while not over.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(window.acquire(), 1.0)
                            break
                    if over.is_set():
                        return
                    if resend:
                        pair = resend.popleft()
                    elif self.stop.is_set():
                        return  # half-close: the server answers what it read, then ends OK
                    else:
                        pair = make_pairs(1, self.next_stream)[0]
                        self.next_stream += 1
                    in_flight[index] = (pair, self.clock.now())
                    yield pb.LabelStreamRequest(pair=to_proto(pair))

            code = "OK"
            pause = 0.0
            timeout = self.args.duration + self.args.drain_s - self.clock.now() + 30
            async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.grpc_port}") as channel:
                stub = judge_pb2_grpc.JudgeStub(channel)  # type: ignore[no-untyped-call]
                call = stub.LabelStream(requests(), metadata=metadata, timeout=timeout)
                try:
                    async for answer in call:
                        entry = in_flight.pop(answer.index, None)
                        if entry is None:
                            self.record.grpc_pairs["duplicate_or_unknown_index"] += 1
                            continue
                        pair, sent = entry
                        window.release()
                        now = self.clock.now()
                        self.record.grpc_answers.append((now, now - sent))
                        if answer.id != pair["id"]:
                            self.record.grpc_pairs["wrong_id"] += 1
                        elif answer.result.WhichOneof("result") == "label":
                            self.record.grpc_pairs["labeled"] += 1
                        else:
                            self.record.grpc_pairs["pair_error"] += 1
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                    trailing = dict(error.trailing_metadata() or ())
                    pause = min(float(trailing.get("retry-after", 1) or 1), 10.0)
                finally:
                    over.set()
                    await asyncio.sleep(1.1)  # the iterator sees `over` before the channel goes
            self.record.grpc_streams[code] += 1
            if code == "OK":
                # The server ended the stream cleanly: anything it read and did not answer
                # is lost (resent here all the same, so the counts stay comparable).
                self.record.grpc_pairs["lost_in_ok_stream"] += len(in_flight)
            else:
                if code == "UNAVAILABLE":
                    self.mark_down(replica)
                preferred += 1
            resend.extend(pair for pair, _ in in_flight.values())
            await asyncio.sleep(pause)
        self.record.grpc_pairs["unanswered_at_end"] += len(resend)

    async def submit_jobs(self) -> None:
        # The refused job first: its chunk is then at the head of the stream, read before
        # the big job's, so an unfixed service shows its redeliveries within a short run.
        refused_body = {
            "constitution": "harmless",
            "pairs": make_pairs(4, REFUSED_OFFSET),
            "principles": 1,
            "calibrated": True,  # no CAI_JUDGE_CALIBRATION_DIR: the labeler refuses it
        }
        response = await self.call(
            "POST", "/v1/jobs", self.keys[1], self.record.jobs_api, 1, json=refused_body
        )
        if response is None:
            self.refused = {"submit_status": None}
        else:
            self.refused = {"submit_status": response.status_code, "submit_body": response.json()}
            self.refused["submitted_at_s"] = round(self.clock.now(), 1)
        body = b"".join(json.dumps(p).encode() + b"\n" for p in self.job_pairs)
        response = await self.call(
            "POST",
            f"/v1/jobs?constitution=harmless&principles={self.args.job_principles}",
            self.keys[0],
            self.record.jobs_api,
            0,
            content=body,
            headers={"Content-Type": "application/x-ndjson"},
        )
        if response is not None and response.status_code == 202:
            self.job_id = response.json()["id"]
            self.record.events.append((self.clock.now(), "job submitted"))
        else:
            self.record.events.append((self.clock.now(), "job NOT submitted"))

    async def watch_jobs(self) -> None:
        """The big job's progress every few seconds, until the load stops."""
        while not self.stop.is_set() and self.job_id is None:
            await asyncio.sleep(1)
        for turn in range(10**5):
            if self.stop.is_set() or self.job_id is None:
                return
            response = await self.call(
                "GET", f"/v1/jobs/{self.job_id}", self.keys[0], self.record.jobs_api, turn
            )
            if response is not None and response.status_code == 200:
                status = response.json()
                self.record.job_progress.append(
                    (self.clock.now(), status["done"], status["failed"], status["state"])
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.args.sample_s)

    async def sample_rss(self) -> None:
        for _ in range(10**5):
            now = self.clock.now()
            for replica in self.replicas:
                if not replica.killed:
                    self.record.rss.append((now, replica.name, tree_rss(replica.pid)))
            if self.redis.process is not None:
                self.record.rss.append((now, "redis", tree_rss(self.redis.process.pid)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.args.sample_s)
            if self.stop.is_set():
                return

    # -- events -------------------------------------------------------------------------
    async def events(self) -> None:
        duration = self.args.duration
        await asyncio.sleep(max(0.0, duration * 0.3 - self.clock.now()))
        assert self.redis.process is not None
        self.rss_end["redis (before restart)"] = processes(self.redis.process.pid)
        self.record.events.append((self.clock.now(), "Redis stopped"))
        await asyncio.to_thread(self.redis.stop)
        await asyncio.sleep(self.args.redis_down_s)
        await asyncio.to_thread(self.redis.start)
        self.record.events.append((self.clock.now(), "Redis started"))
        assert self.redis.process is not None
        self.rss_start["redis (after restart)"] = processes(self.redis.process.pid)

        await asyncio.sleep(max(0.0, duration * 0.6 - self.clock.now()))
        victim = self.replicas[1]
        self.rss_end[victim.name] = processes(victim.pid)
        self.server_500s[victim.name] = await self.server_500_count(victim)
        self.takeover["pending_at_kill"] = await asyncio.to_thread(pending_by_consumer, self)
        os.killpg(victim.pid, signal.SIGKILL)  # the whole group, as a killed pod
        victim.killed = True
        killed_at = self.clock.now()
        self.record.events.append((killed_at, f"SIGKILL {victim.name}"))
        # The survivor must take the killed replica's chunks over (XAUTOCLAIM after the
        # claim idle time): when its last pending chunk moves, note it.
        limit = self.args.duration + self.args.drain_s + 60
        while self.takeover["pending_at_kill"].get("killed_replica_pending", 0):
            if self.drained.is_set() or self.clock.now() > limit:
                self.takeover["not_taken_over_by_end"] = True
                break
            await asyncio.sleep(1.0)
            pending = await asyncio.to_thread(pending_by_consumer, self)
            if pending.get("killed_replica_pending") == 0:
                self.takeover["taken_over_after_s"] = round(self.clock.now() - killed_at, 1)
                self.record.events.append((self.clock.now(), "chunks taken over"))
                break

    async def server_500_count(self, replica: Replica) -> float:
        """The replica's own count of 500 answers, both wires (its metrics)."""
        try:
            text = (
                await self.http.get(
                    f"{replica.service.url}/metrics", headers=auth(self.keys[0]), timeout=30
                )
            ).text
        except httpx.TransportError:
            return float("nan")
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("cai_judge_requests_total{") and 'code="500"' in line
        )

    async def run(self) -> None:
        for replica in self.replicas:
            self.rss_start[replica.name] = processes(replica.pid)
        assert self.redis.process is not None
        self.rss_start["redis"] = processes(self.redis.process.pid)
        self.clock = Clock()
        self.record.events.append((0.0, "load starts"))
        load = [
            *(asyncio.create_task(self.http_worker(i)) for i in range(self.args.concurrency)),
            asyncio.create_task(self.grpc_worker()),
        ]
        side = [
            asyncio.create_task(self.submit_jobs()),
            asyncio.create_task(self.watch_jobs()),
            asyncio.create_task(self.sample_rss()),
        ]
        events = asyncio.create_task(self.events())
        await asyncio.sleep(self.args.duration)
        self.drain_deadline = self.args.duration + self.args.drain_s
        self.stop.set()
        self.record.events.append((self.clock.now(), "load stops"))
        # In-flight requests finish (retried as needed) up to the drain deadline; whatever
        # is still running after it is cut and counted.
        done, pending = await asyncio.wait([*load, *side], timeout=self.args.drain_s + 60)
        self.drained.set()
        for task in pending:
            task.cancel()
        self.record.http_final["tasks_cut_by_bench"] += len(pending)
        for task in done:
            crash = task.exception()
            if crash is not None:  # a bug of this script: reported, not hidden
                self.record.bench_errors.append(repr(crash))
        try:
            await events  # by now only watching for the takeover, which stops on `drained`
        except Exception as error:  # a bug of this script: reported, not hidden
            self.record.bench_errors.append(f"events: {error!r}")
        survivor = self.replicas[0]
        self.rss_end[survivor.name] = processes(survivor.pid)
        assert self.redis.process is not None
        self.rss_end["redis (after restart)"] = processes(self.redis.process.pid)
        self.server_500s[survivor.name] = await self.server_500_count(survivor)
        await self.http.aclose()


# -- the checks after the load --------------------------------------------------------------
def queued_chunks(client: redis.Redis) -> list[tuple[bytes, str, int, int]]:
    """(message id, job, start, end) of every chunk the stream holds: unread or pending.

    Acknowledged chunks are deleted from the stream (store/jobs.py `ack`).
    """
    return chunks_of(client.xrange(redis_keys.JOBS_STREAM))


def chunks_of(entries: Any) -> list[tuple[bytes, str, int, int]]:
    return [
        (message_id, fields[b"job"].decode(), int(fields[b"start"]), int(fields[b"end"]))
        for message_id, fields in entries or []
    ]


def check_job(soak: Soak) -> dict[str, Any]:
    """The job as the API and Redis hold it: every labeled pair once, in its place."""
    if soak.job_id is None:
        return {"submitted": False}
    survivor = soak.replicas[0]
    with httpx.Client(base_url=survivor.service.url, headers=auth(soak.keys[0]), timeout=120) as h:
        status = h.get(f"/v1/jobs/{soak.job_id}").json()
        prefix: list[dict[str, Any]] = []
        cursor = 0
        for _ in range(1000):  # pages of the finished prefix, through the API
            page = h.get(
                f"/v1/jobs/{soak.job_id}/results", params={"cursor": cursor, "limit": 10_000}
            )
            page.raise_for_status()
            lines = [json.loads(line) for line in page.text.splitlines()]
            if not lines:
                break
            prefix.extend(lines)
            cursor = int(page.headers["X-Next-Cursor"])
    # One snapshot (MULTI/EXEC) of the counts, the results and the stream: the survivor is
    # still labeling, and its writes (one script per chunk) and acks land between them.
    with soak.redis.client().pipeline(transaction=True) as pipe:
        pipe.hmget(redis_keys.job(soak.job_id), ["done", "failed", "state"])
        pipe.hgetall(redis_keys.job_results(soak.job_id))
        pipe.xrange(redis_keys.JOBS_STREAM)
        counts, raw, entries = pipe.execute()
    done, failed, state = int(counts[0] or 0), int(counts[1] or 0), (counts[2] or b"").decode()
    stored = {int(k): json.loads(v) for k, v in raw.items()}
    ids = [p["id"] for p in soak.job_pairs]
    misplaced = sum(1 for i, r in stored.items() if r.get("id") != ids[i])
    prefix_misplaced = sum(1 for i, r in enumerate(prefix) if r.get("id") != ids[i])
    stored_ids = [r.get("id") for r in stored.values()]
    # Indices still to be labeled must lie in a chunk the stream still holds (unread or
    # pending): an index in neither was acknowledged without a result, i.e. lost.
    queued: set[int] = set()
    for _id, job_id, start, end in chunks_of(entries):
        if job_id == soak.job_id:
            queued.update(range(start, end))
    unaccounted = [i for i in range(len(ids)) if i not in stored and i not in queued]
    finished = done + failed
    return {
        "submitted": True,
        "id": soak.job_id,
        "state": state,
        "total": status["total"],
        "done": done,
        "failed": failed,
        "progress": round(finished / status["total"], 4),
        "pairs_per_s": status["pairs_per_s"],
        "api_status_just_before": {k: status[k] for k in ("state", "done", "failed")},
        "results_stored": len(stored),
        "counted_equals_stored": finished == len(stored),
        "results_read_through_api": len(prefix),
        "api_prefix_misplaced": prefix_misplaced,
        "duplicate_ids_in_api_prefix": len(prefix) - len({r.get("id") for r in prefix}),
        "duplicate_ids_stored": len(stored_ids) - len(set(stored_ids)),
        "misplaced_stored": misplaced,
        "indices_still_queued": len(queued - set(stored)),
        "indices_lost": len(unaccounted),
        "all_labeled_when_succeeded": state != "succeeded" or len(stored) == status["total"],
    }


def pending_by_consumer(soak: Soak) -> dict[str, Any]:
    """Chunks read and not acknowledged, by consumer: the killed one's must be taken over."""
    client = soak.redis.client()
    with contextlib.suppress(redis.ResponseError):
        summary = client.xpending(redis_keys.JOBS_STREAM, redis_keys.JOBS_GROUP)
        consumers = {
            c["name"].decode() if isinstance(c["name"], bytes) else c["name"]: int(c["pending"])
            for c in summary.get("consumers") or []
        }
        victim_pid = str(soak.replicas[1].pid)
        return {
            "pending_total": int(summary.get("pending") or 0),
            "by_consumer": consumers,
            "killed_replica_pending": sum(
                n for name, n in consumers.items() if f"-{victim_pid}-" in name
            ),
        }
    return {}


def check_refused(soak: Soak) -> dict[str, Any]:
    out = dict(soak.refused)
    status = out.get("submit_status")
    if status == 422:
        out["outcome"] = "refused at submit with 422 (fixed)"
        return out
    if status != 202:
        out["outcome"] = f"unexpected submit answer {status}"
        return out
    job_id = out["submit_body"]["id"]
    survivor = soak.replicas[0]
    state = httpx.get(
        f"{survivor.service.url}/v1/jobs/{job_id}", headers=auth(soak.keys[1]), timeout=30
    ).json()
    client = soak.redis.client()
    deliveries = 0
    for message_id, chunk_job, _, _ in queued_chunks(client):
        if chunk_job == job_id:
            for entry in client.xpending_range(
                redis_keys.JOBS_STREAM, redis_keys.JOBS_GROUP, message_id, message_id, 1
            ):
                deliveries += int(entry["times_delivered"])
    out.update(state=state, chunk_deliveries=deliveries)
    loops = state["state"] in ("queued", "running") and deliveries > 1
    out["outcome"] = (
        f"accepted (202); at the end {state['state']}, done {state['done']}, failed "
        f"{state['failed']}, its chunk delivered {deliveries} times"
        + (
            " and still pending: a chunk no consumer can finish, redelivered forever"
            if loops
            else ""
        )
    )
    return out


def logged_exceptions(log: Path) -> dict[str, int]:
    """Exception classes a replica logged (tracebacks' last lines): the service's own view."""
    found: Counter[str] = Counter()
    in_traceback = False
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("Traceback (most recent call last)"):
                in_traceback = True
            elif in_traceback and line and not line[0].isspace():
                # The first unindented line after the frames names the exception (a chained
                # one starts another traceback, counted in its turn).
                if not line.startswith(("During handling", "The above exception")):
                    found[line.split(":", 1)[0].strip()] += 1
                in_traceback = False
    return dict(found)


def takeover_line(takeover: dict[str, Any], at_end: dict[str, Any]) -> str:
    held = takeover.get("pending_at_kill", {}).get("killed_replica_pending")
    if held is None:
        return "not measured"
    if held == 0:
        return "it held no chunk when killed"
    if "taken_over_after_s" in takeover:
        after = takeover["taken_over_after_s"]
        return f"{held} pending at the kill, all taken over {after} s after"
    if at_end.get("killed_replica_pending") == 0:
        return f"{held} pending at the kill, all taken over after the load stopped"
    return f"{held} pending at the kill, NOT all taken over by the end of the run"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_summary(soak: Soak) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in soak.rss_end:
        start_name = "redis" if name == "redis (before restart)" else name
        start = soak.rss_start.get(start_name, [])
        end = soak.rss_end[name]
        start_total = sum(p["rss_mib"] for p in start)
        end_total = sum(p["rss_mib"] for p in end)
        before = {p["pid"]: p["rss_mib"] for p in start}
        out[name] = {
            "start": start,
            "end": end,
            "start_mib": round(start_total, 1),
            "end_mib": round(end_total, 1),
            "growth": round(end_total / start_total - 1, 4) if start_total else None,
            # Which process grew: the service, the engine core or the engine's worker.
            "growth_by_process": {
                f"{p['name']} {p['pid']}": round(p["rss_mib"] / before[p["pid"]] - 1, 4)
                for p in end
                if before.get(p["pid"])
            },
        }
    return out


def report(soak: Soak, setup_s: float) -> tuple[dict[str, Any], list[str]]:
    record = soak.record
    latencies = [lat for _, lat, _ in record.http_ok]
    stream_latencies = [lat for _, lat in record.grpc_answers]
    job = check_job(soak)
    refused = check_refused(soak)
    rss = rss_summary(soak)
    pending_at_end = pending_by_consumer(soak)
    failures = []
    http_500 = sum(
        n
        for status, n in record.http_attempts.items()
        if status.startswith("5") and status != "503"
    )
    jobs_500 = sum(
        n for status, n in record.jobs_api.items() if status.startswith("5") and status != "503"
    )
    grpc_internal = record.grpc_streams["INTERNAL"] + record.grpc_streams["UNKNOWN"]
    if http_500 or jobs_500 or grpc_internal:
        failures.append(
            f"server errors: HTTP {http_500}, jobs API {jobs_500}, gRPC "
            f"INTERNAL/UNKNOWN {grpc_internal}"
        )
    server_500 = sum(v for v in soak.server_500s.values() if v == v)  # NaN: unreachable
    if server_500:
        failures.append(f"the replicas counted {server_500:g} answers with code 500")
    duplicates = (
        record.http_pairs["duplicate"]
        + record.grpc_pairs["duplicate_or_unknown_index"]
        + job.get("duplicate_ids_stored", 0)
        + job.get("duplicate_ids_in_api_prefix", 0)
    )
    if record.bench_errors:
        failures.append(f"the bench's own clients failed: {record.bench_errors}")
    if duplicates:
        failures.append(f"{duplicates} duplicate results")
    lost = (
        record.http_pairs["lost"]
        + record.grpc_pairs["lost_in_ok_stream"]
        + record.grpc_pairs["wrong_id"]
        + record.http_pairs["bad_body"]
        + job.get("indices_lost", 0)
        + job.get("misplaced_stored", 0)
        + job.get("api_prefix_misplaced", 0)
        + (0 if job.get("counted_equals_stored", True) else 1)
        + (0 if job.get("all_labeled_when_succeeded", True) else 1)
    )
    if lost:
        failures.append(f"{lost} accepted pairs lost or misplaced (see job / pairs)")
    warnings = []
    if refused.get("submit_status") != 422:
        warnings.append(f"refused-options job: {refused.get('outcome')}")
    for name, entry in rss.items():
        if name.startswith("replica") and entry["growth"] is not None and entry["growth"] > 0.1:
            warnings.append(f"{name} RSS grew {entry['growth']:.1%}")
    if soak.args.strict:
        failures.extend(warnings)
    http_accepted = sum(n for _, _, n in record.http_ok)
    grpc_labeled = record.grpc_pairs["labeled"] + record.grpc_pairs["pair_error"]
    summary = {
        "requests_by_status": {
            "/v1/labels attempts": dict(record.http_attempts),
            "/v1/jobs attempts": dict(record.jobs_api),
            "LabelStream streams": dict(record.grpc_streams),
        },
        "server_errors_500": http_500 + jobs_500 + grpc_internal + server_500,
        "pairs_accepted_vs_labeled": {
            "/v1/labels (pairs in 200 answers)": [
                http_accepted,
                record.http_pairs["labeled"] + record.http_pairs["pair_error"],
            ],
            "LabelStream (answered, lost in OK streams)": [
                grpc_labeled + record.grpc_pairs["lost_in_ok_stream"],
                grpc_labeled,
            ],
            "job (done + failed, results stored)": [
                job.get("done", 0) + job.get("failed", 0),
                job.get("results_stored", 0),
            ],
        },
        "job_progress": f"{job.get('done', 0) + job.get('failed', 0)} of {job.get('total')} "
        f"pairs, {job.get('state')}",
        "duplicates": duplicates,
        "lost_or_misplaced": lost,
        "rss_growth": {
            name: {"tree": entry["growth"], **entry["growth_by_process"]}
            for name, entry in rss.items()
        },
        "labels_latency_p99_s": round(percentile(latencies, 0.99) or 0, 2) if latencies else None,
        "labels_requests_ok": len(latencies),
        "killed_replica_chunks": takeover_line(soak.takeover, pending_at_end),
        "refused_options_job": refused.get("outcome"),
        "replica_logged_exceptions": {r.name: logged_exceptions(r.log) for r in soak.replicas},
        "failures": failures,
        "warnings": warnings,
    }
    result = {
        "summary": summary,
        "duration_s": soak.args.duration,
        "setup_s": round(setup_s, 1),
        "model": soak.args.model,
        "machine": f"{os.cpu_count()} cores, shared; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        "settings": {
            k: getattr(soak.args, k)
            for k in (
                "concurrency",
                "batch_pairs",
                "principles",
                "job_pairs",
                "job_principles",
                "stream_window",
                "claim_idle_s",
                "chunk_pairs",
                "redis_down_s",
            )
        },
        "events": [{"t_s": round(t, 1), "event": e} for t, e in record.events],
        "http_labels": {
            "attempts_by_status": dict(record.http_attempts),
            "requests_by_final_status": dict(record.http_final),
            "pairs": dict(record.http_pairs),
            "requests_ok": len(latencies),
            "requests_per_s": round(len(latencies) / soak.args.duration, 3),
            "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
            "latency_p99_s": round(percentile(latencies, 0.99) or 0, 2) if latencies else None,
            "latency_max_s": round(max(latencies), 2) if latencies else None,
        },
        "grpc_stream": {
            "streams_by_end": dict(record.grpc_streams),
            "pairs": dict(record.grpc_pairs),
            "pair_latency_p50_s": round(statistics.median(stream_latencies), 2)
            if stream_latencies
            else None,
            "pair_latency_p99_s": round(percentile(stream_latencies, 0.99) or 0, 2)
            if stream_latencies
            else None,
        },
        "jobs_api_by_status": dict(record.jobs_api),
        "job": job,
        "job_takeover": soak.takeover,
        "job_pending_chunks_at_end": pending_at_end,
        "refused_options_job": refused,
        "server_500_counts": soak.server_500s,
        "replica_logged_exceptions": {r.name: logged_exceptions(r.log) for r in soak.replicas},
        "rss": rss,
        "failures": failures,
        "warnings": warnings,
    }
    return result, failures


def plot(soak: Soak, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    record = soak.record
    duration = soak.args.duration
    end = max([duration, *(t for t, _, _ in record.http_ok)]) + 1
    bin_s = max(5.0, duration / 60)
    edges = [i * bin_s for i in range(int(end / bin_s) + 2)]
    fig, (ax_rate, ax_lat, ax_mem) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)

    def rate(times: list[float]) -> list[float]:
        counts = [0] * (len(edges) - 1)
        for t in times:
            counts[min(int(t / bin_s), len(counts) - 1)] += 1
        return [c / bin_s for c in counts]

    centres = [e + bin_s / 2 for e in edges[:-1]]
    ax_rate.step(
        centres,
        rate([t for t, _, _ in record.http_ok]),
        where="mid",
        label="/v1/labels requests/s (200)",
    )
    ax_rate.step(
        centres, rate([t for t, _ in record.grpc_answers]), where="mid", label="LabelStream pairs/s"
    )
    progress = record.job_progress
    if progress:
        # Cumulative: a job finishes whole chunks, so its rate alone is a row of spikes.
        ax_job = ax_rate.twinx()
        ax_job.plot([t for t, _, _, _ in progress], [d + f for _, d, f, _ in progress],
                    color="tab:olive", label="job pairs finished (right axis)")  # fmt: skip
        ax_job.set_ylabel("job pairs finished")
        ax_job.legend(loc="upper left", fontsize=8)
    ax_rate.set_ylabel("rate (1/s)")
    ax_rate.legend(loc="upper right", fontsize=8)
    ax_rate.set_title(f"Soak: 2 replicas, Redis, default model, {duration:g} s of load")

    ax_lat.scatter(
        [t for t, _, _ in record.http_ok],
        [lat for _, lat, _ in record.http_ok],
        s=6,
        label="/v1/labels latency (end to end, retries included)",
    )
    ax_lat.scatter(
        [t for t, _ in record.grpc_answers],
        [lat for _, lat in record.grpc_answers],
        s=6,
        marker="x",
        label="LabelStream pair latency",
    )
    ax_lat.set_ylabel("latency (s)")
    ax_lat.legend(loc="upper right", fontsize=8)

    for who in sorted({w for _, w, _ in record.rss}):
        points = [(t, rss / MIB) for t, w, rss in record.rss if w == who]
        ax_mem.plot([t for t, _ in points], [r for _, r in points], label=f"{who} RSS (tree)")
    ax_mem.set_yscale("log")  # Redis's tens of MiB beside the replicas' GiB
    ax_mem.set_ylabel("RSS (MiB)")
    ax_mem.set_xlabel("seconds since the load started")
    ax_mem.legend(loc="upper right", fontsize=8)

    marks = {
        "Redis stopped": "tab:red",
        "Redis started": "tab:green",
        "chunks taken over": "tab:purple",
        "load stops": "grey",
    }
    for t, event in record.events:
        colour = marks.get(event, "black" if event.startswith("SIGKILL") else None)
        if colour is None:
            continue
        for ax in (ax_rate, ax_lat, ax_mem):
            ax.axvline(t, color=colour, linestyle="--", linewidth=1)
        ax_rate.annotate(
            event,
            (t, 0),
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=7,
            color=colour,
            rotation=90,
            va="bottom",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- set-up ---------------------------------------------------------------------------------
@contextlib.contextmanager
def stack(
    args: argparse.Namespace, work: Path
) -> Iterator[tuple[list[Replica], RedisServer, list[str]]]:
    api_keys = [f"soak-key-{uuid.uuid4().hex}" for _ in range(2)]
    hashes = json.dumps([hash_api_key(k) for k in api_keys])
    redis_server = RedisServer(work, persistent=True).start()
    replicas: list[Replica] = []
    try:
        names_and_cores = [("replica A", "0"), ("replica B", "1")]
        ports = [free_port() for _ in names_and_cores]

        def start(index: int) -> Replica:
            name, core = names_and_cores[index]
            extra = {
                "CAI_JUDGE_API_KEY_HASHES": hashes,
                "CAI_JUDGE_GRPC_PORT": str(ports[index]),
                "CAI_JUDGE_JOBS_CLAIM_IDLE_S": str(args.claim_idle_s),
                "CAI_JUDGE_JOBS_CHUNK_PAIRS": str(args.chunk_pairs),
                # One core each: two engines spinning OpenMP threads on the same two cores
                # would mostly measure their contention.
                "CAI_JUDGE_CPU_THREADS_BIND": core if (os.cpu_count() or 1) >= 2 else "all",
            }
            log = work / f"{name.replace(' ', '-')}.log"
            service = start_service(args.model, redis_server.url, log, extra)
            return Replica(name, service, ports[index], log)

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(start, i) for i in range(2)]
            errors = []
            for future in futures:
                try:
                    replicas.append(future.result())
                except Exception as error:  # the other may have started: stop it below
                    errors.append(error)
            if errors:
                raise errors[0]
        yield replicas, redis_server, api_keys
    finally:
        for replica in replicas:
            replica.service.stop()
        redis_server.stop()


def warm_up(replicas: list[Replica], api_keys: list[str], principles: int) -> None:
    """One request per wire and replica, so start-up allocations don't count as growth."""
    for i, replica in enumerate(replicas):
        pairs = make_pairs(2, WARMUP_OFFSET + 10 * i)
        response = httpx.post(
            f"{replica.service.url}/v1/labels",
            json={"constitution": "harmless", "pairs": pairs, "principles": principles},
            headers=auth(api_keys[i % 2]),
            timeout=REQUEST_TIMEOUT_S,
        )
        response.raise_for_status()
        with grpc.insecure_channel(f"127.0.0.1:{replica.grpc_port}") as channel:
            stub = judge_pb2_grpc.JudgeStub(channel)  # type: ignore[no-untyped-call]
            options = pb.LabelOptions(constitution="harmless", principles=principles)
            messages = [pb.LabelStreamRequest(options=options)] + [
                pb.LabelStreamRequest(pair=to_proto(p))
                for p in make_pairs(2, WARMUP_OFFSET + 10 * i + 5)
            ]
            answers = list(
                stub.LabelStream(
                    iter(messages),
                    metadata=(("authorization", f"Bearer {api_keys[i % 2]}"),),
                    timeout=REQUEST_TIMEOUT_S,
                )
            )
            assert len(answers) == 2, answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--model", default="default")
    parser.add_argument("--concurrency", type=int, default=8, help="/v1/labels clients")
    parser.add_argument("--batch-pairs", type=int, default=2, help="pairs per /v1/labels call")
    parser.add_argument("--principles", type=int, default=2, help="for /v1/labels and gRPC")
    parser.add_argument("--job-pairs", type=int, default=5000)
    parser.add_argument("--job-principles", type=int, default=1)
    parser.add_argument("--stream-window", type=int, default=4, help="unanswered pairs")
    parser.add_argument("--claim-idle-s", type=float, default=10.0)
    parser.add_argument("--chunk-pairs", type=int, default=8)
    parser.add_argument("--redis-down-s", type=float, default=5.0)
    parser.add_argument(
        "--drain-s",
        type=float,
        default=120.0,
        help="after the load: how long in-flight requests may finish",
    )
    parser.add_argument("--sample-s", type=float, default=3.0, help="RSS and job polling")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also fail on an accepted refused-options job, or a replica's "
        "RSS growing by more than 10%%",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "soak.png")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    print(f"work dir (logs, Redis AOF): {work}", flush=True)
    started = time.monotonic()
    with stack(args, work) as (replicas, redis_server, api_keys):
        warm_up(replicas, api_keys, args.principles)
        setup_s = time.monotonic() - started
        print(
            f"two replicas ready and warm in {setup_s:.0f} s; load for {args.duration:g} s",
            flush=True,
        )

        async def go() -> Soak:
            soak = Soak(args, replicas, redis_server, api_keys)
            await soak.run()
            return soak

        soak = asyncio.run(go())
        result, failures = report(soak, setup_s)
    result["work_dir"] = str(work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(soak, args.plot)
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out} and {args.plot}")
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
