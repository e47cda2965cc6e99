"""Start the configured engine from Settings: `CAI_JUDGE_ENGINE=local` (vLLM in this
process) or `remote` (the vLLM servers of `CAI_JUDGE_VLLM_URLS`), DESIGN.md §4."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai_judge.engine.default_model import (
    WHEEL_REQUIREMENT,
    default_model_dir,
    verify_prepared_model,
)
from cai_judge.engine.vllm_async import VllmEngine, VllmEngineConfig, VllmScorer
from cai_judge.settings import DEFAULT_MODEL, Settings

if TYPE_CHECKING:
    from cai_judge.engine.base import Engine
    from cai_judge.engine.vllm_remote import RemoteEngineConfig

DEFAULT_MODEL_NAME = f"HuggingFaceTB/SmolLM2-135M-Instruct ({WHEEL_REQUIREMENT})"


def resolve_model_path(settings: Settings) -> str:
    """The checkpoint vLLM loads; the default model must already be prepared."""
    if settings.model != DEFAULT_MODEL:
        return settings.model
    return str(verify_prepared_model(default_model_dir(settings.cache_dir)))


def engine_config(settings: Settings) -> VllmEngineConfig:
    return VllmEngineConfig(
        model=resolve_model_path(settings),
        dtype=settings.dtype,
        max_model_len=settings.max_model_len,
        enable_prefix_caching=settings.enable_prefix_caching,
        block_size=settings.block_size,
        max_num_seqs=settings.max_num_seqs,
        cpu_kv_cache_gib=settings.cpu_kv_cache_gib,
        cpu_threads_bind=settings.cpu_threads_bind,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        enforce_eager=settings.enforce_eager,
        score_order=settings.score_order,
    )


def remote_engine_config(settings: Settings) -> RemoteEngineConfig:
    from cai_judge.engine.vllm_remote import RemoteEngineConfig

    if not settings.vllm_urls:
        raise ValueError(
            "CAI_JUDGE_ENGINE=remote needs CAI_JUDGE_VLLM_URLS: the vLLM servers' base URLs, "
            "comma-separated (e.g. http://vllm-0:8000,http://vllm-1:8000)"
        )
    return RemoteEngineConfig(
        urls=tuple(settings.vllm_urls),
        model=resolve_model_path(settings),
        max_model_len=settings.max_model_len,
        routing=settings.vllm_routing,
        load_factor=settings.vllm_load_factor,
        connect_timeout_s=settings.vllm_connect_timeout_s,
        request_timeout_s=settings.vllm_request_timeout_s,
        retries=settings.vllm_retries,
        health_interval_s=settings.vllm_health_interval_s,
        dns_discovery=settings.vllm_dns_discovery,
    )


def model_display_name(settings: Settings) -> str:
    return DEFAULT_MODEL_NAME if settings.model == DEFAULT_MODEL else settings.model


def runs_core_in_process(settings: Settings, *, serving: bool) -> bool:
    if settings.engine_core == "auto":
        return not serving
    return settings.engine_core == "in-process"


async def start_engine(settings: Settings, *, serving: bool) -> Engine:
    """The configured engine, warmed up: `serving` (a server or a job worker) decides
    where an `auto` engine core runs (Settings.engine_core)."""
    engine: Engine
    if settings.engine == "remote":
        from cai_judge.engine.vllm_remote import RemoteVllmEngine

        engine = await RemoteVllmEngine.start(remote_engine_config(settings))
    else:
        local: VllmScorer
        if runs_core_in_process(settings, serving=serving):
            from cai_judge.engine.vllm_offline import OfflineVllmEngine

            local = await OfflineVllmEngine.start(engine_config(settings))
        else:
            local = await VllmEngine.start(engine_config(settings))
        try:
            # The first forward pass pays one-time costs (1.5 s on the CI machine): here,
            # once, so a server turns ready only after it and no request waits on it.
            await local.warm_up()
        except BaseException:
            await local.shutdown()
            raise
        engine = local
    engine.model_name = model_display_name(settings)
    return engine
