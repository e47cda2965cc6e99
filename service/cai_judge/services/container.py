"""Everything the transports share, built once per process around one engine.

HTTP routes and gRPC methods receive this object and call its services; nothing here
knows about either wire. The batching decorator sits between the Judge and the engine,
so requests from every transport share engine batches and identical units. The label
cache sits in front of it (Judge -> cache -> batching -> engine), so a cached unit never
waits for a batch window.

State (DESIGN.md §5): with CAI_JUDGE_REDIS_URL set, the cache, the constitution registry
and batch jobs live in Redis through one asyncio connection pool (the cache on its own
Redis when CAI_JUDGE_CACHE_REDIS_URL names another, so that evicting cache entries never
touches jobs); unset, the cache and
registry live in this process (not durable, not shared) and jobs answer 503.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Any

from cai_judge.engine.base import Engine
from cai_judge.engine.batching import BatchingEngine
from cai_judge.engine.caching import CachingEngine, model_identity
from cai_judge.labeling.constitution import ConstitutionRegistry, SharedConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.services.admission import Admission
from cai_judge.services.constitutions import ConstitutionService
from cai_judge.services.group_rewards import GroupRewardService  # group rewards
from cai_judge.services.health import HealthService
from cai_judge.services.job_consumer import ChunkLabeler, JobConsumer
from cai_judge.services.jobs import JobService
from cai_judge.services.labels import LabelService
from cai_judge.services.metrics import ServiceMetrics
from cai_judge.services.revisions import RevisionService
from cai_judge.services.rewards import RewardService
from cai_judge.services.security import Authenticator, RateLimiter
from cai_judge.settings import Settings
from cai_judge.sl_cai.reviser import Reviser
from cai_judge.store.base import UnitCacheStore
from cai_judge.store.constitutions import RedisConstitutionStore
from cai_judge.store.jobs import RedisJobStore
from cai_judge.store.memory import MemoryUnitCache

logger = logging.getLogger(__name__)


def registry_from_settings(settings: Settings) -> ConstitutionRegistry:
    extra = [settings.constitutions_dir] if settings.constitutions_dir else []
    if settings.redis_url:
        store = RedisConstitutionStore.connect(settings.redis_url)
        return SharedConstitutionRegistry.over(store, extra)
    return ConstitutionRegistry.with_builtins(extra)


def authenticator_from_settings(settings: Settings) -> Authenticator:
    if not settings.auth_enabled:
        # Settings refuse a key list that is set but empty unless CAI_JUDGE_ALLOW_OPEN is
        # on; either way an open service is said once, loudly, at start.
        logger.warning(
            "auth is open: no API key is checked and every caller is admin (%s)",
            "CAI_JUDGE_ALLOW_OPEN=true" if settings.allow_open else "no CAI_JUDGE_API_KEY_HASHES",
        )
    return Authenticator(settings.api_key_hashes, settings.admin_key_hashes)


@dataclass
class Services:
    settings: Settings
    engine: BatchingEngine
    judge: Judge
    metrics: ServiceMetrics
    admission: Admission
    auth: Authenticator
    labels: LabelService
    rewards: RewardService
    constitutions: ConstitutionService
    health: HealthService
    revisions: RevisionService
    cache: CachingEngine
    jobs: JobService
    chunk_labeler: ChunkLabeler
    redis: Any = None  # redis.asyncio.Redis when configured
    cache_redis: Any = None  # the label cache's own Redis, when CAI_JUDGE_CACHE_REDIS_URL differs

    @classmethod
    def build(cls, settings: Settings, engine: Engine, registry: ConstitutionRegistry) -> Services:
        metrics = ServiceMetrics(engine.model_name)
        batching = BatchingEngine(
            engine,
            window_s=settings.batch_window_ms / 1000,
            on_batch=metrics.observe_batch,
            on_abort=metrics.observe_aborted,
        )
        redis = None
        store: UnitCacheStore
        job_store = None
        if settings.redis_url:
            from cai_judge.store.redis import RedisUnitCache, connect

            redis = connect(settings)
            cache_url = settings.cache_redis_url
            if cache_url and cache_url != settings.redis_url:
                # Its own Redis: what may be evicted apart from what may not.
                cache_redis = connect(settings, cache_url)
            else:
                cache_redis = redis
            store = RedisUnitCache(cache_redis)
            job_store = RedisJobStore(redis, ttl_s=settings.jobs_ttl_s)
        else:
            cache_redis = None
            store = MemoryUnitCache(settings.cache_max_entries)
        cache = CachingEngine(
            batching,
            store,
            # Read per call: a remote fleet reports its identity once it first answers.
            lambda: model_identity(engine, settings.model_revision),
            ttl_s=settings.cache_ttl_s,
            timeout_s=settings.cache_timeout_ms / 1000,
            on_lookup=metrics.observe_cache,
        )
        judge = Judge(cache, registry, settings.use_chat_template())
        admission = Admission(settings, metrics)
        # One limiter: a caller's labels and revisions count against the same rate.
        rate_limiter = RateLimiter(settings.rate_limit)
        labels = LabelService(judge, registry, admission, rate_limiter, metrics, settings)
        revisions = RevisionService(
            Reviser(batching, judge), registry, admission, rate_limiter, metrics, settings
        )
        return cls(
            settings=settings,
            engine=batching,
            judge=judge,
            metrics=metrics,
            admission=admission,
            auth=authenticator_from_settings(settings),
            labels=labels,
            rewards=RewardService(labels),
            constitutions=ConstitutionService(registry),
            health=HealthService(batching, admission, settings),
            revisions=revisions,
            cache=cache,
            jobs=JobService(job_store, labels, settings),
            chunk_labeler=ChunkLabeler(labels),
            redis=redis,
            cache_redis=cache_redis if cache_redis is not redis else None,
        )

    # -- group rewards (services/group_rewards.py): built on first use, over this process's
    # rewards service and the store every replica shares (Redis) or this process (embedded).
    @functools.cached_property
    def group_rewards(self) -> GroupRewardService:
        return GroupRewardService.over(self.redis, self.rewards, self.settings)

    # -- end group rewards

    def job_consumer(self, name: str | None = None) -> JobConsumer | None:
        """A consumer on the shared job stream, or None without Redis (run as a front)."""
        if self.jobs.store is None:
            return None
        return JobConsumer(self.jobs.store, self.chunk_labeler, self.metrics, self.settings, name)

    async def close(self) -> None:
        """Stop the decorators; the engine itself belongs to whoever started it (the
        runtime), as the job consumer belongs to its front (runtime/fronts.py)."""
        await self.cache.shutdown()
        await self.engine.shutdown()
        self.judge.close()
        for client in (self.redis, self.cache_redis):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
