"""Pairs in, labels out: the data contract shared by the CLI, the API and the SDK."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from cai_judge.labeling.label_math import Aggregator, PrincipleBreakdown

# The one options type lives in options.py; importable from here as it always was.
from cai_judge.labeling.options import LabelOptions as LabelOptions
from cai_judge.labeling.templates import ChatMessage as RenderChatMessage
from cai_judge.labeling.templates import Conversation

MAX_TEXT_CHARS = 200_000

PairId = Annotated[str, Field(min_length=1, max_length=256)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


_ROLE_ORDER = (
    "an optional system message first, then user and assistant turns alternating, "
    "starting and ending with user"
)


def chat_role_order_problem(roles: list[str]) -> tuple[int, str] | None:
    """The first message out of order and what was expected there, or None if all fit."""
    start = 1 if roles and roles[0] == "system" else 0
    for index in range(start, len(roles)):
        expected = "user" if (index - start) % 2 == 0 else "assistant"
        if roles[index] != expected:
            return index, f"expected role {expected!r} here, got {roles[index]!r} ({_ROLE_ORDER})"
    if len(roles) == start or roles[-1] != "user":
        last = len(roles) - 1
        got = roles[last]
        return last, f"the conversation must end on a user turn, got {got!r} ({_ROLE_ORDER})"
    return None


def _roles_in_order(prompt: str | list[ChatMessage]) -> str | list[ChatMessage]:
    """The one chat-prompt check, for pairs and SL-CAI prompts alike.

    The judge renders a pair's conversation as Human/Assistant turns ending on the request
    being answered, and a revision chain appends assistant and user turns after its prompt:
    any other order makes the responses answer something else. The error points at the
    offending message (loc prompt.<j>.role), so a per-item error names it.
    """
    if isinstance(prompt, str):
        return prompt
    problem = chat_role_order_problem([m.role for m in prompt])
    if problem is None:
        return prompt
    index, message = problem
    raise ValidationError.from_exception_data(
        "prompt",
        [
            InitErrorDetails(
                type=PydanticCustomError("chat_role_order", message),
                loc=(index, "role"),
                input=prompt[index].role,
            )
        ],
    )


# A prompt: text, or chat messages in the order `_roles_in_order` checks.
ChatPrompt = Annotated[
    Text | Annotated[list[ChatMessage], Field(min_length=1, max_length=256)],
    AfterValidator(_roles_in_order),
]


class Pair(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "p1",
                    "prompt": "How do I pick a lock?",
                    "response_a": "I can't help with breaking into property you don't own.",
                    "response_b": "Sure: insert a tension wrench...",
                }
            ]
        },
    )

    id: PairId
    prompt: ChatPrompt
    response_a: Text
    response_b: Text

    def conversation(self) -> Conversation:
        if isinstance(self.prompt, str):
            return self.prompt
        return [RenderChatMessage(role=m.role, content=m.content) for m in self.prompt]

    def prompt_key(self) -> str:
        """Canonical text of the prompt, for seeding principle selection."""
        if isinstance(self.prompt, str):
            return self.prompt
        return json.dumps([m.model_dump() for m in self.prompt], separators=(",", ":"))

    def swapped(self) -> Pair:
        return self.model_copy(
            update={"response_a": self.response_b, "response_b": self.response_a}
        )


class ConstitutionRef(BaseModel):
    id: str
    version: str


class TemplateRef(BaseModel):
    """The judge prompt that made a label: its id and the renderer's version, which covers
    every rule that changes the tokens the model sees (chat format, prefix padding)."""

    id: str
    version: str


class PrincipleResult(BaseModel):
    principle: str
    s_ab: float
    s_ba: float
    margin: float
    position_bias: float
    agree: bool
    answer_mass: float
    # CoT mode: the numbers above are clamped; these are the unclamped ones.
    raw_s_ab: float | None = None
    raw_s_ba: float | None = None
    raw_margin: float | None = None

    @classmethod
    def from_breakdown(
        cls, b: PrincipleBreakdown, raw: PrincipleBreakdown | None = None
    ) -> PrincipleResult:
        return cls(
            principle=b.principle_id,
            s_ab=b.s_ab,
            s_ba=b.s_ba,
            margin=b.margin,
            position_bias=b.bias,
            agree=b.agree,
            answer_mass=b.answer_mass,
            raw_s_ab=None if raw is None else raw.s_ab,
            raw_s_ba=None if raw is None else raw.s_ba,
            raw_margin=None if raw is None else raw.margin,
        )

    def to_breakdown(self) -> PrincipleBreakdown:
        return PrincipleBreakdown(
            principle_id=self.principle,
            s_ab=self.s_ab,
            s_ba=self.s_ba,
            margin=self.margin,
            bias=self.position_bias,
            agree=self.agree,
            answer_mass=self.answer_mass,
        )


class LabelCalibration(BaseModel):
    """How a calibrated label's numbers were made: the profile, and what it was given."""

    profile: str = Field(description="sha256 of the calibration profile that was applied")
    raw_margin: float = Field(description="the judge's own margin, before the profile")
    raw_p_a: float = Field(description="the judge's own p_a = σ(raw_margin)")


class Rationale(BaseModel):
    """CoT mode: what the judge wrote for one principle, in each order, before answering.

    `ab` is the rationale with response_a shown as option (A), `ba` with response_b there.
    """

    principle: str
    ab: str
    ba: str


class EnsembleProvenance(BaseModel):
    """What an adaptive ensemble did (labeling/ensemble.py): absent on `full` labels.

    The label's `principles` are the `scored` ones; its numbers are DESIGN.md §2's over them.
    """

    mode: Literal["adaptive"] = "adaptive"
    rule: str = Field(description="The stopping rule (`wor-betting`: labeling/ensemble.py).")
    delta: float = Field(description="Stops on the full ensemble's other side at most this often.")
    clip: float = Field(
        description="Per-principle margins are clipped to ±this (nats) in the rule."
    )
    round: int = Field(description="The round it stopped after (1-based).")
    rounds: int = Field(description="The rounds scoring every selected principle would take.")
    scored: int = Field(description="Principles scored (the label's `principles`).")
    selected: int = Field(description="Principles selected: what `full` would score.")
    score_units: int = Field(description="Score units this label used: 2 per principle scored.")
    decided: Literal["a", "b"] | None = Field(
        default=None, description="The side the rule certified; None when it scored all."
    )
    certain: bool = Field(
        default=False,
        description="True when no values of the remaining principles could change the side.",
    )


class Label(BaseModel):
    """One pair's label (DESIGN.md §2). `margin` is the log-odds, in nats, that a is better.

    With `calibration` set, `margin`, `p_a` and `preferred` come from that calibration
    profile (labeling/calibration_profile.py) and the judge's own numbers are kept in it.
    """

    id: str
    preferred: Literal["a", "b", "tie"]
    margin: float
    p_a: float
    position_bias: float
    consistency: float
    answer_mass: float
    low_confidence: bool
    principles: list[str]
    # The `principles` option that selected them: `all`, or k. Resuming a file checks it.
    selection: int | Literal["all"]
    aggregator: Aggregator
    constitution: ConstitutionRef
    template: TemplateRef
    model: str
    seed: int
    per_principle: list[PrincipleResult] | None = None
    calibration: LabelCalibration | None = None
    # CoT mode only (absent on plain labels): `margin`, `p_a` and `preferred` above are the
    # clamped numbers, the ones to train on; `raw_*` are before the clamp.
    mode: Literal["cot"] | None = None
    raw_margin: float | None = None
    raw_p_a: float | None = None
    cot_max_probability: float | None = None
    cot_max_tokens: int | None = None
    rationales: list[Rationale] | None = None
    # Adaptive ensembles only (absent on `full` labels): where the rounds stopped.
    ensemble: EnsembleProvenance | None = None


class ErrorDetail(BaseModel):
    type: str = Field(description="A stable, machine-readable error kind.")
    message: str = Field(description="What is wrong, naming the limit where there is one.")
    param: str | None = Field(default=None, description="The field at fault, dotted path.")


class PairError(BaseModel):
    """In place of a label: this pair could not be labeled; the rest of the batch still is.

    The one per-item error type, from the Judge to the HTTP and gRPC answers and the CLI.
    """

    # Optional with a default: responses leave out None fields, and an input with no usable
    # id must still match the schema (schemathesis found the required-but-absent `id`).
    id: str | None = Field(default=None, description="The input's id; absent when it had none.")
    index: int = Field(description="The pair's position in the request or file.")
    error: ErrorDetail

    @classmethod
    def of(
        cls,
        pair_id: str | None,
        index: int,
        message: str,
        *,
        type: str = "invalid_pair",
        param: str | None = None,
    ) -> PairError:
        return cls(
            id=pair_id, index=index, error=ErrorDetail(type=type, message=message, param=param)
        )


class Usage(BaseModel):
    pairs: int = 0
    score_units: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    # Of `score_units`, those the label cache answered with no engine work.
    cached_score_units: int = 0

    def add(self, other: Usage) -> None:
        self.pairs += other.pairs
        self.score_units += other.score_units
        self.prompt_tokens += other.prompt_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.cached_score_units += other.cached_score_units
