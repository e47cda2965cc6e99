"""OpenRLHF: a `reward_func` file for `--reward.remote_url FILE.py` (docs/DESIGN.md §9).

OpenRLHF 0.11.2 can reach a reward service two ways (`openrlhf/utils/agent.py`,
`SingleTurnAgentExecutor`):

- `--reward.remote_url http://HOST/v1/rewards/openrlhf?constitution=…&principles=…`: its own
  HTTP client POSTs `{"query", "prompts", "labels"}` (one sample a call, 180 s, 5 tries) and
  the service answers `{"rewards", "scores", "extra_logs"}`; nothing of this SDK runs.
- `--reward.remote_url reward_func.py`: it loads the file and calls
  `reward_func(queries, prompts, labels)` in a worker thread, one sample a call
  (`_fetch_rewards_via_func`, no timeout of its own). `make_reward_func` builds that function.

OpenRLHF never sends a group in one call, so this is reference mode: each response against
`labels[i]` (the dataset column `--data.label_key` names), through the SDK's one rewards path
(`RewardCaller.items` → `POST /v1/rewards`), so the server's per-item errors, backpressure and
the deadline are handled as in every adapter, and counted in `reward_func.stats`.

What the judge sees is decided here, for this mode: OpenRLHF hands the *chat-templated* prompt
(`--data.apply_chat_template`: the system line, role markup and the generation prompt) and the
query decoded with its special tokens. `openrlhf_conversation` turns a ChatML or Llama-3
templated prompt back into the user's conversation (system messages dropped: they are the
policy's instructions, not the exchange to judge); `openrlhf_response` is the query minus its
prompt, trailing end-of-turn tokens stripped. A prompt in neither template is sent as it is.

A sample not judged before `deadline` (or refused in place) gets `fallback` (its group is not
known here, so 0.5), flagged in its `extra_logs["cai_judge_fallback"]` (1.0; OpenRLHF logs the
mean over samples) and counted. Configuration errors raise: OpenRLHF logs the exception and
the sample gets no reward, rather than a constant one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cai_judge_client.integrations._core import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DEADLINE_S,
    Prompt,
    RewardCaller,
    completion_text,
    make_sync,
)
from cai_judge_client.integrations.trl import resolve_deadline
from cai_judge_client.reward_types import ExploitPolicy

__all__ = ["make_reward_func", "openrlhf_conversation", "openrlhf_response"]

# End-of-turn and padding tokens a policy's decoded query may end with (the service's list for
# its own OpenRLHF route, services/rewards.py, copied: the SDK never imports the service).
POLICY_SPECIAL_TOKENS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|end▁of▁sentence|>",
    "</s>",
    "<pad>",
    "<|pad|>",
)
_CHATML = re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?:<\|im_end\|>|\Z)", re.S)
_LLAMA3 = re.compile(
    r"<\|start_header_id\|>(\w+)<\|end_header_id\|>\n\n(.*?)(?:<\|eot_id\|>|\Z)", re.S
)


def openrlhf_conversation(prompt: str) -> Prompt:
    """The conversation inside a chat-templated prompt: its user and assistant turns as
    messages, the system turns and the empty generation prompt dropped; a prompt in no
    known template as it is."""
    for pattern in (_CHATML, _LLAMA3):
        turns = pattern.findall(prompt)
        if turns:
            messages = [
                {"role": role, "content": content.strip()}
                for role, content in turns
                if role != "system"
            ]
            if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
                messages.pop()  # the generation prompt the policy completes
            if messages:
                return messages
    return prompt


def openrlhf_response(query: str, prompt: str) -> str:
    """The policy's response inside an OpenRLHF query (prompt + response decoded as one
    string): the query minus its prompt, trailing end-of-turn tokens stripped."""
    response = query[len(prompt) :] if query.startswith(prompt) else query
    stripped = True
    while stripped:
        stripped = False
        response = response.rstrip()
        for token in POLICY_SPECIAL_TOKENS:
            if response.endswith(token):
                response = response[: -len(token)]
                stripped = True
    return response.strip()


def make_reward_func(
    client: Any | None = None,
    *,
    constitution: str,
    principles: int | str = "all",
    seed: int = 0,
    aggregator: str | None = None,
    calibrated: bool = False,
    exploits: ExploitPolicy = "flag",
    deadline: float = DEFAULT_DEADLINE_S,
    concurrency: int = DEFAULT_CONCURRENCY,
    fallback: float = 0.5,
    timeout: float | None = None,
) -> Callable[..., dict[str, Any]]:
    """`reward_func(queries, prompts, labels, **kwargs) -> {"rewards", "scores",
    "extra_logs"}` for OpenRLHF. `deadline` bounds each call (seconds, retries of
    backpressure included); `concurrency` bounds the requests in flight across the calls
    OpenRLHF makes at once.

    In the file OpenRLHF loads (the judge's address from `CAI_JUDGE_BASE_URL`):

        from cai_judge_client.integrations.openrlhf import make_reward_func
        reward_func = make_reward_func(constitution="harmless", principles=4)
    """
    caller = RewardCaller(
        client,
        {
            "constitution": constitution,
            "principles": principles,
            "seed": seed,
            "aggregator": aggregator,
            "calibrated": calibrated or None,
            "exploits": None if exploits == "flag" else exploits,
        },
        deadline=resolve_deadline(deadline, timeout),
        fallback=fallback,
        concurrency=concurrency,
    )

    async def judged(queries: list[str], prompts: list[str], labels: list[Any]) -> list[Any]:
        if not len(queries) == len(prompts) == len(labels):
            raise ValueError(
                f"{len(queries)} queries, {len(prompts)} prompts and {len(labels)} labels"
            )
        return await caller.items(
            [
                (openrlhf_conversation(p), openrlhf_response(q, p), completion_text(label))
                for q, p, label in zip(queries, prompts, labels, strict=True)
            ]
        )

    sync = make_sync(judged)

    def reward_func(
        queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any
    ) -> dict[str, Any]:
        values: list[Any] = sync(queries, prompts, labels)
        rewards = [fallback if v is None else v for v in values]
        flags = [float(v is None) for v in values]
        share = sum(flags) / len(flags) if flags else 0.0
        return {"rewards": rewards, "scores": rewards, "extra_logs": {"cai_judge_fallback": share}}

    reward_func.stats = caller.stats  # type: ignore[attr-defined]
    return reward_func
