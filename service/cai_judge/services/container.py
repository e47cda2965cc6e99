"""Everything the transports share, built once per process around one engine.

HTTP routes and gRPC methods receive this object and call its services; nothing here
knows about either wire. The batching decorator sits between the Judge and the engine,
so requests from every transport share engine batches and identical units.
"""

from __future__ import annotations

from dataclasses import dataclass

from cai_judge.engine.base import Engine
from cai_judge.engine.batching import BatchingEngine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.services.admission import Admission
from cai_judge.services.constitutions import ConstitutionService
from cai_judge.services.health import HealthService
from cai_judge.services.labels import LabelService
from cai_judge.services.metrics import ServiceMetrics
from cai_judge.services.revisions import RevisionService
from cai_judge.services.security import Authenticator, RateLimiter
from cai_judge.settings import Settings
from cai_judge.sl_cai.reviser import Reviser


def registry_from_settings(settings: Settings) -> ConstitutionRegistry:
    extra = [settings.constitutions_dir] if settings.constitutions_dir else []
    return ConstitutionRegistry.with_builtins(extra)


def authenticator_from_settings(settings: Settings) -> Authenticator:
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
    constitutions: ConstitutionService
    health: HealthService
    revisions: RevisionService

    @classmethod
    def build(cls, settings: Settings, engine: Engine, registry: ConstitutionRegistry) -> Services:
        metrics = ServiceMetrics(engine.model_name)
        batching = BatchingEngine(
            engine,
            window_s=settings.batch_window_ms / 1000,
            on_batch=metrics.observe_batch,
            on_abort=metrics.observe_aborted,
        )
        judge = Judge(batching, registry, settings.use_chat_template())
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
            constitutions=ConstitutionService(registry),
            health=HealthService(batching, admission, settings),
            revisions=revisions,
        )

    async def close(self) -> None:
        """Stop the batching decorator; the engine itself belongs to whoever started it."""
        await self.engine.shutdown()
        self.judge.close()
