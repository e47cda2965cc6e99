"""What an engine reports it is, and what the label cache keys on (engine/identity.py).

Issue 19: the cache keyed on the `dtype` setting ("auto" by default), not the dtype the
engine ran in. The checkpoint digest runs on copies of the tiny model's files; the dtype
is read back from the real tiny engine (vLLM's own model config).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from cai_judge.engine.base import ScoreUnit
from cai_judge.engine.caching import model_identity, unit_digest
from cai_judge.engine.identity import EngineIdentity, checkpoint_digest, dtype_name
from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.services.container import Services
from cai_judge.settings import Settings


def test_the_checkpoint_digest_follows_the_files_not_the_path(tiny_model_dir: Path, tmp_path: Path):
    here = shutil.copytree(tiny_model_dir, tmp_path / "here" / "tiny")
    there = shutil.copytree(tiny_model_dir, tmp_path / "there" / "tiny")
    digest = checkpoint_digest(str(here))
    assert digest.startswith("sha256:") and digest == checkpoint_digest(str(there))
    # Retrained: same names and sizes, other numbers (past the safetensors header).
    weights = there / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + 100] ^= 0xFF
    weights.write_bytes(bytes(data))
    retrained = checkpoint_digest(str(there))
    assert retrained != digest
    # Another architecture setting, same weights.
    config = json.loads((here / "config.json").read_text())
    config["rope_theta"] = float(config.get("rope_theta") or 10000.0) * 2
    (here / "config.json").write_text(json.dumps(config))
    assert checkpoint_digest(str(here)) not in (digest, retrained)
    assert checkpoint_digest("HuggingFaceTB/SmolLM2-135M-Instruct") == ""  # a hub ID


def test_cache_keys_differ_across_identities():
    base = EngineIdentity(model="tiny", revision="sha256:ab", dtype="float32")
    unit = ScoreUnit((1, 2, 3), (5, 7), prefix_length=0)

    class Reports:
        def __init__(self, identity: EngineIdentity) -> None:
            self.identity = identity

    identities = [
        model_identity(Reports(base), ""),  # type: ignore[arg-type]
        model_identity(Reports(replace(base, dtype="bfloat16")), ""),  # type: ignore[arg-type]
        model_identity(Reports(replace(base, revision="sha256:cd")), ""),  # type: ignore[arg-type]
        model_identity(Reports(replace(base, model="other")), ""),  # type: ignore[arg-type]
        model_identity(Reports(base), "retrained-2026-12"),  # type: ignore[arg-type]
    ]
    digests = {unit_digest(identity, unit) for identity in identities}
    assert len(digests) == len(identities)


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
