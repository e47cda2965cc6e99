"""Critique and revision over `Engine.generate`, batched across prompts (CAI §3).

Each round samples a principle, generates a critique, then a revision, one `generate` call
for every prompt still in the batch. Roles stay apart: the tokenizer's chat template gets
alternating turns, special-token strings are broken and plain-text turns quoted, as the
judge does (labeling/templates.py), so no text can forge a turn. Principle sampling is
seeded by the prompt, constitution version, request seed and round, so chains reproduce.

The reasoning at length: docs/internals.md, section "sl_cai/reviser.py".
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cai_judge.constants import DEFAULT_SEED
from cai_judge.engine.base import Engine, GenerationParams
from cai_judge.labeling.constitution import ConstitutionSpec, Principle
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.schema import ConstitutionRef, PairError
from cai_judge.labeling.templates import (
    break_special_tokens,
    quote_untrusted,
    special_token_strings,
)
from cai_judge.sl_cai.schema import (
    Revision,
    RevisionOptions,
    RevisionPrompt,
    RevisionStep,
    RevisionUsage,
)

Messages = list[dict[str, str]]
# Without a chat template, turns are written as the CAI paper's Human/Assistant dialogue;
# the model must stop before writing the next human turn itself.
_PLAIN_ROLES = {"system": "System", "user": "Human", "assistant": "Assistant"}
_PLAIN_STOP = ("\nHuman:",)


class NoRevisablePrinciples(ValueError):
    """The constitution has no principle with both a critique and a revision request."""


def revisable_principles(spec: ConstitutionSpec) -> list[Principle]:
    eligible = [p for p in spec.principles if p.critique and p.revision]
    if not eligible:
        raise NoRevisablePrinciples(
            f"constitution {spec.id!r} has no principle with both `critique` and `revision` "
            "requests, so it cannot drive SL-CAI; add them or choose another constitution"
        )
    return eligible


def principle_seed(prompt_key: str, constitution_version: str, seed: int, round_: int) -> int:
    material = json.dumps(
        [prompt_key, constitution_version, seed, round_], ensure_ascii=False, separators=(",", ":")
    )
    return int.from_bytes(hashlib.sha256(material.encode()).digest()[:8], "big")


def sample_principle(eligible: Sequence[Principle], seed: int) -> Principle:
    return eligible[random.Random(seed).randrange(len(eligible))]


@dataclass
class RevisionBatch:
    """Per input prompt, in input order: a Revision or a PairError."""

    results: list[Revision | PairError]
    usage: RevisionUsage

    @property
    def revisions(self) -> list[Revision]:
        return [r for r in self.results if isinstance(r, Revision)]


@dataclass
class _Chain:
    index: int
    item: RevisionPrompt
    initial: str = ""
    response: str = ""
    generated: bool = False
    steps: list[RevisionStep] = field(default_factory=list)
    # The round in progress: its principle, seed and critique so far.
    principle: Principle | None = None
    seed: int = DEFAULT_SEED
    critique: str = ""


class Reviser:
    """SL-CAI chains on one engine, sharing the Judge's tokenizer thread."""

    def __init__(self, engine: Engine, judge: Judge) -> None:
        self.engine = engine
        self.judge = judge
        self.tokenizer: Any = engine.tokenizer
        self.use_chat_template = judge.use_chat_template
        self._special_strings = special_token_strings(self.tokenizer)

    # -- rendering (planning thread only) ----------------------------------------------

    def render(self, messages: Messages) -> tuple[int, ...]:
        """Token ids of `messages` followed by the assistant's turn to speak."""
        specials = self._special_strings
        if self.use_chat_template:
            # Turns are delimited by control tokens: breaking the special-token strings in
            # every message is enough to keep a message inside its own turn.
            safe = [
                {**m, "content": break_special_tokens(m["content"], specials)} for m in messages
            ]
            text = self.tokenizer.apply_chat_template(
                safe, tokenize=False, add_generation_prompt=True
            )
            # The chat template writes its own BOS into the text.
            return tuple(self.tokenizer.encode(text, add_special_tokens=False))
        # Turns are delimited by text ("Assistant:"): every line of every message is
        # quoted, as the judge quotes, so only the role headers start a line unquoted.
        text = (
            "".join(
                f"{_PLAIN_ROLES[m['role']]}:\n{quote_untrusted(m['content'], specials)}\n\n"
                for m in messages
            )
            + f"{_PLAIN_ROLES['assistant']}:"
        )
        return tuple(self.tokenizer.encode(text))

    @staticmethod
    def conversation(
        chain: _Chain, spec: ConstitutionSpec, options: RevisionOptions, *, step: str
    ) -> Messages:
        """The turns the model answers at `step` (initial, critique or revision)."""
        prompt = chain.item.messages()
        system = prompt[:1] if prompt[0]["role"] == "system" else []
        turns = prompt[len(system) :]
        if step == "initial":
            return system + turns
        assert chain.principle is not None
        shots: Messages = []
        if options.few_shot and spec.revision_examples:
            for ex in spec.revision_examples:
                shots += [
                    {"role": "user", "content": ex.prompt},
                    {"role": "assistant", "content": ex.response},
                    {"role": "user", "content": ex.critique_request},
                    {"role": "assistant", "content": ex.critique},
                    {"role": "user", "content": ex.revision_request},
                    {"role": "assistant", "content": ex.revision},
                ]
        messages = [
            *system,
            *shots,
            *turns,
            {"role": "assistant", "content": chain.response},
            {"role": "user", "content": str(chain.principle.critique)},
        ]
        if step == "revision":
            messages += [
                {"role": "assistant", "content": chain.critique},
                {"role": "user", "content": str(chain.principle.revision)},
            ]
        return messages

    # -- the chain ---------------------------------------------------------------------

    async def revise(
        self,
        prompts: Sequence[RevisionPrompt],
        spec: ConstitutionSpec,
        options: RevisionOptions,
        on_step: Callable[[str, int], None] | None = None,
    ) -> RevisionBatch:
        """Every prompt's chain; one engine call per step for all prompts still going.

        A prompt whose conversation outgrows the model's context is reported as a
        PairError at that step; the others go on. `on_step(step, n)` reports progress.
        """
        eligible = revisable_principles(spec)
        params = GenerationParams(
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            stop=() if self.use_chat_template else _PLAIN_STOP,
            seed=options.seed,
        )
        usage = RevisionUsage()
        errors: dict[int, PairError] = {}
        chains = [_Chain(i, item) for i, item in enumerate(prompts)]
        for chain in chains:
            if chain.item.initial_response is not None:
                chain.initial = chain.response = chain.item.initial_response

        async def step(name: str, live: list[_Chain]) -> list[tuple[_Chain, str]]:
            def render_all() -> list[tuple[int, ...]]:
                return [self.render(self.conversation(c, spec, options, step=name)) for c in live]

            rendered = await self.judge.in_planning_thread(render_all)
            fits: list[tuple[_Chain, tuple[int, ...]]] = []
            for chain, ids in zip(live, rendered, strict=True):
                needed = len(ids) + options.max_tokens
                if needed > self.engine.max_model_len:
                    errors[chain.index] = PairError.of(
                        chain.item.id,
                        chain.index,
                        f"the {name} step needs {len(ids)} prompt tokens + max_tokens "
                        f"{options.max_tokens} = {needed}, over the model's context of "
                        f"{self.engine.max_model_len}; use a shorter prompt or fewer max_tokens",
                        type="context_length",
                    )
                else:
                    fits.append((chain, ids))
            if not fits:
                return []
            texts = await self.engine.generate([ids for _, ids in fits], params)
            usage.generations += len(fits)
            usage.prompt_tokens += sum(len(ids) for _, ids in fits)
            if on_step is not None:
                on_step(name, len(fits))
            return [(chain, text.strip()) for (chain, _), text in zip(fits, texts, strict=True)]

        initial = [c for c in chains if c.item.initial_response is None]
        for chain, text in await step("initial", initial):
            chain.initial = chain.response = text
            chain.generated = True
        for round_ in range(1, options.rounds + 1):
            live = [c for c in chains if c.index not in errors]
            for chain in live:
                chain.seed = principle_seed(
                    chain.item.prompt_key(), spec.version, options.seed, round_
                )
                chain.principle = sample_principle(eligible, chain.seed)
            for chain, text in await step("critique", live):
                chain.critique = text
            live = [c for c in chains if c.index not in errors]
            for chain, text in await step("revision", live):
                assert chain.principle is not None
                chain.steps.append(
                    RevisionStep(
                        round=round_,
                        principle=chain.principle.id,
                        principle_seed=chain.seed,
                        critique_request=str(chain.principle.critique),
                        critique=chain.critique,
                        revision_request=str(chain.principle.revision),
                        revision=text,
                    )
                )
                chain.response = text

        ref = ConstitutionRef(id=spec.id, version=spec.version)
        shots = len(spec.revision_examples or ()) if options.few_shot else 0
        results: list[Revision | PairError] = []
        for chain in chains:
            if chain.index in errors:
                results.append(errors[chain.index])
                continue
            results.append(
                Revision(
                    id=chain.item.id,
                    prompt=chain.item.prompt,
                    response=chain.response,
                    initial_response=chain.initial,
                    initial_generated=chain.generated,
                    chain=chain.steps,
                    constitution=ref,
                    model=self.engine.model_name,
                    seed=options.seed,
                    rounds=options.rounds,
                    temperature=options.temperature,
                    max_tokens=options.max_tokens,
                    few_shot_examples=shots,
                )
            )
            usage.prompts += 1
        return RevisionBatch(results, usage)
