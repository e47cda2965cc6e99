"""Pairs → score units → engine → labels.

All score units of one call go to the engine together, deduplicated: a pair and its
swap, or two pairs with the same texts, share every unit, which is what makes
antisymmetry hold to the bit within a call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cai_judge.engine.base import Engine, ScoreUnit, UnitScore
from cai_judge.labeling.constitution import ConstitutionRegistry, ConstitutionSpec
from cai_judge.labeling.label_math import (
    OrderScore,
    PrincipleScores,
    compute_label,
    select_principles,
    selection_seed,
)
from cai_judge.labeling.schema import (
    ConstitutionRef,
    Label,
    LabelOptions,
    Pair,
    PairError,
    PrincipleResult,
    TemplateRef,
    Usage,
)
from cai_judge.labeling.templates import TEMPLATES, JudgePromptRenderer, TemplateError


@dataclass
class LabelBatch:
    """Per input pair, in input order: a Label or a PairError."""

    results: list[Label | PairError]
    usage: Usage
    constitution: ConstitutionSpec

    @property
    def labels(self) -> list[Label]:
        return [r for r in self.results if isinstance(r, Label)]

    @property
    def errors(self) -> list[PairError]:
        return [r for r in self.results if isinstance(r, PairError)]


@dataclass
class _PlannedPair:
    index: int
    pair: Pair
    principle_ids: list[str]
    # unit indices per principle: (order ab, order ba)
    unit_indices: list[tuple[int, int]] = field(default_factory=list)


class Judge:
    """Labels pairs against constitutions with one engine.

    `use_chat_template=None` renders through the tokenizer's chat template when it has
    one (instruction-tuned judges answer far more reliably inside their own format).
    """

    def __init__(
        self,
        engine: Engine,
        registry: ConstitutionRegistry,
        use_chat_template: bool | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        if use_chat_template is None:
            use_chat_template = bool(getattr(engine.tokenizer, "chat_template", None))
        self.use_chat_template = use_chat_template
        self._renderers: dict[str, JudgePromptRenderer] = {}
        # Refuse a template whose answers are not single tokens now, not mid-batch.
        for template_id in TEMPLATES:
            self.renderer(template_id)

    def renderer(self, template_id: str) -> JudgePromptRenderer:
        renderer = self._renderers.get(template_id)
        if renderer is None:
            if template_id not in TEMPLATES:
                raise TemplateError(f"unknown template {template_id!r}")
            renderer = JudgePromptRenderer(
                TEMPLATES[template_id], self.engine.tokenizer, self.use_chat_template
            )
            self._renderers[template_id] = renderer
        return renderer

    def plan_units(
        self, pairs: Sequence[Pair], spec: ConstitutionSpec, options: LabelOptions
    ) -> tuple[list[ScoreUnit], list[_PlannedPair], list[PairError]]:
        """Render every (pair, principle, order) into unique score units."""
        renderer = self.renderer(spec.template)
        answer_ids = (renderer.answer_tokens.id_a, renderer.answer_tokens.id_b)
        units: list[ScoreUnit] = []
        unit_index: dict[tuple[int, ...], int] = {}
        prefix_cache: dict[tuple[str, str, str], list[int]] = {}
        planned: list[_PlannedPair] = []
        errors: list[PairError] = []
        tails = {pid: renderer.tail_ids(spec.principle(pid).question) for pid in spec.principle_ids}
        longest_tail = max(len(t) for t in tails.values())

        def prefix_for(pair: Pair, first: str, second: str) -> list[int]:
            key = (pair.prompt_key(), first, second)
            ids = prefix_cache.get(key)
            if ids is None:
                ids = renderer.aligned(
                    renderer.prefix_ids(pair.conversation(), first, second),
                    self.engine.prefix_alignment,
                )
                prefix_cache[key] = ids
            return ids

        def add_unit(ids: tuple[int, ...], prefix_length: int) -> int:
            index = unit_index.get(ids)
            if index is None:
                index = len(units)
                unit_index[ids] = index
                units.append(ScoreUnit(ids, answer_ids, prefix_length))
            return index

        for index, pair in enumerate(pairs):
            prefix_ab = prefix_for(pair, pair.response_a, pair.response_b)
            prefix_ba = prefix_for(pair, pair.response_b, pair.response_a)
            # One position is generated after the prompt, so it must fit as well.
            needed = max(len(prefix_ab), len(prefix_ba)) + longest_tail + 1
            if needed > self.engine.max_model_len:
                errors.append(
                    PairError(
                        id=pair.id,
                        index=index,
                        param="pairs",
                        error=(
                            f"judge prompt needs {needed} tokens, over the model's context of "
                            f"{self.engine.max_model_len}"
                        ),
                    )
                )
                continue
            seed = selection_seed(
                pair.prompt_key(), pair.response_a, pair.response_b, spec.version, options.seed
            )
            plan = _PlannedPair(index, pair, select_principles(spec.principle_ids, options.k, seed))
            for pid in plan.principle_ids:
                tail = tails[pid]
                plan.unit_indices.append(
                    (
                        add_unit(tuple(prefix_ab + tail), len(prefix_ab)),
                        add_unit(tuple(prefix_ba + tail), len(prefix_ba)),
                    )
                )
            planned.append(plan)
        return units, planned, errors

    async def label(
        self,
        pairs: Sequence[Pair],
        constitution: str | ConstitutionSpec,
        options: LabelOptions | None = None,
    ) -> LabelBatch:
        options = options or LabelOptions()
        spec = (
            constitution
            if isinstance(constitution, ConstitutionSpec)
            else self.registry.resolve(constitution)
        )
        units, planned, errors = self.plan_units(pairs, spec, options)
        scores: list[UnitScore] = await self.engine.score(units) if units else []
        usage = Usage(
            pairs=len(planned),
            score_units=len(units),
            prompt_tokens=sum(s.prompt_tokens for s in scores),
            cached_prompt_tokens=sum(s.cached_tokens for s in scores),
        )
        results: list[Label | PairError | None] = [None] * len(pairs)
        for error in errors:
            results[error.index] = error
        for plan in planned:
            results[plan.index] = self._make_label(plan, scores, spec, options)
        return LabelBatch([r for r in results if r is not None], usage, spec)

    def _make_label(
        self,
        plan: _PlannedPair,
        scores: Sequence[UnitScore],
        spec: ConstitutionSpec,
        options: LabelOptions,
    ) -> Label:
        principle_scores = [
            PrincipleScores(
                principle_id=pid,
                order_ab=OrderScore(scores[ab].logprob_a, scores[ab].logprob_b),
                order_ba=OrderScore(scores[ba].logprob_a, scores[ba].logprob_b),
            )
            for pid, (ab, ba) in zip(plan.principle_ids, plan.unit_indices, strict=True)
        ]
        numbers = compute_label(principle_scores, options.aggregator, options.low_mass_threshold)
        per_principle = None
        if options.per_principle:
            per_principle = [PrincipleResult.from_breakdown(b) for b in numbers.per_principle]
        return Label(
            id=plan.pair.id,
            preferred=numbers.preferred,
            margin=numbers.margin,
            p_a=numbers.p_a,
            position_bias=numbers.position_bias,
            consistency=numbers.consistency,
            answer_mass=numbers.answer_mass,
            low_confidence=numbers.low_confidence,
            principles=plan.principle_ids,
            selection=options.principles,
            aggregator=options.aggregator,
            constitution=ConstitutionRef(id=spec.id, version=spec.version),
            template=TemplateRef(id=spec.template, version=self.renderer(spec.template).version),
            model=self.engine.model_name,
            seed=options.seed,
            per_principle=per_principle,
        )
