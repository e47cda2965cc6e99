"""Pairs → score units → engine → labels, in two steps: `plan`, then `run`.

`plan` renders and tokenizes in one dedicated thread (a fast tokenizer must not be used from
two threads), so the loop stays free and a service can refuse on real token counts before
the engine sees a unit. `run` sends a call's units together, deduplicated, which makes
antisymmetry hold to the bit (DESIGN.md §2, §3); a failed unit costs only the pairs that
touched it. CoT mode generates each (pair, order, principle) rationale first, then scores.

The reasoning at length: docs/internals.md, section "labeling/judge.py".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from cai_judge.engine.base import (
    Engine,
    EngineUnavailable,
    GenerationParams,
    ScoreUnit,
    ScoreUnitsFailed,
    UnitScore,
)
from cai_judge.labeling.calibration_profile import response_token_count
from cai_judge.labeling.constitution import ConstitutionRegistry, ConstitutionSpec
from cai_judge.labeling.ensemble import (
    RULE,
    Decision,
    clip_of,
    decide,
    principle_value,
    round_sizes,
)
from cai_judge.labeling.label_math import (
    OrderScore,
    PrincipleScores,
    clamp_bound,
    compute_label,
    draw_order,
    select_principles,
    selection_seed,
)
from cai_judge.labeling.schema import (
    ConstitutionRef,
    EnsembleProvenance,
    Label,
    LabelOptions,
    Pair,
    PairError,
    PrincipleResult,
    Rationale,
    TemplateRef,
    Usage,
)
from cai_judge.labeling.templates import TEMPLATES, JudgePromptRenderer, TemplateError

T = TypeVar("T")

# Pairs planned per task on the planning thread: at 16 principles, 512 units of a few
# thousand tokens, a few milliseconds, the longest a small plan waits behind a large one.
PLAN_CHUNK_PAIRS = 16


@dataclass
class RoundUsage:
    """One round of an adaptive run: the units it sent and their prompt tokens, of which
    the engine found `cached_prompt_tokens` in its prefix cache (what rounds 2+ should)."""

    pairs: int
    score_units: int
    prompt_tokens: int
    cached_prompt_tokens: int


@dataclass
class LabelBatch:
    """Per input pair, in input order: a Label or a PairError."""

    results: list[Label | PairError]
    usage: Usage
    constitution: ConstitutionSpec
    # Adaptive ensembles: per round, what it scored (empty for `full`).
    rounds: list[RoundUsage] = field(default_factory=list)

    @property
    def labels(self) -> list[Label]:
        return [r for r in self.results if isinstance(r, Label)]

    @property
    def errors(self) -> list[PairError]:
        return [r for r in self.results if isinstance(r, PairError)]


@dataclass
class PlannedPair:
    """One pair that fits the context: its principles and the units that score them."""

    index: int
    pair: Pair
    principle_ids: list[str]
    # unit indices per principle: (order ab, order ba)
    unit_indices: list[tuple[int, int]] = field(default_factory=list)
    # Adaptive ensembles: positions in `principle_ids`, in the seeded draw order.
    draw: list[int] = field(default_factory=list)


@dataclass
class LabelPlan:
    """Everything `Judge.run` needs: rendered, tokenized and deduplicated, not yet scored."""

    constitution: ConstitutionSpec
    options: LabelOptions
    template: TemplateRef
    pair_count: int
    units: list[ScoreUnit]
    planned: list[PlannedPair]
    # Pairs refused while planning (over the model's context), by input index.
    errors: list[PairError]
    # CoT mode: the unique rationale prompts, with the prefix length each shares. Each
    # becomes one score unit once its rationale is written, so `units` is empty until
    # then and PlannedPair.unit_indices index these.
    cot_prompts: list[tuple[tuple[int, ...], int]] = field(default_factory=list)
    # False when planning stopped early, over `Judge.plan`'s `max_prompt_tokens`: the
    # counts are then a lower bound, and the plan is only good for refusing the request.
    complete: bool = True

    @property
    def unit_count(self) -> int:
        """Score units this plan will send: what admission counts."""
        return len(self.units) or len(self.cot_prompts)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of the unique units: what the engine is asked to read.

        In CoT mode, each rationale prompt as its unit will be at most: the prompt, a
        rationale of `cot_max_tokens`, the answer stem (a few tokens, counted as 8).
        """
        if self.cot_prompts:
            per_unit = self.options.rationale_tokens + 8
            return sum(len(ids) + per_unit for ids, _ in self.cot_prompts)
        return sum(len(u.prompt_token_ids) for u in self.units)


def common_prefix_length(first: Sequence[int], second: Sequence[int]) -> int:
    for position, (a, b) in enumerate(zip(first, second, strict=False)):
        if a != b:
            return position
    return min(len(first), len(second))


class Judge:
    """Labels pairs against constitutions with one engine.

    `use_chat_template=None` renders through the tokenizer's chat template when it has
    one (instruction-tuned judges answer far more reliably inside their own format).
    Call `close()` when done: it stops the tokenizing thread.
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
        # The only thread that touches the tokenizer once the Judge is built.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cai-judge-plan")
        # Refuse a template whose answers are not single tokens now, not mid-batch.
        for template_id in TEMPLATES:
            self.renderer(template_id)

    def close(self) -> None:
        """Stop the tokenizing thread; plans still queued are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def in_planning_thread(self, work: Callable[[], T]) -> T:
        """Run tokenizer work in the one thread that may use the tokenizer (see above):
        other users of this engine's tokenizer (the SL-CAI reviser) go through here."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

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

    def resolve(self, constitution: str | ConstitutionSpec) -> ConstitutionSpec:
        if isinstance(constitution, ConstitutionSpec):
            return constitution
        return self.registry.resolve(constitution)

    # -- the two steps --------------------------------------------------------------------

    async def plan(
        self,
        pairs: Sequence[Pair],
        constitution: str | ConstitutionSpec,
        options: LabelOptions | None = None,
        *,
        max_prompt_tokens: int | None = None,
    ) -> LabelPlan:
        """Render and tokenize, in the Judge's worker thread; no engine work.

        In chunks of PLAN_CHUNK_PAIRS pairs, each its own task on the one planning thread:
        that thread is FIFO, so a small request's plan queued meanwhile runs after the
        current chunk instead of after the whole of a large plan (issue 28: a 2,016-pair
        plan held /v1/labels for 49 s). With `max_prompt_tokens`, planning stops as soon
        as the unique units rendered so far pass it (`LabelPlan.complete` is then False):
        a request over the token budget is refused on what it has rendered so far, not
        after rendering all of it.
        """
        spec = self.resolve(constitution)
        options = options or LabelOptions()
        pairs = list(pairs)
        loop = asyncio.get_running_loop()
        state = await loop.run_in_executor(self._executor, _PlanState, self, spec, options)
        for start in range(0, len(pairs), PLAN_CHUNK_PAIRS):
            chunk = pairs[start : start + PLAN_CHUNK_PAIRS]
            await loop.run_in_executor(self._executor, state.add_pairs, chunk, start)
            if max_prompt_tokens is not None and state.prompt_tokens > max_prompt_tokens:
                return state.plan(len(pairs), complete=False)
        return state.plan(len(pairs))

    async def _score(self, units: list[ScoreUnit]) -> Sequence[UnitScore | BaseException]:
        results: Sequence[UnitScore | BaseException] = []
        if units:
            try:
                results = await self.engine.score(units)
            except ScoreUnitsFailed as failed:
                results = failed.results
        if len(results) != len(units):
            raise RuntimeError(f"the engine returned {len(results)} results for {len(units)} units")
        return results

    async def run(self, plan: LabelPlan) -> LabelBatch:
        """Score a plan's units on the engine and build its labels, in input order."""
        if plan.options.ensemble == "adaptive" and not plan.cot_prompts:
            return await self._run_adaptive(plan)
        rationales: list[str] = []
        if plan.cot_prompts:
            rationales = await self._write_rationales(plan)
        results = await self._score(plan.units)
        scores = [r for r in results if isinstance(r, UnitScore)]
        out: list[Label | PairError | None] = [None] * plan.pair_count
        for error in plan.errors:
            out[error.index] = error
        labeled = 0
        for planned in plan.planned:
            failure = next(
                (
                    results[i]
                    for pair_units in planned.unit_indices
                    for i in pair_units
                    if isinstance(results[i], BaseException)
                ),
                None,
            )
            if isinstance(failure, BaseException):
                out[planned.index] = _engine_error(planned, failure)
                continue
            out[planned.index] = self._make_label(planned, results, plan, rationales)
            labeled += 1
        usage = _usage(labeled, scores)
        return LabelBatch([r for r in out if r is not None], usage, plan.constitution)

    async def _run_adaptive(self, plan: LabelPlan) -> LabelBatch:
        """Adaptive ensembles: score each pair's principles in rounds, in its seeded draw
        order, until `ensemble.decide` stops it (DESIGN.md §2).

        Each round sends the next principles of every pair still open as one engine call,
        so units still batch across pairs; a pair's later rounds share its two order
        prefixes with its first, which the engine's prefix cache still holds (measured in
        `LabelBatch.rounds`). Which principles a pair scores depends only on its own
        scores, never on the other pairs of the call: the batch shape cannot change a label.
        """
        options = plan.options
        results: list[UnitScore | BaseException | None] = [None] * len(plan.units)
        out: list[Label | PairError | None] = [None] * plan.pair_count
        for error in plan.errors:
            out[error.index] = error
        # Per planned pair: its round sizes, principles scored so far, and rounds done.
        sizes = [round_sizes(len(p.principle_ids)) for p in plan.planned]
        scored = [0] * len(plan.planned)
        done_rounds = [0] * len(plan.planned)
        open_pairs = list(range(len(plan.planned)))
        rounds: list[RoundUsage] = []
        labeled = 0
        while open_pairs:
            wanted: dict[int, None] = {}
            for i in open_pairs:
                planned = plan.planned[i]
                upto = scored[i] + sizes[i][done_rounds[i]]
                for position in planned.draw[scored[i] : upto]:
                    for unit in planned.unit_indices[position]:
                        if results[unit] is None:
                            wanted[unit] = None
                scored[i] = upto
                done_rounds[i] += 1
            indices = list(wanted)
            answers = await self._score([plan.units[u] for u in indices])
            for unit, answer in zip(indices, answers, strict=True):
                results[unit] = answer
            fresh = [a for a in answers if isinstance(a, UnitScore)]
            rounds.append(
                RoundUsage(
                    pairs=len(open_pairs),
                    score_units=len(fresh),
                    prompt_tokens=sum(a.prompt_tokens for a in fresh),
                    cached_prompt_tokens=sum(a.cached_tokens for a in fresh),
                )
            )
            still_open: list[int] = []
            for i in open_pairs:
                planned = plan.planned[i]
                positions = planned.draw[: scored[i]]
                failure = next(
                    (
                        results[u]
                        for position in positions
                        for u in planned.unit_indices[position]
                        if isinstance(results[u], BaseException)
                    ),
                    None,
                )
                if isinstance(failure, BaseException):
                    out[planned.index] = _engine_error(planned, failure)
                    continue
                values = []
                for position in positions:
                    ab, ba = planned.unit_indices[position]
                    a, b = results[ab], results[ba]
                    assert isinstance(a, UnitScore) and isinstance(b, UnitScore)
                    values.append(
                        principle_value(
                            a.logprob_a - a.logprob_b,
                            b.logprob_a - b.logprob_b,
                            options.aggregator,
                        )
                    )
                decision = decide(values, len(planned.principle_ids), options.ensemble_delta)
                if not decision.stop:
                    still_open.append(i)
                    continue
                out[planned.index] = self._adaptive_label(
                    planned,
                    results,
                    plan,
                    decision,
                    done_rounds[i],
                    len(sizes[i]),
                    clip_of(values[: sizes[i][0]]),
                )
                labeled += 1
            open_pairs = still_open
        scores = [r for r in results if isinstance(r, UnitScore)]
        usage = _usage(labeled, scores)
        return LabelBatch([r for r in out if r is not None], usage, plan.constitution, rounds)

    def _adaptive_label(
        self,
        planned: PlannedPair,
        results: Sequence[UnitScore | BaseException | None],
        plan: LabelPlan,
        decision: Decision,
        round_number: int,
        round_count: int,
        clip: float,
    ) -> Label:
        """The label over the principles scored: the §2 math on them, in constitution
        order (so a run that scored them all is the full label to the bit), and its
        provenance."""
        scored = sorted(planned.draw[: sum(round_sizes(len(planned.principle_ids))[:round_number])])
        subset = PlannedPair(
            planned.index,
            planned.pair,
            [planned.principle_ids[p] for p in scored],
            [planned.unit_indices[p] for p in scored],
        )
        label = self._make_label(subset, results, plan, [])  # type: ignore[arg-type]
        provenance = EnsembleProvenance(
            rule=RULE,
            delta=plan.options.ensemble_delta,
            clip=clip,
            round=round_number,
            rounds=round_count,
            scored=len(scored),
            selected=len(planned.principle_ids),
            score_units=2 * len(scored),
            decided=decision.side,
            certain=decision.certain,
        )
        return label.model_copy(update={"ensemble": provenance})

    async def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Each text's tokens alone, counted in the Judge's tokenizing thread (the only one
        that may use the tokenizer); what a calibration profile's length term reads."""

        def count() -> list[int]:
            return [response_token_count(self.engine.tokenizer, t) for t in texts]

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, count)

    async def label(
        self,
        pairs: Sequence[Pair],
        constitution: str | ConstitutionSpec,
        options: LabelOptions | None = None,
    ) -> LabelBatch:
        """`plan` then `run`, for callers with no admission step (CLI, evaluation, tests)."""
        return await self.run(await self.plan(pairs, constitution, options))

    async def _write_rationales(self, plan: LabelPlan) -> list[str]:
        """CoT: generate every rationale (greedy), then fill `plan.units` from them."""
        renderer = self.renderer(plan.constitution.template)
        params = GenerationParams(
            max_tokens=plan.options.rationale_tokens,
            temperature=0.0,
            # The judge must not answer inside its rationale: the stem is appended after.
            stop=(renderer.template.answer_stem.rstrip(" ("),),
        )
        rationales = await self.engine.generate([ids for ids, _ in plan.cot_prompts], params)
        answer = renderer.cot_answer_tokens
        answer_ids = (answer.id_a, answer.id_b)

        def units() -> list[ScoreUnit]:
            return [
                ScoreUnit(
                    ids + tuple(renderer.rationale_ids(text)) + tuple(renderer.cot_stem_ids),
                    answer_ids,
                    prefix_length,
                )
                for (ids, prefix_length), text in zip(plan.cot_prompts, rationales, strict=True)
            ]

        plan.units = await self.in_planning_thread(units)
        return rationales

    # -- planning -------------------------------------------------------------------------

    def _plan(
        self, pairs: Sequence[Pair], spec: ConstitutionSpec, options: LabelOptions
    ) -> LabelPlan:
        """The whole plan at once, in the calling thread: only for the tokenizing thread
        (see `plan`, which does the same in chunks)."""
        state = _PlanState(self, spec, options)
        state.add_pairs(pairs, 0)
        return state.plan(len(pairs))

    def _make_label(
        self,
        planned: PlannedPair,
        results: Sequence[UnitScore | BaseException],
        plan: LabelPlan,
        rationales: Sequence[str],
    ) -> Label:
        def order(index: int) -> OrderScore:
            score = results[index]
            assert isinstance(score, UnitScore)  # failed pairs never get here
            return OrderScore(score.logprob_a, score.logprob_b)

        spec, options = plan.constitution, plan.options
        principle_scores = [
            PrincipleScores(principle_id=pid, order_ab=order(ab), order_ba=order(ba))
            for pid, (ab, ba) in zip(planned.principle_ids, planned.unit_indices, strict=True)
        ]
        raw = compute_label(principle_scores, options.aggregator, options.low_mass_threshold)
        numbers = raw
        cot = options.mode == "cot"
        if cot:
            numbers = compute_label(
                principle_scores,
                options.aggregator,
                options.low_mass_threshold,
                clamp=clamp_bound(options.cot_max_probability),
            )
        per_principle = None
        if options.per_principle:
            per_principle = [
                PrincipleResult.from_breakdown(b, r if cot else None)
                for b, r in zip(numbers.per_principle, raw.per_principle, strict=True)
            ]
        cot_fields: dict[str, object] = {}
        if cot:
            cot_fields = {
                "mode": "cot",
                "raw_margin": raw.margin,
                "raw_p_a": raw.p_a,
                "cot_max_probability": options.cot_max_probability,
                "cot_max_tokens": options.rationale_tokens,
                "rationales": [
                    Rationale(principle=pid, ab=rationales[ab], ba=rationales[ba])
                    for pid, (ab, ba) in zip(
                        planned.principle_ids, planned.unit_indices, strict=True
                    )
                ],
            }
        return Label(
            id=planned.pair.id,
            preferred=numbers.preferred,
            margin=numbers.margin,
            p_a=numbers.p_a,
            position_bias=numbers.position_bias,
            consistency=numbers.consistency,
            answer_mass=numbers.answer_mass,
            low_confidence=numbers.low_confidence,
            principles=planned.principle_ids,
            selection=options.principles,
            aggregator=options.aggregator,
            constitution=ConstitutionRef(id=spec.id, version=spec.version),
            template=plan.template,
            model=self.engine.model_name,
            seed=options.seed,
            per_principle=per_principle,
            **cot_fields,  # type: ignore[arg-type]
        )


def _engine_error(planned: PlannedPair, failure: BaseException) -> PairError:
    # The engine's own words: for a prompt vLLM refuses they name the limit.
    # `engine_unavailable` (a remote fleet with no server up) is transient: a
    # job retries its chunk rather than store it (services/jobs.py).
    return PairError.of(
        planned.pair.id,
        planned.index,
        str(failure) or type(failure).__name__,
        type="engine_unavailable" if isinstance(failure, EngineUnavailable) else "engine_error",
    )


class _PlanState:
    """A plan being built, chunk by chunk, in the Judge's tokenizing thread.

    Render every (pair, principle, order) into unique units of the mode's planner. What
    differs between the modes (the tails, what a unit is) is the planner's; the prefixes,
    the context check and the principle selection are shared here. Uses the tokenizer,
    so every method but `plan` runs only in the Judge's worker thread.
    """

    def __init__(self, judge: Judge, spec: ConstitutionSpec, options: LabelOptions) -> None:
        self.judge = judge
        self.spec = spec
        self.options = options
        self.renderer = judge.renderer(spec.template)
        self.planner: _Planner = (
            _CotPlanner(self.renderer, spec, options)
            if options.mode == "cot"
            else _PlainPlanner(self.renderer, spec)
        )
        self.longest_tail = max(len(t) for t in self.planner.tails.values()) + self.planner.extra
        self.prefix_cache: dict[tuple[str, str, str], list[int]] = {}
        self.planned: list[PlannedPair] = []
        self.errors: list[PairError] = []

    @property
    def prompt_tokens(self) -> int:
        """What `LabelPlan.prompt_tokens` will say of the units planned so far."""
        if self.options.mode == "cot":
            per_unit = self.options.rationale_tokens + 8
            return self.planner.tokens + per_unit * len(self.planner.cot_prompts)
        return self.planner.tokens

    def _prefix(self, pair: Pair, first: str, second: str) -> list[int]:
        key = (pair.prompt_key(), first, second)
        ids = self.prefix_cache.get(key)
        if ids is None:
            # Padded by the template's rule, whatever the engine's block size.
            ids = self.renderer.prefix_ids(pair.conversation(), first, second)
            self.prefix_cache[key] = ids
        return ids

    def add_pairs(self, pairs: Sequence[Pair], first_index: int) -> None:
        """Plan `pairs`, the first of which is input pair `first_index`."""
        spec, options, planner = self.spec, self.options, self.planner
        max_model_len = self.judge.engine.max_model_len
        for offset, pair in enumerate(pairs):
            index = first_index + offset
            prefix_ab = self._prefix(pair, pair.response_a, pair.response_b)
            prefix_ba = self._prefix(pair, pair.response_b, pair.response_a)
            # One position is generated after the prompt, so it must fit as well.
            needed = max(len(prefix_ab), len(prefix_ba)) + self.longest_tail + 1
            if needed > max_model_len:
                self.errors.append(
                    PairError.of(
                        pair.id,
                        index,
                        f"judge prompt needs {needed} tokens, over the model's context of "
                        f"{max_model_len}",
                        type="context_length",
                    )
                )
                continue
            seed = selection_seed(
                pair.prompt_key(), pair.response_a, pair.response_b, spec.version, options.seed
            )
            plan = PlannedPair(index, pair, select_principles(spec.principle_ids, options.k, seed))
            if options.ensemble == "adaptive":
                position = {pid: i for i, pid in enumerate(plan.principle_ids)}
                plan.draw = [
                    position[pid] for pid in draw_order(spec.principle_ids, options.k, seed)
                ]
            # Both orders share the template and the conversation: a fleet routes them
            # (and other pairs on this conversation) to one server (engine/routing.py).
            shared = common_prefix_length(prefix_ab, prefix_ba)
            for pid in plan.principle_ids:
                tail = planner.tails[pid]
                plan.unit_indices.append(
                    (
                        planner.add(tuple(prefix_ab + tail), len(prefix_ab), shared),
                        planner.add(tuple(prefix_ba + tail), len(prefix_ba), shared),
                    )
                )
            self.planned.append(plan)

    def plan(self, pair_count: int, *, complete: bool = True) -> LabelPlan:
        return LabelPlan(
            constitution=self.spec,
            options=self.options,
            template=TemplateRef(id=self.spec.template, version=self.planner.version),
            pair_count=pair_count,
            units=self.planner.units,
            planned=self.planned,
            errors=self.errors,
            cot_prompts=self.planner.cot_prompts,
            complete=complete,
        )


class _Planner(Protocol):
    """What one mode makes of a rendered (pair, principle, order)."""

    tails: dict[str, list[int]]  # per principle id: the tokens after the order's prefix
    extra: int  # tokens a unit adds after its tail (CoT: the rationale and the stem)
    version: str  # the template version its labels name
    units: list[ScoreUnit]
    cot_prompts: list[tuple[tuple[int, ...], int]]
    tokens: int  # prompt tokens of the unique units (or rationale prompts) added so far

    def add(self, ids: tuple[int, ...], prefix_length: int, affinity_length: int) -> int:
        """The index of the unit (or rationale prompt) for `ids`, added once."""
        ...


class _PlainPlanner:
    """Plain mode: each rendered prompt is a score unit, deduplicated."""

    extra = 0

    def __init__(self, renderer: JudgePromptRenderer, spec: ConstitutionSpec) -> None:
        self.tails = {
            pid: renderer.tail_ids(spec.principle(pid).question) for pid in spec.principle_ids
        }
        self.version = renderer.version
        self.answer_ids = (renderer.answer_tokens.id_a, renderer.answer_tokens.id_b)
        self.units: list[ScoreUnit] = []
        self.cot_prompts: list[tuple[tuple[int, ...], int]] = []
        self._index: dict[tuple[int, ...], int] = {}
        self.tokens = 0

    def add(self, ids: tuple[int, ...], prefix_length: int, affinity_length: int) -> int:
        index = self._index.get(ids)
        if index is None:
            index = self._index[ids] = len(self.units)
            self.tokens += len(ids)
            self.units.append(ScoreUnit(ids, self.answer_ids, prefix_length, affinity_length))
        return index


class _CotPlanner:
    """CoT mode: each rendered prompt is a rationale prompt, deduplicated; it becomes a
    score unit once its rationale is written (`Judge._write_rationales`)."""

    def __init__(
        self, renderer: JudgePromptRenderer, spec: ConstitutionSpec, options: LabelOptions
    ) -> None:
        renderer.cot_answer_tokens  # noqa: B018 (refuse an unusable stem before the engine)
        self.tails = {
            pid: renderer.cot_tail_ids(spec.principle(pid).question) for pid in spec.principle_ids
        }
        # The rationale and the answer stem follow the tail in the scored unit.
        self.extra = options.rationale_tokens + len(renderer.cot_stem_ids)
        self.version = renderer.cot_version
        self.units: list[ScoreUnit] = []  # filled in by `run`, after the rationales
        self.cot_prompts: list[tuple[tuple[int, ...], int]] = []
        self._index: dict[tuple[int, ...], int] = {}
        self.tokens = 0

    def add(self, ids: tuple[int, ...], prefix_length: int, affinity_length: int) -> int:
        index = self._index.get(ids)
        if index is None:
            index = self._index[ids] = len(self.cot_prompts)
            self.tokens += len(ids)
            self.cot_prompts.append((ids, prefix_length))
        return index


def _usage(labeled: int, scores: Sequence[UnitScore]) -> Usage:
    """What one Judge call cost: the pairs it labeled and the units it scored (full and
    adaptive ensembles count alike)."""
    return Usage(
        pairs=labeled,
        score_units=len(scores),
        prompt_tokens=sum(s.prompt_tokens for s in scores),
        cached_prompt_tokens=sum(s.cached_tokens for s in scores),
        cached_score_units=sum(1 for s in scores if s.from_cache),
    )
