"""Prometheus metrics (DESIGN.md §7): base units, `_total` counters, prefix `cai_judge_`.

Each app owns its CollectorRegistry, so several apps in one process (tests) don't clash.
Label values are bounded: routes are templates, never raw paths; no ids, no keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cai_judge.labeling.schema import Label, Usage

ADMISSION_REASONS = ("draining", "rate_limit", "queue_full")
GENERATION_STEPS = ("initial", "critique", "revision")
JOB_STATES = ("queued", "running", "succeeded", "succeeded_with_errors", "failed", "cancelled")
_UNIT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def package_version() -> str:
    try:
        return version("cai-judge")
    except PackageNotFoundError:
        return "unknown"


class ServiceMetrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry()
        r = self.registry
        # Both transports count here: `protocol` is "http" or "grpc"; a gRPC call's route is
        # its full method name and its code the HTTP status its outcome gets over HTTP
        # (grpc/errors.py), so one dashboard and one set of alerts read both.
        self.requests = Counter(
            "cai_judge_requests", "Requests by route, status code and protocol.",
            ["route", "code", "protocol"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "cai_judge_request_duration_seconds", "Request latency (a gRPC stream: its "
            "whole duration).", ["route", "protocol"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.pairs = Counter("cai_judge_pairs", "Pairs labeled.", ["model"], registry=r)
        self.score_units = Counter(
            "cai_judge_score_units", "Score units computed.", ["model"], registry=r
        )
        self.queue_depth = Gauge(
            "cai_judge_queue_depth", "Score units admitted and not yet finished.", registry=r
        )
        self.inflight = Gauge("cai_judge_inflight", "Label requests being served.", registry=r)
        self.admission_rejections = Counter(
            "cai_judge_admission_rejections", "Requests refused before work started.", ["reason"],
            registry=r,
        )  # fmt: skip
        self.labels = Counter(
            "cai_judge_labels", "Labels by verdict.", ["model", "preferred"], registry=r
        )
        self.position_consistency = Histogram(
            "cai_judge_position_consistency", "Share of principles whose orders agree.",
            ["model"], buckets=_UNIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.answer_mass = Histogram(
            "cai_judge_answer_mass", "Probability on a valid answer (min over principles).",
            ["model"], buckets=_UNIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.engine_tokens = Counter(
            "cai_judge_engine_tokens", "Prompt tokens sent to the engine; `cached` were served "
            "from the prefix cache.", ["model", "kind"], registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "cai_judge_batch_size", "Score units per engine batch.", ["model"],
            buckets=_BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.aborted_units = Counter(
            "cai_judge_engine_aborted_units", "Score units aborted because every caller left.",
            ["model"], registry=r,
        )  # fmt: skip
        self.cot_rationales = Counter(
            "cai_judge_cot_rationales", "CoT rationales generated (one per principle and order).",
            ["model"], registry=r,
        )  # fmt: skip
        self.revisions = Counter(
            "cai_judge_revisions", "SL-CAI prompts revised (whole chains).", ["model"],
            registry=r,
        )  # fmt: skip
        self.revision_rounds = Counter(
            "cai_judge_revision_rounds", "SL-CAI critique-and-revision rounds completed.",
            ["model"], registry=r,
        )  # fmt: skip
        self.generations = Counter(
            "cai_judge_generations", "Engine generations for SL-CAI, by step.",
            ["model", "step"], registry=r,
        )  # fmt: skip
        self.cache_requests = Counter(
            "cai_judge_cache_requests", "Label cache lookups per score unit; `error` fell "
            "through to the engine (Redis down or slower than the timeout).", ["result"],
            registry=r,
        )  # fmt: skip
        self.jobs = Gauge(
            "cai_judge_jobs", "Batch jobs by state (retained ones; read from the store).",
            ["state"], registry=r,
        )  # fmt: skip
        self.job_pairs = Counter(
            "cai_judge_job_pairs", "Job pairs this process finished: labeled (`done`) or "
            "reported as errors (`failed`).", ["result"], registry=r,
        )  # fmt: skip
        self.jobs_consumer_lag = Gauge(
            "cai_judge_jobs_consumer_lag", "Job chunks on the stream not yet read by any "
            "consumer.", registry=r,
        )  # fmt: skip
        self.jobs_pending = Gauge(
            "cai_judge_jobs_pending", "Job chunks read by a consumer and not yet acknowledged.",
            registry=r,
        )  # fmt: skip
        self.job_consumer_loops = Gauge(
            "cai_judge_job_consumer_loops", "Job consumer loops live in this process "
            "(a loop that ends is restarted; below jobs_concurrency means restarts).",
            registry=r,
        )  # fmt: skip
        self.build_info = Gauge(
            "cai_judge_build_info", "Build and model information.", ["version", "model"],
            registry=r,
        )  # fmt: skip
        self.build_info.labels(version=package_version(), model=model).set(1)
        # Known label values start at 0, so rates and dashboards work before the first event.
        for reason in ADMISSION_REASONS:
            self.admission_rejections.labels(reason=reason)
        for preferred in ("a", "b", "tie"):
            self.labels.labels(model=model, preferred=preferred)
        for kind in ("prompt", "cached"):
            self.engine_tokens.labels(model=model, kind=kind)
        self.aborted_units.labels(model=model)
        for result in ("hit", "miss", "error"):
            self.cache_requests.labels(result=result)
        for state in JOB_STATES:
            self.jobs.labels(state=state)
        for result in ("done", "failed"):
            self.job_pairs.labels(result=result)
        # Rewards (DESIGN.md §9): calls by mode, results by outcome, the per-pair errors inside
        # them, the rewards the trainer-shaped routes answered with a flagged fallback (group
        # assembly only: a value neutral among the sample's judged group mates), samples
        # not judged by those routes' deadline (answered 503), and queries that did not
        # start with their prompt.
        self.reward_requests = Counter(
            "cai_judge_reward_requests", "Rewards calls by mode.", ["mode"], registry=r
        )
        self.reward_results = Counter(
            "cai_judge_reward_results", "Reward results (a group or an item) by mode and "
            "outcome.", ["mode", "result"], registry=r,
        )  # fmt: skip
        self.reward_pair_errors = Counter(
            "cai_judge_reward_pair_errors", "Pairs a rewards call could not judge.", ["model"],
            registry=r,
        )  # fmt: skip
        self.reward_fallbacks = Counter(
            "cai_judge_reward_fallbacks", "Rewards a trainer-shaped route answered with a "
            "flagged fallback instead of a judgement.", ["route"], registry=r,
        )  # fmt: skip
        self.reward_exploit_flags = Counter(
            "cai_judge_reward_exploit_flags", "Judged completions the exploit detector "
            "flagged, by reason (labeling/exploits.py; a completion counts once per reason).",
            ["reason"], registry=r,
        )  # fmt: skip
        self.reward_timeouts = Counter(
            "cai_judge_reward_timeouts", "Samples a trainer-shaped route did not judge "
            "within its deadline (answered 503 with Retry-After).", ["route"], registry=r,
        )  # fmt: skip
        self.reward_prompt_mismatches = Counter(
            "cai_judge_reward_prompt_mismatches", "Trainer queries that did not start with "
            "their prompt: left-truncated (cut at the prompt's tail) or unmatched (judged "
            "whole).", ["route", "outcome"], registry=r,
        )  # fmt: skip
        for mode in ("group", "reference"):
            self.reward_requests.labels(mode=mode)
        self.reward_pair_errors.labels(model=model)
        self.pairs.labels(model=model)
        self.score_units.labels(model=model)
        self.cot_rationales.labels(model=model)
        self.revisions.labels(model=model)
        self.revision_rounds.labels(model=model)
        for step in GENERATION_STEPS:
            self.generations.labels(model=model, step=step)

    def observe_rewards(self, mode: str, results: int, errors: int, pair_errors: int) -> None:
        """One rewards call (DESIGN.md §9): results judged, results refused or failed, and
        the per-pair errors among the pairs its schedule created."""
        self.reward_requests.labels(mode=mode).inc()
        self.reward_results.labels(mode=mode, result="ok").inc(results)
        self.reward_results.labels(mode=mode, result="error").inc(errors)
        self.reward_pair_errors.labels(model=self.model).inc(pair_errors)

    def observe_exploit_flags(self, reasons: Sequence[str]) -> None:
        """The exploit reasons of one result's completions, one entry per flag."""
        for reason in reasons:
            self.reward_exploit_flags.labels(reason=reason).inc()

    def observe_reward_timeouts(self, route: str, count: int) -> None:
        """Samples a trainer-shaped route could not judge within its deadline (503)."""
        self.reward_timeouts.labels(route=route).inc(count)

    def observe_prompt_mismatches(self, route: str, truncated: int, unmatched: int) -> None:
        """Trainer queries that did not start with their prompt: cut at the prompt's
        left-truncated tail, or judged whole."""
        self.reward_prompt_mismatches.labels(route=route, outcome="truncated").inc(truncated)
        self.reward_prompt_mismatches.labels(route=route, outcome="unmatched").inc(unmatched)

    def observe_reward_fallbacks(self, route: str, count: int) -> None:
        """Rewards a trainer-shaped route answered with a flagged fallback instead."""
        self.reward_fallbacks.labels(route=route).inc(count)

    def observe_rationales(self, count: int) -> None:
        self.cot_rationales.labels(model=self.model).inc(count)

    def observe_generations(self, step: str, count: int) -> None:
        self.generations.labels(model=self.model, step=step).inc(count)

    def observe_revisions(self, chains: int, rounds: int) -> None:
        self.revisions.labels(model=self.model).inc(chains)
        self.revision_rounds.labels(model=self.model).inc(rounds)

    def observe_cache(self, result: str, units: int) -> None:
        self.cache_requests.labels(result=result).inc(units)

    def observe_aborted(self, units: int) -> None:
        self.aborted_units.labels(model=self.model).inc(units)

    def observe_batch(self, units: int) -> None:
        self.batch_size.labels(model=self.model).observe(units)

    def observe_labels(self, labels: list[Label], usage: Usage) -> None:
        model = self.model
        self.pairs.labels(model=model).inc(usage.pairs)
        self.score_units.labels(model=model).inc(usage.score_units)
        self.engine_tokens.labels(model=model, kind="prompt").inc(usage.prompt_tokens)
        self.engine_tokens.labels(model=model, kind="cached").inc(usage.cached_prompt_tokens)
        for label in labels:
            self.labels.labels(model=model, preferred=label.preferred).inc()
            self.position_consistency.labels(model=model).observe(label.consistency)
            self.answer_mass.labels(model=model).observe(label.answer_mass)
