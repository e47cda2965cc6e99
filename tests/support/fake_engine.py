"""A protocol-conformant fake of the `Engine` (engine/base.py) for logic that is not the
engine's: batching, caching, admission, error mapping (the handbook's rule; DESIGN.md §4).

Like vLLM's own serving tests, which hand-build `RequestOutput`s instead of running a model,
it answers in microseconds with numbers a test can predict:

- `WordTokenizer`: a token per word or other character, three ChatML special tokens and a
  Jinja chat template, so the Judge's planning (templates.py) runs unchanged and every
  answer letter after the stem is exactly one token, as the planner requires;
- `fake_logprobs`: a digest of the unit's prompt and answer ids, so a unit's score never
  depends on what shares its batch (the property the batching and caching tests rely on);
- per-unit refusal of a prompt over `max_model_len`, the way vLLM fails one request alone,
  through the same `score_by_prefix_group` a real engine uses;
- optional `unit_delay_s` (work that takes time, so callers can leave during it) and
  `blocking` (every `score` waits for `release`, so a test orders joins and leaves exactly).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import jinja2

from cai_judge.engine.base import (
    EngineError,
    GenerationParams,
    GenerationPrompt,
    ScoreUnit,
    UnitScore,
    score_by_prefix_group,
)
from cai_judge.engine.identity import EngineIdentity

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# The same ChatML template as the tiny real model (cai_judge/testing/tiny_model.py).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_PIECES = re.compile("|".join(re.escape(s) for s in SPECIAL_TOKENS) + r"|[^\W\d_]+|.", re.DOTALL)
_FIRST_ID = 16  # ids below are the special tokens (and room for more)
_ID_SPACE = 1 << 20


@dataclass(frozen=True)
class _AddedToken:
    """What `added_tokens_decoder` maps to in Hugging Face tokenizers."""

    content: str
    special: bool = True


class WordTokenizer:
    """A deterministic tokenizer with the slice of the Hugging Face interface the service
    uses (encode, decode, apply_chat_template, the special tokens).

    Pieces are the special tokens, runs of letters, and single other characters (a digit,
    a space, a parenthesis), so "(" + "A" is the "(" token plus one more, as the planner
    requires of answer letters. A piece's id is a digest of its text: the same in every
    process, with no vocabulary to train or load.
    """

    bos_token_id = 0
    eos_token_id = 2
    all_special_tokens: ClassVar[list[str]] = list(SPECIAL_TOKENS)
    added_tokens_decoder: ClassVar[dict[int, _AddedToken]] = {
        i: _AddedToken(s) for i, s in enumerate(SPECIAL_TOKENS)
    }
    vocab_size = _FIRST_ID + _ID_SPACE

    def __init__(self, chat_template: str | None = CHAT_TEMPLATE) -> None:
        self.chat_template = chat_template
        self._pieces: dict[int, str] = dict(enumerate(SPECIAL_TOKENS))

    def __len__(self) -> int:
        return self.vocab_size

    def _piece_id(self, piece: str) -> int:
        if piece in SPECIAL_TOKENS:
            return SPECIAL_TOKENS.index(piece)
        digest = hashlib.blake2b(piece.encode(), digest_size=8).digest()
        token = _FIRST_ID + int.from_bytes(digest, "little") % _ID_SPACE
        self._pieces[token] = piece
        return token

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.bos_token_id] if add_special_tokens else []
        ids.extend(self._piece_id(p) for p in _PIECES.findall(text))
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(
            self._pieces.get(i, "\ufffd")
            for i in ids
            if not (skip_special_tokens and i < len(SPECIAL_TOKENS))
        )

    def apply_chat_template(
        self,
        messages: Sequence[dict[str, str]],
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        **_: Any,
    ) -> str | list[int]:
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat template")
        text = jinja2.Template(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text


def fake_logprobs(unit: ScoreUnit) -> tuple[float, float]:
    """Two log-probs in (-8, -0.05], a function of the unit's token ids alone."""
    ids = (*unit.prompt_token_ids, *unit.answer_token_ids)
    digest = hashlib.sha256(struct.pack(f"<{len(ids)}i", *ids)).digest()
    a, b = struct.unpack("<II", digest[:8])
    return -0.05 - 7.95 * a / 2**32, -0.05 - 7.95 * b / 2**32


def named_logprobs(unit: ScoreUnit) -> tuple[float, float]:
    """A score that names its unit (minus its first token), so a caller of a shared
    computation can tell it got its own."""
    return -float(unit.prompt_token_ids[0]), -1.0


class FakeEngine:
    """An `Engine` (engine/base.py) that computes nothing: see the module docstring.

    `calls` records each `score` call's units; `cancelled`, those of calls cancelled while
    running. Prefix caching is modelled as vLLM reports it: whole `block_size` blocks of a
    prompt seen before count as cached tokens (never the whole prompt).
    """

    def __init__(
        self,
        *,
        max_model_len: int = 1024,
        model_name: str = "fake",
        unit_delay_s: float = 0.0,
        blocking: bool = False,
        block_size: int = 16,
        chat_template: str | None = CHAT_TEMPLATE,
        logprobs: Callable[[ScoreUnit], tuple[float, float]] = fake_logprobs,
    ) -> None:
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.unit_delay_s = unit_delay_s
        self.logprobs = logprobs
        self.block_size = block_size
        self._tokenizer = WordTokenizer(chat_template)
        self.release = asyncio.Event()
        if not blocking:
            self.release.set()
        self.entered = asyncio.Event()
        self.calls: list[list[ScoreUnit]] = []
        self.cancelled: list[list[ScoreUnit]] = []
        self.generated: list[GenerationPrompt] = []
        self.healthy = True
        self._seen_blocks: set[tuple[int, ...]] = set()

    @property
    def identity(self) -> EngineIdentity:
        return EngineIdentity(model=self.model_name, revision="fake", dtype="float32")

    @property
    def tokenizer(self) -> WordTokenizer:
        return self._tokenizer

    async def score(self, units: Sequence[ScoreUnit]) -> list[UnitScore]:
        if not self.healthy:
            raise EngineError("engine is shut down")
        self.calls.append(list(units))
        self.entered.set()
        try:
            await self.release.wait()
            if self.unit_delay_s:
                await asyncio.sleep(self.unit_delay_s * len(units))
        except asyncio.CancelledError:
            self.cancelled.append(list(units))
            raise
        return await score_by_prefix_group(units, self._score_group)

    async def _score_group(self, units: list[ScoreUnit]) -> list[UnitScore | BaseException]:
        return [self._score_one(u) for u in units]

    def _score_one(self, unit: ScoreUnit) -> UnitScore | BaseException:
        ids = unit.prompt_token_ids
        if len(ids) + 1 > self.max_model_len:
            # vLLM's wording, close enough for a test to match on the length.
            return EngineError(
                f"the prompt ({len(ids)} tokens) is longer than the maximum model length "
                f"of {self.max_model_len}"
            )
        cached = 0
        # vLLM never serves the last token from the cache: it must compute one position.
        for end in range(self.block_size, len(ids), self.block_size):
            if ids[:end] not in self._seen_blocks:
                break
            cached = end
        for end in range(self.block_size, len(ids) + 1, self.block_size):
            self._seen_blocks.add(ids[:end])
        logprob_a, logprob_b = self.logprobs(unit)
        return UnitScore(logprob_a, logprob_b, len(ids), cached)

    async def generate(
        self, prompts: Sequence[GenerationPrompt], params: GenerationParams
    ) -> list[str]:
        if not self.healthy:
            raise EngineError("engine is shut down")
        self.generated.extend(prompts)
        texts = []
        for prompt in prompts:
            ids = prompt if isinstance(prompt, tuple) else tuple(self._tokenizer.encode(prompt))
            digest = hashlib.sha256(repr((ids, params.seed)).encode()).hexdigest()
            # One "token" per character: the text respects max_tokens.
            texts.append(f"fake completion {digest}"[: params.max_tokens])
        return texts

    async def check_health(self) -> None:
        if not self.healthy:
            raise EngineError("engine is shut down")

    async def shutdown(self) -> None:
        self.healthy = False
        self.release.set()


def fake_unit(token: int) -> ScoreUnit:
    """A three-token unit whose first token names it."""
    return ScoreUnit((token, 2, 3), (5, 7), prefix_length=0)


async def settle() -> None:
    """Let every ready task run until nothing changes (joins, leaves, cancellations)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def rejoin_after_zero(engine: Any, fake: FakeEngine) -> list[UnitScore]:
    """On a decorator over a blocking `fake`: A scores [u1, u2] → X joins u1 → A cancels
    (u2's count drops to zero, the work runs on for X) → C asks for u2 → X cancels. C is the
    only caller left, so the work must run on for it: C's result."""
    u1, u2 = fake_unit(11), fake_unit(12)
    a = asyncio.create_task(engine.score([u1, u2]))
    await asyncio.wait_for(fake.entered.wait(), 5)  # the engine now computes u1 and u2
    x = asyncio.create_task(engine.score([u1]))
    await settle()
    a.cancel()
    await settle()
    c = asyncio.create_task(engine.score([u2]))
    await settle()
    x.cancel()
    await settle()
    assert a.cancelled() and x.cancelled()
    fake.release.set()
    return await asyncio.wait_for(c, 5)


async def everyone_leaves(engine: Any, fake: FakeEngine) -> None:
    """Two callers share a running engine call, then both leave: it must be cancelled."""
    u1, u2 = fake_unit(21), fake_unit(22)
    a = asyncio.create_task(engine.score([u1, u2]))
    await asyncio.wait_for(fake.entered.wait(), 5)
    x = asyncio.create_task(engine.score([u2]))
    await settle()
    x.cancel()
    await settle()
    assert fake.cancelled == []  # A still wants both units
    a.cancel()
    await settle()
    assert fake.cancelled == [[u1, u2]]


def blocking_engine() -> FakeEngine:
    """A fake whose `score` waits for `release`, each unit scored by `named_logprobs`."""
    return FakeEngine(blocking=True, logprobs=named_logprobs)
