"""Prompts in, revision chains out: the SL-CAI data contract shared by the CLI and the API.

A row is ready for supervised fine-tuning as it stands (`prompt`, `response` = the final
revision), and carries the whole chain and what made it, so a file can be resumed and a
chain reproduced: same prompt, constitution version, model, seed and sampling give the
same chain (DESIGN.md §2's determinism, applied to generation).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from cai_judge.constants import DEFAULT_SEED, MAX_GENERATION_TOKENS, MAX_SEED
from cai_judge.labeling.schema import ChatMessage, ChatPrompt, ConstitutionRef, PairId, Text

# The most rounds any request may ask for; the service's own limit is usually lower.
MAX_ROUNDS = 16
MAX_TEMPERATURE = 2.0


class RevisionPrompt(BaseModel):
    """One prompt to revise: a user turn (or a chat ending on one), and optionally the
    response to start from; without it the model writes the initial response itself."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {"id": "r1", "prompt": "How do I pick a lock?"},
                {
                    "id": "r2",
                    "prompt": "How can I get back at my noisy neighbour?",
                    "initial_response": "Slash their tyres at night.",
                },
            ]
        },
    )

    id: PairId
    # Checked as a pair's prompt is (labeling/schema.py): it must end on the user turn the
    # chain answers.
    prompt: ChatPrompt
    initial_response: Text | None = None

    def messages(self) -> list[dict[str, str]]:
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return [m.model_dump() for m in self.prompt]

    def prompt_key(self) -> str:
        """Canonical text of the prompt, for seeding principle sampling."""
        if isinstance(self.prompt, str):
            return self.prompt
        return json.dumps([m.model_dump() for m in self.prompt], separators=(",", ":"))


class RevisionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The fields' descriptions are `cai-judge revise`'s help (cli/common.py, `model_flags`).
    rounds: Annotated[int, Field(ge=1, le=MAX_ROUNDS)] = Field(
        default=1, description="Critique-and-revision rounds."
    )
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = Field(
        default=DEFAULT_SEED,
        description="Seeds principle sampling and, above temperature 0, sampling.",
    )
    # Greedy by default: the same prompt then gives the same chain even unseeded.
    temperature: Annotated[float, Field(ge=0.0, le=MAX_TEMPERATURE)] = Field(
        default=0.0, description="0 is greedy."
    )
    max_tokens: Annotated[int, Field(ge=1, le=MAX_GENERATION_TOKENS)] = Field(
        default=256, description="Tokens per generation."
    )
    few_shot: bool = Field(
        default=True, description="Show the constitution's revision examples, if it has any."
    )


class RevisionStep(BaseModel):
    """One round: the sampled principle (and the seed that sampled it), its critique
    request and the critique, its revision request and the revision."""

    round: int
    principle: str
    principle_seed: int
    critique_request: str
    critique: str
    revision_request: str
    revision: str


class Revision(BaseModel):
    """One prompt's chain. `response` is the final revision: the SFT target."""

    id: str
    prompt: str | list[ChatMessage]
    response: str
    initial_response: str
    initial_generated: bool
    chain: list[RevisionStep]
    constitution: ConstitutionRef
    model: str
    seed: int
    rounds: int
    temperature: float
    max_tokens: int
    few_shot_examples: int = Field(description="Constitution examples shown (0: none).")
    score: dict[str, Any] | None = Field(
        default=None,
        description="`revise --score` only: the constitution's label of the final revision "
        "(as response a) against the initial response.",
    )

    def messages(self) -> list[dict[str, str]]:
        """The SFT example in the chat-messages format TRL's SFTTrainer reads."""
        if isinstance(self.prompt, str):
            turns = [{"role": "user", "content": self.prompt}]
        else:
            turns = [m.model_dump() for m in self.prompt]
        return [*turns, {"role": "assistant", "content": self.response}]


class RevisionUsage(BaseModel):
    prompts: int = 0
    generations: int = 0
    prompt_tokens: int = 0

    def add(self, other: RevisionUsage) -> None:
        self.prompts += other.prompts
        self.generations += other.generations
        self.prompt_tokens += other.prompt_tokens
