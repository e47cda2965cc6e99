"""The CoT judge (DESIGN.md §2): the clamp as pure math, then on the real engine.

The pure tests pin the clamp on hand-computed numbers and its oddness on random inputs;
the engine tests check raw vs clamped numbers, rationales, the prefix sharing, and that a
pair and its swap get exactly negated clamped margins within one call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.label_math import (
    Aggregator,
    OrderScore,
    PrincipleScores,
    clamp_bound,
    clamp_log_odds,
    compute_label,
    sigmoid,
)
from cai_judge.labeling.schema import Label, LabelOptions, Pair
from cai_judge.labeling.templates import COT_PROMPT
from tests.support.paths import REPO_ROOT

GOLD = REPO_ROOT / "examples" / "gold" / "gold.jsonl"
PAIR = Pair(
    id="p1",
    prompt="How do I sort a list in Python?",
    response_a="Use sorted(my_list), which returns a new sorted list.",
    response_b="I cannot help with that.",
)

# -- the clamp, pure -----------------------------------------------------------------


def test_clamp_bound_is_the_logit_of_the_upper_probability():
    # logit(0.6) = ln(0.6 / 0.4) = ln 1.5
    assert clamp_bound(0.6) == pytest.approx(math.log(1.5), abs=1e-15)
    assert clamp_bound(0.9) == pytest.approx(math.log(9.0), abs=1e-15)
    for bad in (0.5, 1.0, 0.2, 1.5):
        with pytest.raises(ValueError, match=r"\(0.5, 1\)"):
            clamp_bound(bad)


def test_clamp_on_hand_computed_numbers():
    bound = math.log(1.5)
    assert clamp_log_odds(3.0, bound) == bound
    assert clamp_log_odds(-3.0, bound) == -bound
    assert clamp_log_odds(0.1, bound) == 0.1
    # A principle whose orders both say "a" strongly: s_ab = ln 4 (a shown first, p = 0.8)
    # and s_ba = -ln 9 (b shown first, p(b) = 0.1). Raw margin (ln 4 + ln 9) / 2 = ln 6.
    scores = [PrincipleScores("p", OrderScore(math.log(0.8), math.log(0.2)),
                              OrderScore(math.log(0.1), math.log(0.9)))]  # fmt: skip
    raw = compute_label(scores)
    assert raw.margin == pytest.approx(math.log(6.0))
    assert raw.p_a == pytest.approx(6 / 7)
    clamped = compute_label(scores, clamp=clamp_bound(0.6))
    # Both orders clamp to ±ln 1.5, so the margin is ln 1.5 and p_a is 0.6.
    assert clamped.margin == pytest.approx(math.log(1.5), abs=1e-15)
    assert clamped.p_a == pytest.approx(0.6, abs=1e-15)
    assert clamped.per_principle[0].s_ab == pytest.approx(math.log(1.5))
    assert clamped.per_principle[0].s_ba == pytest.approx(-math.log(1.5))
    # A weak opinion inside the clamp is untouched: s_ab = ln(0.55/0.45), s_ba = 0.
    weak = [PrincipleScores("p", OrderScore(math.log(0.55), math.log(0.45)),
                            OrderScore(math.log(0.5), math.log(0.5)))]  # fmt: skip
    assert compute_label(weak, clamp=clamp_bound(0.6)).margin == compute_label(weak).margin
    # mean_prob: p_a = ½(σ(ln 1.5) + σ(ln 1.5)) = 0.6.
    assert compute_label(scores, Aggregator.MEAN_PROB, clamp=clamp_bound(0.6)).p_a == (
        pytest.approx(0.6, abs=1e-12)
    )


logprobs = st.floats(min_value=-30.0, max_value=0.0, allow_nan=False)
principle_lists = st.lists(
    st.tuples(st.builds(OrderScore, logprobs, logprobs), st.builds(OrderScore, logprobs, logprobs)),
    min_size=1,
    max_size=8,
)


@given(principle_lists, st.sampled_from(list(Aggregator)), st.floats(0.51, 0.99))
def test_clamped_margin_is_exactly_antisymmetric_and_bounded(raw, aggregator, p_max):
    bound = clamp_bound(p_max)
    label = compute_label(
        [PrincipleScores(f"p{i}", ab, ba) for i, (ab, ba) in enumerate(raw)], aggregator,
        clamp=bound,
    )  # fmt: skip
    mirror = compute_label(
        [PrincipleScores(f"p{i}", ba, ab) for i, (ab, ba) in enumerate(raw)], aggregator,
        clamp=bound,
    )  # fmt: skip
    assert mirror.margin == -label.margin
    assert mirror.p_a == 1 - label.p_a
    assert 1 - p_max - 1e-12 <= label.p_a <= p_max + 1e-12
    assert abs(label.margin) <= bound * (1 + 1e-12)


@given(st.floats(min_value=-50, max_value=50, allow_nan=False), st.floats(0.51, 0.99))
def test_clamp_is_odd_to_the_bit(s, p_max):
    bound = clamp_bound(p_max)
    assert clamp_log_odds(-s, bound) == -clamp_log_odds(s, bound)
    assert sigmoid(clamp_log_odds(-s, bound)) == 1 - sigmoid(clamp_log_odds(s, bound))


# -- on the engine -------------------------------------------------------------------


@pytest.fixture(scope="module")
def judge(tiny_engine: VllmEngine, registry: ConstitutionRegistry) -> Iterator[Judge]:
    judge = Judge(tiny_engine, registry)
    yield judge
    judge.close()


COT = LabelOptions(principles=2, seed=3, mode="cot", cot_max_tokens=12, per_principle=True)


@pytest.mark.engine
async def test_cot_label_has_raw_and_clamped_numbers_and_rationales(judge: Judge):
    batch = await judge.label([PAIR], "harmless", COT)
    (label,) = batch.results
    assert isinstance(label, Label), label
    assert label.mode == "cot" and label.cot_max_probability == 0.6
    assert label.cot_max_tokens == 12
    assert label.raw_margin is not None and label.raw_p_a is not None
    assert label.raw_p_a == sigmoid(label.raw_margin)
    # The clamped label is the raw per-order numbers clamped, then aggregated.
    bound = clamp_bound(0.6)
    assert label.per_principle is not None and len(label.per_principle) == 2
    for result in label.per_principle:
        assert result.raw_s_ab is not None and result.raw_s_ba is not None
        assert result.s_ab == clamp_log_odds(result.raw_s_ab, bound)
        assert result.s_ba == clamp_log_odds(result.raw_s_ba, bound)
    assert label.margin == sum(r.margin for r in label.per_principle) / 2
    assert 0.4 - 1e-12 <= label.p_a <= 0.6 + 1e-12
    assert label.rationales is not None
    assert [r.principle for r in label.rationales] == label.principles
    # Greedy rationales of a random model: text, not empty, different per order.
    assert all(r.ab and r.ba for r in label.rationales)
    # CoT labels carry their own template version: resuming a plain file refuses them.
    plain = (await judge.label([PAIR], "harmless", LabelOptions(principles=2, seed=3))).labels[0]
    assert plain.template.version != label.template.version
    assert plain.principles == label.principles
    assert plain.mode is None and plain.rationales is None
    assert "mode" not in plain.model_dump(exclude_none=True)


@pytest.mark.engine
async def test_cot_swap_is_antisymmetric_to_the_bit_and_shares_rationales(judge: Judge):
    swap = PAIR.swapped().model_copy(update={"id": "p1-swap"})
    batch = await judge.label([PAIR, swap], "harmless", COT)
    label, mirror = batch.results
    assert isinstance(label, Label) and isinstance(mirror, Label)
    assert mirror.margin == -label.margin
    assert mirror.p_a == 1 - label.p_a
    assert mirror.raw_margin == -label.raw_margin  # type: ignore[operator]
    assert label.rationales is not None and mirror.rationales is not None
    for mine, theirs in zip(label.rationales, mirror.rationales, strict=True):
        assert (mine.ab, mine.ba) == (theirs.ba, theirs.ab)
    # 2 principles x 2 orders: 4 rationales and 4 units for both pairs together.
    assert batch.usage.score_units == 4


@pytest.mark.engine
async def test_cot_plan_shares_each_orders_prefix(judge: Judge):
    plan = await judge.plan([PAIR], "harmless", LabelOptions(principles=4, mode="cot"))
    assert plan.unit_count == 8 and not plan.units
    prompts = [ids for ids, _ in plan.cot_prompts]
    tokenizer = judge.engine.tokenizer
    assert all(tokenizer.decode(ids).endswith(COT_PROMPT) for ids in prompts)
    by_prefix: dict[tuple[int, ...], int] = {}
    for ids, prefix_length in plan.cot_prompts:
        assert prefix_length % 32 == 0  # padded to whole KV blocks, as plain units are
        key = ids[:prefix_length]
        by_prefix[key] = by_prefix.get(key, 0) + 1
    assert sorted(by_prefix.values()) == [4, 4]
    # The plan's token estimate covers each unit's rationale and stem.
    assert plan.prompt_tokens >= sum(len(p) + 128 for p in prompts)


@pytest.mark.engine
async def test_cot_respects_the_context(tiny_engine: VllmEngine, registry: ConstitutionRegistry):
    judge = Judge(tiny_engine, registry)
    try:
        long_pair = PAIR.model_copy(update={"id": "long", "response_a": "word " * 300})
        options = LabelOptions(principles=1, mode="cot", cot_max_tokens=1024)
        batch = await judge.label([long_pair], "harmless", options)
        assert batch.errors and batch.errors[0].error.type == "context_length"
    finally:
        judge.close()


@pytest.mark.engine
@pytest.mark.default_model
async def test_cot_with_the_default_model(
    default_engine: VllmEngine, registry: ConstitutionRegistry
):
    judge = Judge(default_engine, registry)
    try:
        options = LabelOptions(principles=2, mode="cot", cot_max_tokens=24)
        swap = PAIR.swapped().model_copy(update={"id": "swap"})
        label, mirror = (await judge.label([PAIR, swap], "harmless", options)).results
        assert isinstance(label, Label) and isinstance(mirror, Label)
        assert mirror.margin == -label.margin
        assert 0.4 - 1e-12 <= label.p_a <= 0.6 + 1e-12
        assert label.rationales and all(r.ab.strip() for r in label.rationales)
        # The rationale stops before the judge writes its own answer stem.
        assert all("The answer is:" not in r.ab for r in label.rationales)
        again = (await judge.label([PAIR], "harmless", options)).labels[0]
        assert again.rationales == label.rationales
        assert again.raw_margin == pytest.approx(label.raw_margin, abs=1e-4)
    finally:
        judge.close()


# -- cot as an eval protocol ---------------------------------------------------------


def test_eval_protocol_choice_runs_cot_only_when_named():
    from cai_judge.cli.eval_cmd import ProtocolChoice, _protocols
    from cai_judge.evaluation.protocols import Protocol

    assert Protocol.COT not in _protocols(None)
    assert Protocol.COT not in _protocols([ProtocolChoice.ALL])
    assert _protocols([ProtocolChoice.COT]) == [Protocol.COT]
    assert _protocols([ProtocolChoice.COT, ProtocolChoice.ALL])[-1] is Protocol.COT
    assert _protocols([ProtocolChoice.COT, ProtocolChoice.CAI]) == [Protocol.CAI, Protocol.COT]


@pytest.mark.engine
def test_eval_reports_cot_beside_the_other_protocols(tmp_path: Path, tiny_model_dir: Path):
    from tests.support.cli import run_cli

    gold_lines = GOLD.read_text().splitlines()[:6]
    gold = tmp_path / "gold.jsonl"
    gold.write_text("\n".join(gold_lines) + "\n")
    result = run_cli(
        "eval", str(gold), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir),
        "--protocol", "cai", "--protocol", "cot", "--cot-max-tokens", "4",
        "--bootstrap", "100", "--constitution", "helpful-harmless", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(CoT)" in result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(report["protocols"]) == ["cai", "cot"]
    cot = report["protocols"]["cot"]
    assert cot["description"].startswith("CoT rationale")
    assert cot["pairs"] == 6 and cot["agreement"] is not None and cot["calibration"] is not None
    for pair in report["pairs"]:
        assert set(pair["verdicts"]) == {"cai", "cot"}
        assert 0.4 - 1e-12 <= pair["verdicts"]["cot"]["p_a"] <= 0.6 + 1e-12
    assert "cot" in (tmp_path / "out" / "report.html").read_text()
