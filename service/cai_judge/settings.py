"""All configuration in one pydantic-settings class, read from `CAI_JUDGE_*` variables.

Command-line flags override these per run; the service reads the same class. Pure data:
no I/O and no imports from the rest of the package (DESIGN.md §8), so every layer can
import it; turning a setting into something real (a model path) is the engine's job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cai_judge.constants import (
    DEFAULT_COT_MAX_PROBABILITY,
    DEFAULT_LOW_MASS_THRESHOLD,
    MAX_COT_TOKENS,
    MAX_GROUP_WAIT_S,
)

DEFAULT_MODEL = "default"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "cai-judge"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAI_JUDGE_", extra="ignore")

    # -- the judge model ---------------------------------------------------------------
    model: str = Field(
        default=DEFAULT_MODEL,
        description="`default` (SmolLM2-135M-Instruct, prepared locally), a checkpoint "
        "directory, or a hub ID where the network allows.",
    )
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    dtype: str = "auto"
    max_model_len: Annotated[int, Field(ge=64)] = 4096
    chat_template: Literal["auto", "on", "off"] = "auto"

    # -- the vLLM engine ---------------------------------------------------------------
    enable_prefix_caching: bool = True
    block_size: Annotated[int, Field(ge=16)] | None = 32
    max_num_seqs: Annotated[int, Field(ge=1)] = 256
    # Measured on the 2-core CI machine: binding the worker to both cores gave 1.85× the
    # prefill tokens/s of vLLM's default of one core (see bench/NOTES.md).
    cpu_threads_bind: str = "all"
    cpu_kv_cache_gib: Annotated[float, Field(gt=0)] = 4.0
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.85
    # In what order vLLM runs waiting score requests: `followers_first` (a prefix's
    # followers before any waiting leader, so they find it cached) or vLLM's `fifo`.
    score_order: Literal["followers_first", "fifo"] = "followers_first"
    # Where vLLM's engine core runs. `in-process`: a thread of this process (one vLLM
    # import, no child processes: the offline CLI starts in half the time). `subprocess`:
    # AsyncLLM's own process, so a server's event loop never shares a GIL with it.
    # `auto`: in-process for the offline commands, subprocess for `serve` and `worker`.
    engine_core: Literal["auto", "in-process", "subprocess"] = "auto"

    # -- a remote vLLM fleet (engine/vllm_remote.py, docs/deploy.md) -------------------
    # `local`: vLLM in this process. `remote`: the vLLM servers of `vllm_urls`, routed by
    # prefix; `model` must then name the checkpoint they serve (its tokenizer renders here).
    engine: Literal["local", "remote"] = "local"
    # Comma-separated (or a JSON list): http://vllm-0:8000,http://vllm-1:8000.
    vllm_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Route to every address the URLs' host names resolve to, re-resolved every health
    # round: one URL of a headless Service then reaches each vLLM pod.
    vllm_dns_discovery: bool = False
    # `round_robin` exists to measure what prefix affinity saves (bench/fleet_routing.py).
    vllm_routing: Literal["prefix", "round_robin"] = "prefix"
    # Bounded loads: no server takes more than this × the mean of in-flight units.
    vllm_load_factor: Annotated[float, Field(ge=1)] = 1.25
    vllm_connect_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    vllm_request_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    vllm_retries: Annotated[int, Field(ge=0, le=10)] = 3
    vllm_health_interval_s: Annotated[float, Field(gt=0)] = 2.0

    # -- labeling ----------------------------------------------------------------------
    constitutions_dir: Path | None = None
    # Calibration profiles (`cai-judge calibrate`), loaded once at start-up; a request with
    # `calibrated: true` gets p_a and margin from the one fitted for its model, template,
    # constitution version, aggregator and principle selection.
    calibration_dir: Path | None = None
    low_mass_threshold: Annotated[float, Field(ge=0, le=1)] = DEFAULT_LOW_MASS_THRESHOLD

    # -- the HTTP service --------------------------------------------------------------
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    # sha256 hex digests of the accepted API keys (`printf %s "$KEY" | sha256sum`, or
    # `cai-judge hash-key`). Keys themselves are never stored or logged. Unset: no auth
    # (a local service). Set, it must hold a digest: a list that a broken key recipe left
    # empty (`[""]`) would otherwise open the service with admin rights to every caller.
    api_key_hashes: list[str] = Field(default_factory=list)
    # Admin keys may also add constitutions; they are valid ordinary keys as well.
    admin_key_hashes: list[str] = Field(default_factory=list)
    # Run without keys although a key list is set (empty): every caller is admin. The
    # start-up log and /health/ready (`"auth": "open"`) say so whenever auth is off.
    allow_open: bool = False
    max_pairs_per_request: Annotated[int, Field(ge=1)] = 256
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 2**20
    # Prompt tokens of a request's unique score units. Bounds the engine time one request
    # can take (and so the drain timeout it needs); ~12 min of CPU prefill at the default.
    max_tokens_per_request: Annotated[int, Field(ge=1)] = 1_000_000
    # Admission bound: score units admitted but not finished, across all requests.
    max_queued_units: Annotated[int, Field(ge=1)] = 8192
    # Score units one request may bring, counted from its shape before anything is
    # rendered (a rewards request: pairs its schedule makes × principles × 2 orders).
    # Unset: the queue capacity, which no request can pass anyway.
    max_score_units_per_request: Annotated[int, Field(ge=1)] | None = None
    rate_limit: str = Field(
        default="600/minute", description="Per API key (or client address), `limits` syntax."
    )
    retry_after_s: Annotated[int, Field(ge=1)] = 2
    # The trainer-shaped reward routes (/v1/rewards/openrlhf, /slime) stop waiting after
    # this long, under their clients' own timeouts (slime 120 s, OpenRLHF 180 s), so a
    # trainer never waits on the judge past them (DESIGN.md §9): what was not judged by
    # then is answered 503 with Retry-After, never a made-up reward.
    trainer_reward_timeout_s: Annotated[float, Field(gt=0)] = 100.0
    # -- group rewards for one-sample trainers (services/group_rewards.py, DESIGN.md §9)
    # How long a sample waits for the rest of its group (`group_wait_s` overrides it per call,
    # up to MAX_GROUP_WAIT_S); then the group is judged as it is.
    reward_group_wait_s: Annotated[float, Field(gt=0, le=MAX_GROUP_WAIT_S)] = 5.0
    # A waiter whose group's judge published nothing within wait + trainer_reward_timeout_s +
    # this answers 503 with Retry-After (the judging replica died): never a silent fallback.
    reward_group_grace_s: Annotated[float, Field(gt=0)] = 5.0
    # -- end group rewards
    # On SIGTERM: how long admitted requests may run on before they are cut (503 with
    # Retry-After). Size terminationGracePeriodSeconds above it (README, k8s/).
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0
    ready_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    engine_health_interval_s: Annotated[float, Field(gt=0)] = 5.0
    # The watchdog's checks: this many in a row without an answer within
    # `engine_hang_timeout_s` mean a hung engine, and the process exits as for a dead one.
    # Longer than the readiness timeout: a CPU engine answers only between two prefill
    # steps, which take seconds under load, and busy must not read as hung.
    engine_health_timeouts: Annotated[int, Field(ge=1)] = 3
    engine_hang_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # Units from concurrent requests that arrive within this window share one engine call.
    batch_window_ms: Annotated[float, Field(ge=0)] = 2.0

    # -- the gRPC service (same process, same engine and limits as HTTP) -----------------
    # 0 (the default) means no gRPC server; any other value is the port it listens on,
    # on `host`.
    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 0
    # Pairs one LabelStream may have read and not yet answered. The server reads no further
    # message until an answer leaves, so a stream's memory stays bounded however long it is.
    grpc_stream_max_in_flight: Annotated[int, Field(ge=1)] = 64

    # -- CoT labels (DESIGN.md §2) ------------------------------------------------------
    # Rationale tokens a request may ask for per (principle, order): each is decoded, so
    # this bounds a CoT request's engine time far more than its prompt tokens do.
    max_cot_tokens: Annotated[int, Field(ge=1, le=MAX_COT_TOKENS)] = 256
    # Each order's probability is clamped to [1 - this, this].
    cot_max_probability: Annotated[float, Field(gt=0.5, lt=1.0)] = DEFAULT_COT_MAX_PROBABILITY

    # -- SL-CAI revisions --------------------------------------------------------------
    max_prompts_per_revision_request: Annotated[int, Field(ge=1)] = 64
    max_revision_rounds: Annotated[int, Field(ge=1)] = 4
    max_generation_tokens: Annotated[int, Field(ge=1, le=4096)] = 512
    max_temperature: Annotated[float, Field(ge=0)] = 2.0

    # -- state: Redis (DESIGN.md §5) ----------------------------------------------------
    # Unset: the embedded in-memory default (label cache and registry in this process,
    # not durable, not shared; batch jobs refused with 503). Set: `redis://host:6379/0`.
    redis_url: str | None = None
    # The label cache's own Redis (unset: `redis_url`'s). The cache may be evicted, jobs
    # and the registry may not: a cache Redis with `allkeys-lru` beside a `noeviction` one
    # for the rest keeps cache pressure from evicting finished results, idempotency keys
    # and half-uploaded pair lists, or from refusing job writes (docs/deploy.md "Redis").
    cache_redis_url: str | None = None
    redis_max_connections: Annotated[int, Field(ge=1)] = 64
    # The label cache fails open: a lookup slower than this falls through to the engine.
    cache_timeout_ms: Annotated[float, Field(gt=0)] = 50.0
    cache_ttl_s: Annotated[int, Field(ge=1)] = 30 * 24 * 3600
    # Embedded cache only: score units kept in process memory (about 100 bytes each).
    cache_max_entries: Annotated[int, Field(ge=0)] = 200_000
    # Part of every cache key besides the identity the engine reports (engine/identity.py:
    # checkpoint digest or served name, real dtype): change it when the weights change in a
    # way that identity cannot see (a remote fleet's new weights under the same name).
    model_revision: str = ""
    # Batch jobs: pairs per unit of work on the stream, and how long a consumer may be
    # silent before another replica takes its work over (XAUTOCLAIM). A live consumer
    # renews its claim every third of that, however long its chunk takes.
    jobs_chunk_pairs: Annotated[int, Field(ge=1, le=1024)] = 32
    jobs_claim_idle_s: Annotated[float, Field(gt=0)] = 30.0
    jobs_concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    jobs_ttl_s: Annotated[int, Field(ge=60)] = 7 * 24 * 3600
    jobs_max_pairs: Annotated[int, Field(ge=1)] = 2_000_000
    # Bytes of one NDJSON upload (the JSON form is bounded by max_body_bytes).
    jobs_max_upload_bytes: Annotated[int, Field(ge=1024)] = 2 * 2**30
    # Per-key quotas over its active (queued or running) jobs: the Redis that holds them
    # also holds the cache and the registry (DESIGN.md §5). Over them: 429.
    jobs_quota_active_jobs: Annotated[int, Field(ge=1)] = 16
    jobs_quota_pairs: Annotated[int, Field(ge=1)] = 4_000_000
    jobs_quota_bytes: Annotated[int, Field(ge=1024)] = 4 * 2**30
    # A result page stops at this many bytes (always at least one line), whatever `limit`.
    jobs_max_page_bytes: Annotated[int, Field(ge=1024)] = 8 * 2**20
    # A chunk delivered more often than this goes to the dead letter, its pairs failed.
    jobs_max_deliveries: Annotated[int, Field(ge=1)] = 5
    # A consumer with nothing pending, silent this long, is removed from the group.
    jobs_consumer_forget_s: Annotated[float, Field(gt=0)] = 3600.0
    # Run a job consumer inside `serve` too (off: only `cai-judge worker` processes label).
    jobs_consumer: bool = True

    # -- deployment (docs/deploy.md) ----------------------------------------------------
    # Prometheus metrics on a port of their own, open without a key (0: none). Keys guard
    # the API port; this one is opened only to the monitoring namespace by the
    # NetworkPolicy and stays off the public Service (k8s/base).
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    # /health/ready probes the engine (for a fleet: every server) at most once per this
    # many seconds; probes in between get the last answer (0: probe on every call).
    ready_cache_s: Annotated[float, Field(ge=0)] = 1.0
    # vLLM's enforce_eager. Unset: eager on the CPU (CUDA graphs are CUDA-only), graphs on
    # a GPU, where CoT labels and SL-CAI revisions decode and graphs speed decoding up.
    enforce_eager: bool | None = None

    @field_validator("vllm_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [url.strip() for url in text.split(",") if url.strip()]
        return value

    @field_validator("api_key_hashes", "admin_key_hashes", mode="after")
    @classmethod
    def _check_digests(cls, value: list[str]) -> list[str]:
        digests = []
        for index, entry in enumerate(value):
            digest = entry.strip().lower()
            if not _SHA256_HEX.fullmatch(digest):
                # Never echo the entry: a raw key pasted here would land in the log.
                found = "is blank" if not digest else f"has {len(digest)} characters"
                raise ValueError(
                    f"entry {index} {found}, not a sha256 digest (64 hex characters); "
                    'make one with `printf %s "$KEY" | sha256sum | cut -d" " -f1`'
                )
            digests.append(digest)
        return digests

    @model_validator(mode="after")
    def _refuse_open_by_accident(self) -> Self:
        key_fields = {"api_key_hashes", "admin_key_hashes"} & self.model_fields_set
        if key_fields and not self.auth_enabled and not self.allow_open:
            names = " and ".join(f"CAI_JUDGE_{name.upper()}" for name in sorted(key_fields))
            raise ValueError(
                f"{names} set but holding no key digest: the service would run open, every "
                "caller an admin. Put at least one digest there, or set "
                "CAI_JUDGE_ALLOW_OPEN=true to run without keys on purpose"
            )
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_key_hashes or self.admin_key_hashes)

    def use_chat_template(self) -> bool | None:
        return {"auto": None, "on": True, "off": False}[self.chat_template]
