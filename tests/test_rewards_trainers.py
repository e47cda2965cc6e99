"""The real RL trainers on cai-judge's rewards and exports (issue 21, DESIGN.md §9).

TRL is installed in the test environment (the dev extra); its trainers run here on the tiny
test model (tests/support/tiny_model.py) on the CPU, a few seconds a step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.schema import LabelOptions, Pair

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "pairs.jsonl"

trl = pytest.importorskip("trl")

pytestmark = pytest.mark.engine


def _cpu_trainer_args(tmp_path: Path) -> dict[str, Any]:
    return {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "logging_steps": 1,
        "report_to": [],
        "use_cpu": True,
        "bf16": False,
        "save_strategy": "no",
        "dataloader_num_workers": 0,
        "seed": 0,
    }


@pytest.fixture(scope="module")
async def example_labels(tiny_engine: Any, registry: ConstitutionRegistry) -> list[dict[str, Any]]:
    """examples/pairs.jsonl as it is (string and chat prompts mixed), labeled by the real
    engine, as the SDK reads labels off the wire."""
    pairs = [Pair(**json.loads(line)) for line in EXAMPLES.read_text().splitlines() if line]
    judge = Judge(tiny_engine, registry)
    try:
        batch = await judge.label(pairs, "harmless", LabelOptions(principles=2))
    finally:
        judge.close()
    return [result.model_dump(mode="json") for result in batch.results]


@pytest.mark.parametrize("form", ["dataset", "jsonl"])
async def test_reward_trainer_trains_on_the_sdk_export_of_the_examples(
    form: str, example_labels: list[dict[str, Any]], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Issue 21: the export of examples/pairs.jsonl (mixed string and chat prompts) failed
    in Arrow (`Expected bytes, got a 'list' object`), and its JSONL in RewardTrainer. One
    prompt form now: both load into `datasets` and train a step."""
    import datasets
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    import cai_judge_client as sdk

    prompts = {type(json.loads(line)["prompt"]) for line in EXAMPLES.read_text().splitlines()}
    assert prompts == {str, list}, "the examples should mix string and chat prompts"
    if form == "dataset":
        dataset = sdk.to_reward_dataset(example_labels, EXAMPLES)
    else:
        summary = sdk.to_reward_dataset(example_labels, EXAMPLES, tmp_path / "rm.jsonl")
        assert summary.rows > 0
        dataset = datasets.load_dataset("json", data_files=str(tmp_path / "rm.jsonl"))["train"]
    assert isinstance(dataset, datasets.Dataset) and len(dataset) > 0
    first = dataset[0]
    assert first["prompt"][0]["role"] in ("system", "user")
    assert first["chosen"][0]["role"] == "assistant"
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    trainer = RewardTrainer(
        model=str(tiny_model_dir),
        args=RewardConfig(**_cpu_trainer_args(tmp_path), max_length=256),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 1 and losses[0] == losses[0]  # one step, a number (not NaN)
    assert os.environ.get("VLLM_CPU_KVCACHE_SPACE") == "1"
