"""What an engine reports it is, and what the label cache keys on (engine/identity.py).

Why: the cache once keyed on the `dtype` setting ("auto" by default), not the dtype the
engine ran in. Here the dtype is read back from the real tiny engine (vLLM's own model
config); the checkpoint digest and the cache keys, which need no engine, are
tests/engine/test_identity.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cai_judge.engine.identity import checkpoint_digest, dtype_name
from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.services.container import Services
from cai_judge.settings import Settings


@pytest.mark.engine
async def test_the_engine_reports_the_dtype_it_runs_in(
    tiny_engine: VllmEngine, tiny_model_dir: Path
):
    identity = tiny_engine.identity
    assert tiny_engine.config.dtype == "auto"  # the setting says nothing
    assert identity.dtype == dtype_name(tiny_engine._llm.model_config.dtype) == "float32"
    assert identity.revision == checkpoint_digest(str(tiny_model_dir))
    assert identity.model == tiny_model_dir.name


@pytest.mark.engine
async def test_the_label_cache_keys_on_the_engine_identity(
    tiny_engine: VllmEngine, registry: ConstitutionRegistry
):
    settings = Settings(max_model_len=1024, jobs_consumer=False, model_revision="r7")
    assert settings.dtype == "auto"
    services = Services.build(settings, tiny_engine, registry)
    try:
        key = services.cache.model_identity
        identity = tiny_engine.identity
        assert key.split("\0") == [identity.model, identity.revision, "float32", "r7"]
    finally:
        services.judge.close()
