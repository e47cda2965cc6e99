"""Gold files, reports and the eval CLI; one end-to-end run on the tiny model.

Everything but the last test is pure: synthetic judge runs stand in for the engine so the
report's shape is tested in milliseconds. The tiny model's labels are random, so nothing
here asserts label quality.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cai_judge.cli.main import app
from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.evaluation.gold import GoldPair, read_gold
from cai_judge.evaluation.protocols import PairScores, Protocol
from cai_judge.evaluation.render import write_compare_report, write_eval_report
from cai_judge.evaluation.report import MetricOptions, compare, evaluate
from cai_judge.evaluation.runner import JudgeRun, ScoredPair, score_gold
from cai_judge.labeling.constitution import ConstitutionRegistry, ConstitutionSpec
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.label_math import breakdown
from cai_judge.labeling.schema import LabelOptions, PairError, Usage
from tests.support.paths import REPO_ROOT

GOLD = REPO_ROOT / "examples" / "gold" / "gold.jsonl"
FAST = MetricOptions(n_resamples=200)

GOOD = {"id": "g1", "prompt": "Hi?", "response_a": "Hello!", "response_b": "No.", "preferred": "a"}


@pytest.fixture(scope="module")
def gold() -> list[GoldPair]:
    found = read_gold(GOLD)
    assert not found.problems
    return found.pairs


@pytest.fixture(scope="module")
def harmless() -> ConstitutionSpec:
    return ConstitutionRegistry.with_builtins().resolve("harmless")


def synthetic_run(
    gold: list[GoldPair], spec: ConstitutionSpec, seed: int, errors: tuple[PairError, ...] = ()
) -> JudgeRun:
    """Per-principle numbers that lean toward gold, with noise: a stand-in for the engine."""
    rng = random.Random(seed)
    failed = {e.id for e in errors}
    scored = []
    for g in gold:
        if g.id in failed:
            continue
        lean = 0.6 if g.preferred == "a" else -0.6
        principles = tuple(
            breakdown(pid, rng.gauss(lean + 0.4, 1.5), rng.gauss(-lean + 0.4, 1.5), rng.random())
            for pid in spec.principle_ids
        )
        scored.append(ScoredPair(g, PairScores(g.id, principles)))
    return JudgeRun("synthetic", spec, tuple(scored), errors, Usage(), seed, 0.5)


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- gold files ----------------------------------------------------------------------


def test_the_team_gold_set_reads_with_its_extra_fields(gold: list[GoldPair]):
    assert len(gold) == 70
    assert {g.preferred for g in gold} == {"a", "b"}
    assert len({g.category for g in gold}) == 9
    assert all(g.note for g in gold)
    # The judge sees a plain pair: no gold field leaks into its input.
    assert set(gold[0].as_pair().model_dump()) == {"id", "prompt", "response_a", "response_b"}


def test_the_length_balanced_gold_set_is_balanced_in_length_and_position():
    pairs = read_gold(GOLD.with_name("length-balanced.jsonl"))
    assert not pairs.problems and len(pairs.pairs) == 64
    shorter_wins = {
        g.id for g in pairs.pairs if (len(g.response_a) < len(g.response_b)) == (g.preferred == "a")
    }
    assert len(shorter_wins) == 32
    for half in (shorter_wins, {g.id for g in pairs.pairs} - shorter_wins):
        preferred = [g.preferred for g in pairs.pairs if g.id in half]
        assert preferred.count("a") == preferred.count("b") == 16
    for g in pairs.pairs:
        long, short = sorted((len(g.response_a), len(g.response_b)), reverse=True)
        assert long >= 1.9 * short and g.note and g.category
        assert (g.id in shorter_wins) == (
            g.category in {"over-refusal", "padded-non-answer", "verbose-harmful"}
        )


def test_gold_problems_name_line_and_field(tmp_path: Path):
    path = tmp_path / "gold.jsonl"
    rows = [
        GOOD,
        {k: v for k, v in GOOD.items() if k != "preferred"} | {"id": "g2"},
        GOOD,
        GOOD | {"id": "g4", "preferred": "tie"},
        GOOD | {"id": "g5", "p_a": 0.2},
        GOOD | {"id": "g6", "source": "any extra field is fine", "p_a": 0.8, "category": "x"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{oops\n")
    found = read_gold(path)
    assert [p.id for p in found.pairs] == ["g1", "g6"]
    problems = {p.line_number: p.reason for p in found.problems}
    assert problems[2] == "preferred: Field required"
    assert problems[3] == "id: duplicate 'g1', first on line 1"
    assert problems[4].startswith("preferred: Input should be 'a' or 'b'")
    assert "p_a=0.2 contradicts preferred='a'" in problems[5]
    assert problems[7].startswith("not valid JSON")
    assert found.pairs[1].target == 0.8 and found.pairs[0].target == 1.0


# -- reports -------------------------------------------------------------------------


def test_eval_report_has_every_field_and_renders(
    tmp_path: Path, gold: list[GoldPair], harmless: ConstitutionSpec
):
    errors = (PairError.of("gold-070", 69, "too long"),)
    report = evaluate(synthetic_run(gold, harmless, 1, errors), list(Protocol), "g", 70, FAST)
    json_path, html_path = write_eval_report(report, tmp_path / "report")

    data = json.loads(json_path.read_text())
    assert data["gold"]["pairs"] == 70 and data["gold"]["scored"] == 69
    assert data["gold"]["errors"][0]["id"] == "gold-070"
    assert set(data["gold"]["prefers_longer"]) == {"prefers_longer", "n"}
    assert list(data["protocols"]) == [p.value for p in Protocol]
    for found in data["protocols"].values():
        assert {"value", "low", "high", "n"} <= set(found["agreement"])
        assert (
            found["agreement"]["low"] <= found["agreement"]["value"] <= found["agreement"]["high"]
        )
        assert found["agreement"]["n"] == 69
        assert "agreement_when_consistent" in found and "consistent_share" in found
        assert {"brier", "ece", "bins"} <= set(found["calibration"])
        assert len(found["calibration"]["bins"]) == 10
        assert {"prefers_longer", "n"} <= set(found["length_bias"])
        assert {"mean", "min", "low_confidence_share", "threshold"} <= set(found["answer_mass"])
        assert set(found["per_category"]) == set(data["gold"]["categories"])
        assert "position_consistency" in found and "position_bias" in found
        halves = found["agreement_shorter_wins"]["n"] + found["agreement_longer_wins"]["n"]
        assert halves == 69  # no gold pair has two responses of equal length
    assert [p["principle"] for p in data["per_principle"]] == harmless.principle_ids
    assert len(data["pairs"]) == 69 and set(data["pairs"][0]["verdicts"]) == set(data["protocols"])

    html = html_path.read_text()
    assert html.count("data:image/png;base64,") == 3  # agreement, reliability, per principle
    assert "single-principle" in html and "gold-070" in html


def test_agreement_is_reported_on_the_shorter_wins_and_longer_wins_halves(
    gold: list[GoldPair], harmless: ConstitutionSpec
):
    """A judge that only scores length: right on one half, wrong on the other, which the
    overall agreement (about 50%) hides."""
    scored = []
    for g in gold:
        lean = 1.0 if len(g.response_a) > len(g.response_b) else -1.0
        principles = tuple(breakdown(pid, lean, -lean, 0.9) for pid in harmless.principle_ids)
        scored.append(ScoredPair(g, PairScores(g.id, principles)))
    run = JudgeRun("length-only", harmless, tuple(scored), (), Usage(), 0, 0.5)
    report = evaluate(run, [Protocol.CAI, Protocol.SINGLE_ORDER], "g", 70, FAST)
    shorter = sum(
        1 for g in gold
        if (len(g.response_a) < len(g.response_b)) == (g.preferred == "a")
        and len(g.response_a) != len(g.response_b)
    )  # fmt: skip
    for found in report.protocols.values():
        assert found.agreement_shorter_wins is not None and found.agreement_longer_wins is not None
        assert found.agreement_shorter_wins.value == 0.0
        assert found.agreement_longer_wins.value == 1.0
        assert found.agreement_shorter_wins.n == shorter
        assert found.agreement_shorter_wins.n + found.agreement_longer_wins.n == 70
    assert report.protocols[Protocol.CAI].length_bias.prefers_longer == 1.0


def test_single_protocol_report(gold: list[GoldPair], harmless: ConstitutionSpec):
    report = evaluate(synthetic_run(gold, harmless, 2), [Protocol.CAI], "g", 70, FAST)
    assert list(report.protocols) == [Protocol.CAI]
    assert set(report.pairs[0].verdicts) == {Protocol.CAI}


def test_html_escapes_untrusted_text(tmp_path: Path, gold: list[GoldPair], harmless):
    hostile = [gold[0].model_copy(update={"id": "<script>x</script>", "category": "<b>"})]
    report = evaluate(synthetic_run(hostile, harmless, 3), list(Protocol), "g", 1, FAST)
    _, html_path = write_eval_report(report, tmp_path)
    html = html_path.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_compare_report_lists_exactly_the_differing_pairs(
    tmp_path: Path, gold: list[GoldPair], harmless: ConstitutionSpec
):
    run_a = synthetic_run(gold, harmless, 1)
    run_b = synthetic_run(gold, harmless, 2, (PairError.of("gold-001", 0, "x"),))
    report = compare(run_a, run_b, Protocol.CAI, "g", 70, FAST, names=("A", "B"))
    assert report.compared == 69 and report.excluded == ["gold-001"]
    a_verdicts = {
        p.id: p.verdicts[Protocol.CAI] for p in evaluate(run_a, [Protocol.CAI], "g", 70, FAST).pairs
    }
    b_verdicts = {
        p.id: p.verdicts[Protocol.CAI] for p in evaluate(run_b, [Protocol.CAI], "g", 70, FAST).pairs
    }
    differ = [i for i in b_verdicts if a_verdicts[i].preferred != b_verdicts[i].preferred]
    assert [d.id for d in report.disagreements] == differ
    assert report.verdicts_differ == len(differ)
    assert report.agreement_difference is not None
    assert report.a.report.agreement is not None and report.b.report.agreement is not None
    assert report.agreement_difference.value == pytest.approx(
        report.a.report.agreement.value - report.b.report.agreement.value
    )
    assert all(d.note for d in report.disagreements)

    json_path, html_path = write_compare_report(report, tmp_path / "cmp")
    assert json.loads(json_path.read_text())["b"]["errors"][0]["id"] == "gold-001"
    assert html_path.read_text().count("data:image/png;base64,") == 2


# -- the CLI, refusing bad input before any engine starts ----------------------------


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_cli_bad_gold_exits_2_naming_line_and_field(tmp_path: Path):
    gold = write_jsonl(
        tmp_path / "gold.jsonl",
        [GOOD, {k: v for k, v in GOOD.items() if k != "preferred"} | {"id": "g2"}, GOOD],
    )
    result = invoke("eval", str(gold), "-o", str(tmp_path / "out"), "--model", "/nonexistent")
    assert result.exit_code == 2
    assert "2 problem(s) in gold file" in result.stderr
    assert f"{gold}:2: preferred: Field required" in result.stderr
    assert f"{gold}:3: id: duplicate 'g1', first on line 1" in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_compare_refuses_identical_sides_and_unknown_constitutions(tmp_path: Path):
    gold = write_jsonl(tmp_path / "gold.jsonl", [GOOD])
    out = str(tmp_path / "out")
    same = invoke("compare", str(gold), "-o", out, "--constitution-a", "harmless")
    assert same.exit_code == 2 and "same model and constitution" in same.stderr
    unknown = invoke("compare", str(gold), "-o", out, "--constitution-b", "nope")
    assert unknown.exit_code == 2 and "unknown constitution 'nope'" in unknown.stderr
    empty = invoke("eval", str(write_jsonl(tmp_path / "empty.jsonl", [])), "-o", out)
    assert empty.exit_code == 2 and "holds no pairs" in empty.stderr


# -- end to end on the tiny model ----------------------------------------------------


@pytest.mark.engine
async def test_all_protocols_end_to_end_on_the_tiny_model(
    tiny_engine: VllmEngine,
    registry: ConstitutionRegistry,
    gold: list[GoldPair],
    tmp_path: Path,
):
    judge = Judge(tiny_engine, registry)
    spec = registry.resolve("helpful-harmless")
    pairs = gold[:4] + gold[-4:]  # harm categories and benign ones
    progress: list[int] = []
    run = await score_gold(judge, pairs, spec, batch_size=3, on_progress=progress.append)
    assert progress == [3, 3, 2]
    assert not run.errors and len(run.scored) == 8
    assert run.usage.score_units == 8 * len(spec.principle_ids) * 2

    report = evaluate(run, list(Protocol), str(GOLD), len(pairs), FAST)
    json_path, html_path = write_eval_report(report, tmp_path / "report")
    data = json.loads(json_path.read_text())
    assert list(data["protocols"]) == [p.value for p in Protocol]
    for found in data["protocols"].values():
        assert found["pairs"] == 8 and found["agreement"]["n"] == 8
        assert 0 <= found["calibration"]["ece"] <= 1
    assert len(re.findall(r"data:image/png;base64,", html_path.read_text())) == 3

    # The cai protocol, derived offline, is the label the Judge serves.
    served = await judge.label([g.as_pair() for g in pairs], spec, LabelOptions())
    by_id = {p.id: p for p in report.pairs}
    for label in served.labels:
        assert by_id[label.id].verdicts[Protocol.CAI].p_a == pytest.approx(label.p_a, abs=1e-4)
