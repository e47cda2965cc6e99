"""Judge prompt templates and their rendering into token ids (DESIGN.md §3).

Layout: everything shared by a pair's principles goes first, the principle question
last, so that vLLM's prefix cache computes each order's long prefix once and only the
short principle tail per principle.

Untrusted text (the conversation and both responses) is quoted line by line with "> "
so it cannot forge an option marker, a delimiter or the answer stem, and special-token
strings inside it are broken up so the tokenizer cannot turn them into control tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Protocol

QUOTE = "> "
# Inserted into special-token strings found in untrusted text: invisible when printed,
# but it stops "<|im_end|>" inside a response from becoming the real control token.
_TOKEN_BREAKER = "\u200b"
_PRINCIPLE_SENTINEL = "\x00CAI_JUDGE_PRINCIPLE\x00"


class TemplateError(ValueError):
    """A template/tokenizer combination the judge cannot score with."""


class Tokenizer(Protocol):
    """The slice of a Hugging Face tokenizer that rendering needs."""

    chat_template: Any
    bos_token: Any

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def get_added_vocab(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class JudgeTemplate:
    id: str
    preamble: str
    conversation_header: str
    options_header: str
    answer_stem: str

    @property
    def version(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


TEMPLATES: dict[str, JudgeTemplate] = {
    "cai-mc-v1": JudgeTemplate(
        id="cai-mc-v1",
        preamble=(
            "You are judging two responses against a principle. Text from the conversation "
            'and the responses is quoted: every line of it starts with "> ".'
        ),
        conversation_header=(
            "Consider the following conversation between a human and an assistant:"
        ),
        options_header="Options:",
        answer_stem="The answer is: (",
    ),
}

ANSWER_LETTERS = ("A", "B")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


Conversation = str | Sequence[ChatMessage]

_ROLE_NAMES = {"user": "Human", "assistant": "Assistant", "system": "System"}


def render_chat_template_split(tokenizer: Tokenizer, user_content: str) -> tuple[str, str]:
    """Render `user_content` (holding the principle sentinel) as one chat user turn.

    Returns the text before and after the sentinel; the assistant header is in `after`.
    """
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_content}], tokenize=False, add_generation_prompt=True
    )
    if not isinstance(rendered, str) or rendered.count(_PRINCIPLE_SENTINEL) != 1:
        raise TemplateError("the tokenizer's chat template does not keep the user turn verbatim")
    before, after = rendered.split(_PRINCIPLE_SENTINEL)
    return before, after


@dataclass(frozen=True, slots=True)
class AnswerTokens:
    id_a: int
    id_b: int


class JudgePromptRenderer:
    """Renders judge prompts for one template and tokenizer, straight to token ids.

    The shared prefix (conversation and options) and the principle tail are tokenized
    separately and concatenated, so every principle of an order sees identical prefix
    ids (a requirement for prefix-cache hits), and each tail is tokenized once per call.
    """

    def __init__(self, template: JudgeTemplate, tokenizer: Tokenizer, use_chat_template: bool):
        if use_chat_template and not tokenizer.chat_template:
            raise TemplateError("use_chat_template is set but the tokenizer has no chat template")
        self.template = template
        self.tokenizer = tokenizer
        self.use_chat_template = use_chat_template
        self._special_strings = sorted(
            (s for s in tokenizer.get_added_vocab() if len(s) > 1), key=len, reverse=True
        )
        if use_chat_template:
            self._chat_before, self._chat_after = render_chat_template_split(
                tokenizer, _PRINCIPLE_SENTINEL
            )
        else:
            self._chat_before, self._chat_after = "", ""
        self.answer_tokens = self._resolve_answer_tokens()
        self._tail_cache: dict[str, list[int]] = {}

    @cached_property
    def version(self) -> str:
        """Identifies everything that shapes the prompt: part of every cache key."""
        chat = self.tokenizer.chat_template if self.use_chat_template else None
        payload = json.dumps([self.template.version, self.use_chat_template, chat]).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    # -- text ---------------------------------------------------------------------------

    def quote(self, text: str) -> str:
        for special in self._special_strings:
            if special in text:
                text = text.replace(special, special[0] + _TOKEN_BREAKER + special[1:])
        return "\n".join(QUOTE + line for line in text.split("\n"))

    def render_conversation(self, conversation: Conversation) -> str:
        if isinstance(conversation, str):
            return f"Human:\n{self.quote(conversation)}"
        return "\n".join(
            f"{_ROLE_NAMES.get(m.role, m.role.title())}:\n{self.quote(m.content)}"
            for m in conversation
        )

    def prefix_text(self, conversation: Conversation, first: str, second: str) -> str:
        """Everything up to the principle: identical across an order's principles."""
        t = self.template
        body = (
            f"{t.preamble}\n\n{t.conversation_header}\n{self.render_conversation(conversation)}"
            f"\n\n{t.options_header}\n(A)\n{self.quote(first)}\n(B)\n{self.quote(second)}\n\n"
        )
        if self.use_chat_template:
            return self._chat_before + body
        return body

    def tail_text(self, question: str) -> str:
        stem = self.template.answer_stem
        if self.use_chat_template:
            return f"{question}{self._chat_after}{stem}"
        return f"{question}\n{stem}"

    def render_text(
        self, conversation: Conversation, first: str, second: str, question: str
    ) -> str:
        return self.prefix_text(conversation, first, second) + self.tail_text(question)

    # -- tokens -------------------------------------------------------------------------

    def prefix_ids(self, conversation: Conversation, first: str, second: str) -> list[int]:
        # Chat templates write their own BOS into the text; plain prompts get the
        # tokenizer's usual special tokens.
        return self.tokenizer.encode(
            self.prefix_text(conversation, first, second),
            add_special_tokens=not self.use_chat_template,
        )

    @cached_property
    def pad_token_id(self) -> int:
        """A newline: padding the prefix with it only adds blank lines before the question."""
        return self.tokenizer.encode("\n", add_special_tokens=False)[-1]

    def aligned(self, ids: list[int], multiple: int) -> list[int]:
        """`ids` padded at the end to a multiple of `multiple` tokens."""
        remainder = len(ids) % multiple
        return ids if remainder == 0 else ids + [self.pad_token_id] * (multiple - remainder)

    def tail_ids(self, question: str) -> list[int]:
        ids = self._tail_cache.get(question)
        if ids is None:
            ids = self.tokenizer.encode(self.tail_text(question), add_special_tokens=False)
            self._tail_cache[question] = ids
        return ids

    def _resolve_answer_tokens(self) -> AnswerTokens:
        """Find the ids of "A" and "B" in the exact context of the stem.

        Encoding stem+letter and taking the difference catches tokenizers that merge
        "(A" into one token, or split "A" into several: both are refused here, at start-up,
        rather than silently scoring the wrong position.
        """
        context = self.tail_text("Which response is better?")
        base = self.tokenizer.encode(context, add_special_tokens=False)
        ids = []
        for letter in ANSWER_LETTERS:
            extended = self.tokenizer.encode(context + letter, add_special_tokens=False)
            if extended[: len(base)] != base or len(extended) != len(base) + 1:
                raise TemplateError(
                    f"template {self.template.id!r}: answer {letter!r} after "
                    f"{self.template.answer_stem!r} is not a single token for this tokenizer "
                    f"(stem ids {base[-3:]}, with answer {extended[-4:]})"
                )
            ids.append(extended[-1])
        if ids[0] == ids[1]:
            raise TemplateError("answers 'A' and 'B' map to the same token")
        return AnswerTokens(id_a=ids[0], id_b=ids[1])
