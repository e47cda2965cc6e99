"""Judge prompt templates and their rendering into token ids (DESIGN.md §3).

What a pair's principles share goes first and the principle question last, so vLLM's prefix
cache computes each order's prefix once. Untrusted text is quoted line by line with "> "
(split at every break `str.splitlines` knows) and its special-token strings are broken up,
so it cannot forge a marker, a turn or a control token. Prefix padding to KV-block multiples
changes the tokens, so it is part of the template's version, never an engine setting.

The reasoning at length: docs/internals.md, section "labeling/templates.py".
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
# Bumped whenever this module changes the tokens a template renders to (2: lines split at
# every line break, only real special tokens broken), so labels made by the old rules keep
# a version of their own.
_RENDERING_REVISION = 2


class TemplateError(ValueError):
    """A template/tokenizer combination the judge cannot score with."""


class Tokenizer(Protocol):
    """The slice of a Hugging Face tokenizer that rendering needs."""

    chat_template: Any
    bos_token: Any

    # Token id -> AddedToken; entries whose `.special` is true are control tokens.
    @property
    def added_tokens_decoder(self) -> dict[int, Any]: ...

    @property
    def all_special_tokens(self) -> list[str]: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class JudgeTemplate:
    id: str
    preamble: str
    conversation_header: str
    options_header: str
    answer_stem: str
    # Each shared prefix is padded with newline tokens to a multiple of this many tokens;
    # 1 means no padding. 32 matches the default KV block size (settings.block_size), and
    # any block size dividing it: only whole blocks are cached, so without padding every
    # follower recomputes the prefix's last partial block, half a block on average
    # (bench/NOTES.md §7). A different engine block size costs speed, never labels.
    prefix_pad_multiple: int = 32

    def __post_init__(self) -> None:
        if self.prefix_pad_multiple < 1:
            raise ValueError(
                f"template {self.id!r}: prefix_pad_multiple must be at least 1, "
                f"got {self.prefix_pad_multiple}"
            )

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
        prefix_pad_multiple=32,
    ),
}

ANSWER_LETTERS = ("A", "B")
# CoT mode (DESIGN.md §2, CAI §4.1): the judge writes a rationale after this, then the
# answer stem follows on a new line.
COT_PROMPT = "Let's think step by step:"


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


def special_token_strings(tokenizer: Tokenizer) -> list[str]:
    """The tokenizer's control-token strings, longest first (the order they are broken in).

    Only real special tokens: an added token that is not special (a tool-call marker, a
    merged word) is ordinary text to the model, and breaking it would change what a
    response says. Single characters cannot be broken and are left out.
    """
    strings = {str(t.content) for t in tokenizer.added_tokens_decoder.values() if t.special}
    strings.update(str(s) for s in tokenizer.all_special_tokens)
    return sorted((s for s in strings if len(s) > 1), key=lambda s: (-len(s), s))


def break_special_tokens(text: str, special_strings: Sequence[str]) -> str:
    """`text` with every control-token string in it broken (`special_token_strings`), so
    the tokenizer reads it as ordinary text: "<|im_end|>" in a response stays words."""
    for special in special_strings:
        if special in text:
            text = text.replace(special, special[0] + _TOKEN_BREAKER + special[1:])
    return text


def quote_untrusted(text: str, special_strings: Sequence[str]) -> str:
    """Untrusted text as the judge (and the SL-CAI reviser's plain prompts) show it: its
    special tokens broken and every line, at every line break, starting with "> "."""
    text = break_special_tokens(text, special_strings)
    lines = text.splitlines()
    # splitlines drops a trailing break (and gives nothing for ""): keep that last,
    # empty line, so the quoted text keeps every line the writer put in it.
    if not lines or text.splitlines(keepends=True)[-1] != lines[-1]:
        lines.append("")
    return "\n".join(QUOTE + line for line in lines)


@dataclass(frozen=True, slots=True)
class AnswerTokens:
    id_a: int
    id_b: int


class JudgePromptRenderer:
    """Renders judge prompts for one template and tokenizer, straight to token ids.

    The shared prefix (conversation and options) and the principle tail are tokenized
    separately and concatenated, so every principle of an order sees identical prefix
    ids (a requirement for prefix-cache hits), and each tail is tokenized once per call.
    Not thread-safe, like the fast tokenizer it drives: the Judge uses it from one thread.
    """

    def __init__(self, template: JudgeTemplate, tokenizer: Tokenizer, use_chat_template: bool):
        if use_chat_template and not tokenizer.chat_template:
            raise TemplateError("use_chat_template is set but the tokenizer has no chat template")
        self.template = template
        self.tokenizer = tokenizer
        self.use_chat_template = use_chat_template
        self._special_strings = special_token_strings(tokenizer)
        if use_chat_template:
            self._chat_before, self._chat_after = render_chat_template_split(
                tokenizer, _PRINCIPLE_SENTINEL
            )
        else:
            self._chat_before, self._chat_after = "", ""
        self.answer_tokens = self._resolve_answer_tokens()
        self._tail_cache: dict[str, list[int]] = {}
        self._cot_tail_cache: dict[str, list[int]] = {}

    @cached_property
    def version(self) -> str:
        """Identifies everything that shapes the prompt: part of every cache key."""
        chat = self.tokenizer.chat_template if self.use_chat_template else None
        payload = json.dumps(
            [_RENDERING_REVISION, self.template.version, self.use_chat_template, chat]
        ).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    @cached_property
    def cot_version(self) -> str:
        """The version CoT labels carry: the plain version plus the CoT rendering rules."""
        payload = json.dumps([self.version, COT_PROMPT, "\n" + self.template.answer_stem])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    # -- text ---------------------------------------------------------------------------

    def quote(self, text: str) -> str:
        return quote_untrusted(text, self._special_strings)

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
        """The prompt as text, without the prefix padding (which exists only as tokens:
        re-encoding padded text could merge the newlines into other tokens)."""
        return self.prefix_text(conversation, first, second) + self.tail_text(question)

    # -- tokens -------------------------------------------------------------------------

    def prefix_ids(self, conversation: Conversation, first: str, second: str) -> list[int]:
        """The shared prefix's ids, padded to the template's `prefix_pad_multiple`."""
        return self.padded(self.unpadded_prefix_ids(conversation, first, second))

    def unpadded_prefix_ids(self, conversation: Conversation, first: str, second: str) -> list[int]:
        # Chat templates write their own BOS into the text; plain prompts get the
        # tokenizer's usual special tokens.
        return self.tokenizer.encode(
            self.prefix_text(conversation, first, second),
            add_special_tokens=not self.use_chat_template,
        )

    def render_ids(
        self, conversation: Conversation, first: str, second: str, question: str
    ) -> list[int]:
        """What the model sees: the padded prefix, then the principle tail."""
        return self.prefix_ids(conversation, first, second) + self.tail_ids(question)

    @cached_property
    def pad_token_id(self) -> int:
        """A newline: padding the prefix with it only adds blank lines before the question."""
        return self.tokenizer.encode("\n", add_special_tokens=False)[-1]

    def padded(self, ids: list[int]) -> list[int]:
        """`ids` padded at the end to a multiple of the template's `prefix_pad_multiple`."""
        remainder = len(ids) % self.template.prefix_pad_multiple
        if remainder == 0:
            return ids
        return ids + [self.pad_token_id] * (self.template.prefix_pad_multiple - remainder)

    def tail_ids(self, question: str) -> list[int]:
        ids = self._tail_cache.get(question)
        if ids is None:
            ids = self.tokenizer.encode(self.tail_text(question), add_special_tokens=False)
            self._tail_cache[question] = ids
        return ids

    # -- CoT ----------------------------------------------------------------------------

    def cot_tail_ids(self, question: str) -> list[int]:
        """The principle tail that asks for a rationale: question, then COT_PROMPT in the
        assistant's turn. The shared prefix before it is the plain mode's, cache and all."""
        ids = self._cot_tail_cache.get(question)
        if ids is None:
            if self.use_chat_template:
                text = f"{question}{self._chat_after}{COT_PROMPT}"
            else:
                text = f"{question}\n{COT_PROMPT}"
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            self._cot_tail_cache[question] = ids
        return ids

    def rationale_ids(self, rationale: str) -> list[int]:
        return self.tokenizer.encode(rationale, add_special_tokens=False)

    @cached_property
    def cot_stem_ids(self) -> list[int]:
        """The answer stem on a line of its own, after the rationale."""
        return self.tokenizer.encode("\n" + self.template.answer_stem, add_special_tokens=False)

    @cached_property
    def cot_answer_tokens(self) -> AnswerTokens:
        """The answer ids after `cot_stem_ids`, checked as `_resolve_answer_tokens` does."""
        context = "\n" + self.template.answer_stem
        base = self.cot_stem_ids
        ids = []
        for letter in ANSWER_LETTERS:
            extended = self.tokenizer.encode(context + letter, add_special_tokens=False)
            if extended[: len(base)] != base or len(extended) != len(base) + 1:
                raise TemplateError(
                    f"template {self.template.id!r}: in CoT mode, answer {letter!r} after "
                    f"{self.template.answer_stem!r} is not a single token for this tokenizer"
                )
            ids.append(extended[-1])
        return AnswerTokens(id_a=ids[0], id_b=ids[1])

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
