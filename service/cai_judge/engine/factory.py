"""Start the configured engine from Settings."""

from __future__ import annotations

from cai_judge.engine.default_model import (
    WHEEL_REQUIREMENT,
    default_model_dir,
    verify_prepared_model,
)
from cai_judge.engine.vllm_local import VllmEngine, VllmEngineConfig
from cai_judge.settings import DEFAULT_MODEL, Settings

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
    )


def model_display_name(settings: Settings) -> str:
    return DEFAULT_MODEL_NAME if settings.model == DEFAULT_MODEL else settings.model


async def start_engine(settings: Settings) -> VllmEngine:
    engine = await VllmEngine.start(engine_config(settings))
    engine.model_name = model_display_name(settings)
    return engine
