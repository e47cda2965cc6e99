"""The real RL trainers on cai-judge's rewards and exports (DESIGN.md §9).

TRL is installed in the test environment (the dev extra). Its trainers run here on the tiny
test model (cai_judge/testing/tiny_model.py) on the CPU, against a real server on the same tiny
model: `GRPOTrainer` for 2 steps with the SDK's group-mode and reference-mode reward
functions, and `RewardTrainer` for a step on what the SDK exported from the server's labels.
Measured on the 2-core machine: a GRPO step here takes ~1–3 s, the trainer's set-up ~10 s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cai_judge.testing.service_process import ServiceProcess as Server
from cai_judge.testing.service_process import start_server, stop
from tests.support.paths import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "pairs.jsonl"
GENERATIONS = 4

trl = pytest.importorskip("trl")

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("trainer-server") / "server.log"
    running = start_server(tiny_model_dir, log, rate_limit="100000/minute")
    yield running
    stop(running)


def _cpu_trainer_args(tmp_path: Path, steps: int) -> dict[str, Any]:
    return {
        "output_dir": str(tmp_path / "out"),
        "max_steps": steps,
        "logging_steps": 1,
        "report_to": [],
        "use_cpu": True,
        "bf16": False,
        "save_strategy": "no",
        "dataloader_num_workers": 0,
        "seed": 0,
    }


def _grpo(tiny_model_dir: Path, tmp_path: Path, reward_func: Any) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    prompts = ["Which response is less harmful?", "the quick brown fox"] * 2
    dataset = Dataset.from_dict(
        {"prompt": prompts, "chosen": ["I cannot help with that request."] * len(prompts)}
    )
    config = GRPOConfig(
        **_cpu_trainer_args(tmp_path, steps=2),
        per_device_train_batch_size=GENERATIONS,
        num_generations=GENERATIONS,
        max_completion_length=8,
    )
    trainer = GRPOTrainer(
        model=str(tiny_model_dir), reward_funcs=reward_func, args=config, train_dataset=dataset
    )
    trainer.train()
    return trainer


def _logged_rewards(trainer: Any, name: str) -> list[float]:
    key = f"rewards/{name}/mean"
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def test_grpo_trains_two_steps_on_group_rewards(
    server: Server, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import cai_judge_client as sdk
    from cai_judge_client.integrations.trl import group_reward_func

    before = server.metric('cai_judge_reward_requests_total{mode="group"}')
    reward = group_reward_func(
        sdk.AsyncCaiJudge(base_url=server.url),
        num_generations=GENERATIONS,
        constitution="harmless",
        principles=1,
    )
    trainer = _grpo(tiny_model_dir, tmp_path, reward)
    logged = _logged_rewards(trainer, reward.__name__)
    # One group per step, judged round robin: its rewards average exactly 0.5.
    assert logged == pytest.approx([0.5, 0.5], abs=1e-6)
    assert server.metric('cai_judge_reward_requests_total{mode="group"}') == before + 2
    stats = reward.stats  # type: ignore[attr-defined]
    assert (stats.calls, stats.fallbacks, stats.errors) == (2, 0, 0), stats.as_dict()
    assert stats.completions == 2 * GENERATIONS


def test_grpo_trains_two_steps_on_reference_rewards_through_the_sync_wrapper(
    server: Server, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import cai_judge_client as sdk
    from cai_judge_client.integrations.trl import make_sync, reference_reward_func

    before = server.metric('cai_judge_reward_requests_total{mode="reference"}')
    reward = make_sync(
        reference_reward_func(
            sdk.AsyncCaiJudge(base_url=server.url),
            reference_column="chosen",
            constitution="harmless",
            principles=1,
        )
    )
    trainer = _grpo(tiny_model_dir, tmp_path, reward)
    logged = _logged_rewards(trainer, reward.__name__)
    assert len(logged) == 2 and all(0.0 < value < 1.0 for value in logged), logged
    assert server.metric('cai_judge_reward_requests_total{mode="reference"}') == before + 2
    stats = reward.stats  # type: ignore[attr-defined]
    assert (stats.calls, stats.fallbacks, stats.errors) == (2, 0, 0), stats.as_dict()


@pytest.mark.parametrize("form", ["dataset", "jsonl"])
def test_reward_trainer_trains_on_the_sdk_export_of_the_examples(
    form: str, server: Server, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The export of examples/pairs.jsonl (mixed string and chat prompts) failed
    in Arrow (`Expected bytes, got a 'list' object`), and its JSONL in RewardTrainer. One
    prompt form now: both load into `datasets` and train a step."""
    import datasets
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    import cai_judge_client as sdk

    lines = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]
    assert {type(pair["prompt"]) for pair in lines} == {str, list}, "the examples mix both"
    with sdk.CaiJudge(base_url=server.url) as client:
        labels = client.labels.create(lines, constitution="harmless", principles=1).labels
    if form == "dataset":
        dataset = sdk.to_reward_dataset(labels, EXAMPLES)
    else:
        summary = sdk.to_reward_dataset(labels, EXAMPLES, tmp_path / "rm.jsonl")
        assert summary.rows > 0
        dataset = datasets.load_dataset("json", data_files=str(tmp_path / "rm.jsonl"))["train"]
    assert isinstance(dataset, datasets.Dataset) and len(dataset) > 0
    assert dataset[0]["chosen"][0]["role"] == "assistant"
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    trainer = RewardTrainer(
        model=str(tiny_model_dir),
        args=RewardConfig(
            **_cpu_trainer_args(tmp_path, steps=1), per_device_train_batch_size=2, max_length=256
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 1 and math.isfinite(losses[0])


def _readme_verl() -> tuple[str, list[str]]:
    """The README's verl reward file and its `reward.*` overrides, as a user copies them."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("**verl**") : text.index("**slime**")]
    python = section.split("```python\n", 1)[1].split("```", 1)[0]
    bash = section.split("```bash\n", 1)[1].split("```", 1)[0]
    overrides = [word for word in bash.split() if word.startswith("reward.")]
    return python, overrides


def test_verl_resolves_the_readme_reward_file_through_its_own_config(
    server: Server, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verl 0.9.1's main_ppo reads the reward file from `reward.custom_reward_function`:
    the README's `custom_reward_function.path=…` was silently ignored (verl fell back to its
    default scorer). Here verl composes its own ppo_trainer config with the README's overrides
    and its own loader (`load_reward_manager`, what the reward loop calls) resolves the
    README's file, which reaches the judge through CAI_JUDGE_BASE_URL."""
    import asyncio

    import numpy as np
    import torch
    import verl
    from hydra import compose, initialize_config_dir
    from tensordict import TensorDict
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.trainer.ppo.reward import get_custom_reward_fn, load_reward_manager

    python, overrides = _readme_verl()
    assert overrides == [
        "reward.custom_reward_function.path=cai_judge_reward.py",
        "reward.custom_reward_function.name=compute_score",
    ]
    reward_file = tmp_path / "cai_judge_reward.py"
    reward_file.write_text(python.replace("principles=4", "principles=1"))
    overrides = [o.replace("cai_judge_reward.py", str(reward_file)) for o in overrides]
    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose("ppo_trainer", overrides=overrides)
        # The key the README used to give resolves to nothing: verl's default scorer.
        legacy = [
            o.replace("reward.custom_reward_function", "custom_reward_function") for o in overrides
        ]
        assert get_custom_reward_fn(compose("ppo_trainer", overrides=legacy)) is None

    monkeypatch.setenv("CAI_JUDGE_BASE_URL", server.url)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    prompt = "How do I pick a lock?"
    response_ids = tokenizer.encode("Call a locksmith if it is your own lock.")
    prompt_ids = tokenizer.encode(prompt)
    data = DataProto(
        batch=TensorDict(
            {
                "prompts": torch.tensor([prompt_ids]),
                "responses": torch.tensor([response_ids]),
                "attention_mask": torch.ones(
                    1, len(prompt_ids) + len(response_ids), dtype=torch.long
                ),
            },
            batch_size=[1],
        ),
        non_tensor_batch={
            "data_source": np.array(["hh"], dtype=object),
            "reward_model": np.array([{"ground_truth": "I cannot help with that."}], dtype=object),
            "extra_info": np.array([{"question": prompt}], dtype=object),
        },
    )
    before = server.metric('cai_judge_reward_requests_total{mode="reference"}')

    async def run() -> dict[str, Any]:
        # Made inside the loop, as verl's reward loop worker does (the manager keeps it).
        manager = load_reward_manager(config, tokenizer)
        return await manager.run_single(data)  # type: ignore[no-any-return]

    result = asyncio.run(run())
    assert 0.0 < result["reward_score"] < 1.0
    assert result["reward_extra_info"]["cai_judge_fallback"] == 0.0
    assert server.metric('cai_judge_reward_requests_total{mode="reference"}') == before + 1
