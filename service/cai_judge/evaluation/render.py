"""Writing reports: report.json, and a self-contained report.html with embedded plots.

Plots are drawn on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot:
no global figure state, no GUI backend, nothing to close, safe beside a server's threads.
The HTML embeds each PNG as base64 so the file can be mailed or attached to a ticket.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from cai_judge.evaluation.calibration_fit import (
    CalibratedComparison,
    CalibrationMetrics,
    CalibrationReport,
    LengthInfo,
    LengthOnlyReport,
    LengthRow,
)
from cai_judge.evaluation.metrics import Calibration, Estimate
from cai_judge.evaluation.report import (
    CompareReport,
    EvalReport,
    PrincipleReport,
    ProtocolReport,
)
from cai_judge.labeling.schema import PairError

if TYPE_CHECKING:
    # Imported where a figure is drawn: matplotlib costs ~0.6 s (more on a busy machine),
    # and every `cai-judge` command imports this module through its command group.
    from matplotlib.figure import Figure

CHANCE = 0.5


# -- numbers as text (shared with the terminal tables) -------------------------------


def fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def fmt_num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def fmt_estimate(found: Estimate | None) -> str:
    if found is None:
        return "–"
    return f"{100 * found.value:.1f}% [{100 * found.low:.1f}, {100 * found.high:.1f}] n={found.n}"


def fmt_interval(found: Estimate | None) -> str:
    return "–" if found is None else f"{100 * found.low:.1f}–{100 * found.high:.1f}"


def fmt_signed_estimate(found: Estimate | None) -> str:
    if found is None:
        return "–"
    return (
        f"{100 * found.value:+.1f} pts [{100 * found.low:+.1f}, {100 * found.high:+.1f}] "
        f"n={found.n}"
    )


# -- plots ---------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_base64(figure: Figure) -> str:
    buffer = io.BytesIO()
    # No Software/date metadata, so identical reports give identical bytes.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def reliability_figure(series: Sequence[tuple[str, Calibration | None]]) -> Figure:
    """One reliability diagram per series: mean p_a against the gold frequency of a."""
    columns = max(1, len(series))
    figure = _new_figure(3.4 * columns, 3.6)
    axes = figure.subplots(1, columns, squeeze=False)[0]
    for ax, (title, found) in zip(axes, series, strict=False):
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
        if found is not None:
            total = sum(b.count for b in found.bins) or 1
            centers = [(b.low + b.high) / 2 for b in found.bins]
            width = found.bins[0].high - found.bins[0].low
            ax.bar(
                centers,
                [b.count / total for b in found.bins],
                width=width * 0.9,
                color="#d0d7e2",
                label="share of pairs",
            )
            filled = [b for b in found.bins if b.mean_p is not None]
            ax.plot(
                [b.mean_p for b in filled],
                [b.mean_target for b in filled],
                marker="o",
                color="#1f5fa8",
                label="judge",
            )
            ax.set_title(f"{title}\nECE {found.ece:.3f} · Brier {found.brier:.3f}", fontsize=9)
        else:
            ax.set_title(f"{title}\n(no pairs)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("judge p_a (bin mean)")
        ax.set_ylabel("gold: frequency of a")
        ax.set_aspect("equal")
    axes[0].legend(fontsize=7, loc="upper left")
    return figure


def agreement_figure(rows: Sequence[tuple[str, Estimate | None, Estimate | None]]) -> Figure:
    """Agreement with its interval per row, beside agreement on the consistent pairs."""
    figure = _new_figure(max(4.0, 1.6 * len(rows) + 1.5), 3.6)
    ax = figure.subplots()
    width = 0.38
    groups = (
        (-width / 2, 1, "all pairs", "#1f5fa8"),
        (width / 2, 2, "both orders agree", "#7aa6d8"),
    )
    for offset, index, name, color in groups:
        xs, values, lows, highs = [], [], [], []
        for x, row in enumerate(rows):
            found = row[index]
            if isinstance(found, Estimate):
                xs.append(x + offset)
                values.append(found.value)
                lows.append(found.value - found.low)
                highs.append(found.high - found.value)
        ax.bar(xs, values, width=width, yerr=[lows, highs], capsize=3, color=color, label=name)
    ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(rows)), [row[0] for row in rows], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("agreement with gold")
    ax.legend(fontsize=7, loc="lower right")
    return figure


def principle_figure(principles: Sequence[PrincipleReport]) -> Figure:
    """Each principle's own both-order verdict against gold, with its interval."""
    figure = _new_figure(7.0, max(2.0, 0.32 * len(principles) + 1.0))
    ax = figure.subplots()
    ys = list(range(len(principles)))[::-1]
    values = [p.agreement.value for p in principles]
    errors = [
        [p.agreement.value - p.agreement.low for p in principles],
        [p.agreement.high - p.agreement.value for p in principles],
    ]
    ax.barh(ys, values, xerr=errors, capsize=2, color="#1f5fa8")
    ax.axvline(CHANCE, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(ys, [p.principle for p in principles], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("agreement with gold")
    return figure


# -- HTML ----------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
.note { color: #555; font-size: 0.9em; }
img { max-width: 100%; }
"""


def _table(caption: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><caption>{escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _image(alt: str, figure: Figure) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{png_base64(figure)}">'


def _page(title: str, parts: Sequence[str]) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>" + "\n".join(parts) + "</body></html>\n"
    )


SUMMARY_HEADER = (
    "protocol", "agreement [95% CI]", "agreement, consistent pairs", "consistent pairs",
    "agreement, shorter wins", "agreement, longer wins", "position consistency",
    "position bias", "Brier", "ECE", "prefers longer", "ties", "answer mass mean / min",
    "low confidence",
)  # fmt: skip


def summary_row(name: str, r: ProtocolReport) -> list[str]:
    found = r.calibration
    return [
        name,
        fmt_estimate(r.agreement),
        fmt_estimate(r.agreement_when_consistent),
        fmt_pct(r.consistent_share),
        fmt_estimate(r.agreement_shorter_wins),
        fmt_estimate(r.agreement_longer_wins),
        fmt_num(r.position_consistency),
        fmt_num(r.position_bias),
        fmt_num(found.brier if found else None),
        fmt_num(found.ece if found else None),
        f"{fmt_pct(r.length_bias.prefers_longer)} (n={r.length_bias.n})",
        str(r.ties),
        f"{fmt_num(r.answer_mass.mean)} / {fmt_num(r.answer_mass.min)}",
        fmt_pct(r.answer_mass.low_confidence_share),
    ]


def _category_rows(reports: Sequence[tuple[str, ProtocolReport]]) -> list[list[str]]:
    categories = sorted({c for _, r in reports for c in r.per_category})
    return [[c, *(fmt_estimate(r.per_category.get(c)) for _, r in reports)] for c in categories]


def _error_rows(errors: Sequence[PairError]) -> list[list[str]]:
    return [[str(e.id), e.error.message] for e in errors]


def render_eval_html(report: EvalReport) -> str:
    judge = report.judge
    protocols = list(report.protocols.values())
    gold = report.gold
    parts = [
        f"<p>Gold <code>{escape(gold.path)}</code>: {gold.pairs} pairs, {gold.scored} scored. "
        f"Judge <code>{escape(judge.model)}</code>, constitution "
        f"<code>{escape(judge.constitution.id)}@{escape(judge.constitution.version[:12])}</code> "
        f"({len(judge.principles)} principles). Gold prefers the longer response in "
        f"{fmt_pct(gold.prefers_longer.prefers_longer)} of {gold.prefers_longer.n} pairs "
        "(lengths in characters).</p>",
        _table("Protocols", SUMMARY_HEADER, [summary_row(r.protocol, r) for r in protocols]),
        "<p class='note'>Agreement: the protocol's verdict against gold, a tie counting ½, with a "
        f"{100 * report.metrics.confidence:.0f}% percentile bootstrap interval "
        f"({report.metrics.n_resamples} resamples). Consistent pairs: every principle picks the "
        "same response in both orders. Calibration bins p_a into "
        f"{report.metrics.n_bins} equal-width bins.</p>",
        "<h2>Agreement</h2>",
        _image(
            "agreement per protocol",
            agreement_figure(
                [(r.protocol, r.agreement, r.agreement_when_consistent) for r in protocols]
            ),
        ),
        "<h2>Calibration</h2>",
        _image(
            "reliability diagrams",
            reliability_figure([(r.protocol, r.calibration) for r in protocols]),
        ),
    ]
    if gold.categories:
        parts.append(
            _table(
                "Agreement per category",
                ["category", *(r.protocol for r in protocols)],
                _category_rows([(r.protocol, r) for r in protocols]),
            )
        )
    if report.per_principle:
        parts += [
            "<h2>Per principle</h2>",
            "<p class='note'>Each principle's own both-order verdict against gold.</p>",
            _image("agreement per principle", principle_figure(report.per_principle)),
            _table(
                "Principles",
                ["principle", "agreement [95% CI]", "consistency", "position bias", "mass mean"],
                [
                    [
                        p.principle,
                        fmt_estimate(p.agreement),
                        fmt_num(p.consistency),
                        fmt_num(p.position_bias),
                        fmt_num(p.answer_mass_mean),
                    ]
                    for p in report.per_principle
                ],
            ),
        ]
    if report.calibrated is not None:
        parts += _calibrated_section(report.calibrated)
    if gold.errors:
        parts.append(_table("Pairs not scored", ["id", "reason"], _error_rows(gold.errors)))
    names = list(report.protocols)
    parts.append(
        "<details><summary>Every pair</summary>"
        + _table(
            "Verdicts (p_a)",
            ["id", "category", "gold", "longer", *names],
            [
                [p.id, p.category or "", p.gold, p.longer or "="]
                + [f"{p.verdicts[n].preferred} ({p.verdicts[n].p_a:.3f})" for n in names]
                for p in report.pairs
            ],
        )
        + "</details>"
    )
    return _page(f"cai-judge eval: {judge.constitution.id} · {judge.model}", parts)


def _calibrated_section(found: CalibratedComparison) -> list[str]:
    note = (
        "This gold set is the one the profile was fitted on, so the calibrated numbers are "
        "in-sample and optimistic; `cai-judge calibrate`'s report has cross-validated ones."
        if found.in_sample
        else "The profile was fitted on another gold set: these numbers are out-of-sample."
    )
    return [
        "<h2>Calibrated</h2>",
        f"<p>Profile <code>{found.profile}</code> (aggregator {found.aggregator.value}, "
        f"principles {escape(str(found.selection))}, T = {fmt_num(found.temperature, 4)}"
        + (", length debiased" if found.length_control else "")
        + f"). {note} Gold prefers the longer response (in tokens) in "
        f"{fmt_pct(found.gold_prefers_longer.prefers_longer)} of pairs.</p>",
        _table(
            "Raw and calibrated",
            ["p_a", "ECE", "Brier", "log loss", "agreement", "prefers longer"],
            [
                _calibration_row("raw", found.raw),
                _calibration_row("calibrated", found.calibrated),
            ],
        ),
        _length_table(found.length_rows),
        _image("P(picks the longer response)", length_rows_figure(found.length_rows)),
        _image(
            "reliability raw and calibrated",
            reliability_figure(
                [("raw", found.raw.reliability), ("calibrated", found.calibrated.reliability)]
            ),
        ),
    ]


def render_compare_html(report: CompareReport) -> str:
    a, b = report.a, report.b
    sides = [("a: " + a.name, a.report), ("b: " + b.name, b.report)]
    # Plots name the sides a and b: model paths make ticks and titles unreadably long.
    short = [("a", a.report), ("b", b.report)]
    parts = [
        f"<p>Gold <code>{escape(report.gold_path)}</code>: {report.gold_pairs} pairs, "
        f"{report.compared} scored by both sides; protocol <code>{report.protocol}</code>.</p>",
        _table("Side by side", SUMMARY_HEADER, [summary_row(n, r) for n, r in sides]),
        f"<p>Agreement, a − b (paired bootstrap): "
        f"<b>{escape(fmt_signed_estimate(report.agreement_difference))}</b>. "
        f"Verdicts differ on {report.verdicts_differ} of {report.compared} pairs. Gold "
        f"prefers the longer response in {fmt_pct(report.gold_prefers_longer.prefers_longer)} "
        "of the compared pairs.</p>",
        _image(
            "agreement a and b",
            agreement_figure([(n, r.agreement, r.agreement_when_consistent) for n, r in short]),
        ),
        _image("reliability a and b", reliability_figure([(n, r.calibration) for n, r in short])),
    ]
    if any(r.per_category for _, r in sides):
        parts.append(
            _table("Agreement per category", ["category", "a", "b"], _category_rows(sides))
        )
    parts.append(
        _table(
            "Pairs where the verdicts differ",
            ["id", "category", "gold", "a (p_a)", "b (p_a)", "gold note"],
            [
                [
                    d.id,
                    d.category or "",
                    d.gold,
                    f"{d.a.preferred} ({d.a.p_a:.3f})",
                    f"{d.b.preferred} ({d.b.p_a:.3f})",
                    d.note or "",
                ]
                for d in report.disagreements
            ],
        )
    )
    for name, side in (("a", a), ("b", b)):
        if side.errors:
            parts.append(
                _table(f"Pairs {name} did not score", ["id", "reason"], _error_rows(side.errors))
            )
    return _page(f"cai-judge compare: {a.name} vs {b.name}", parts)


def write_eval_report(report: EvalReport, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    html_path = directory / "report.html"
    json_path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_eval_html(report), encoding="utf-8")
    return json_path, html_path


def write_compare_report(report: CompareReport, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "compare.json"
    html_path = directory / "compare.html"
    json_path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_compare_html(report), encoding="utf-8")
    return json_path, html_path


# -- calibration (`cai-judge calibrate`) ---------------------------------------------


def length_rows_figure(rows: Sequence[LengthRow]) -> Figure:
    """P(picks the longer response) per row (gold, raw, debiased, ...), overall and on the
    pairs where gold prefers the shorter response, side by side; gold ± 10 points shaded."""
    figure = _new_figure(max(4.5, 1.3 * len(rows) + 2.0), 3.4)
    ax = figure.subplots()
    xs = list(range(len(rows)))
    width = 0.38
    overall = [r.prefers_longer.prefers_longer or 0.0 for r in rows]
    shorter = [r.prefers_longer_when_shorter_wins.prefers_longer or 0.0 for r in rows]
    ax.bar([x - width / 2 for x in xs], overall, width=width, color="#1f5fa8", label="all pairs")
    ax.bar(
        [x + width / 2 for x in xs],
        shorter,
        width=width,
        color="#e67e22",
        label="pairs where the shorter wins",
    )
    gold = next((r.prefers_longer.prefers_longer for r in rows if r.name == "gold"), None)
    if gold is not None:
        ax.axhline(gold, color="#c0392b", linestyle="--", linewidth=1.2, label="gold, all pairs")
        ax.axhspan(gold - 0.1, gold + 0.1, color="#c0392b", alpha=0.08, label="gold ± 10 pts")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_xticks(xs, [r.name for r in rows], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("P(picks the longer response)")
    return figure


def sensitivity_figure(info: LengthInfo) -> Figure:
    """β per principle, with the pooled β of the aggregated margin as a line."""
    names = list(info.sensitivity)
    figure = _new_figure(max(4.0, 0.45 * len(names) + 2.0), 3.2)
    ax = figure.subplots()
    xs = list(range(len(names)))
    ax.bar(xs, [info.sensitivity[n] for n in names], width=0.6, color="#1f5fa8")
    ax.axhline(info.pooled_sensitivity, color="#c0392b", linestyle="--", linewidth=1.2,
               label=f"pooled (aggregated margin) {info.pooled_sensitivity:+.3f}")  # fmt: skip
    ax.axhline(0.0, color="#555555", linewidth=0.8)
    ax.legend(fontsize=7)
    ax.set_xticks(xs, names, fontsize=7, rotation=60, ha="right")
    ax.set_ylabel("β per unit of L")
    return figure


def _length_table(rows: Sequence[LengthRow]) -> str:
    return _table(
        "Length: P(picks the longer response, in tokens) and agreement per half",
        ["verdicts", "prefers longer", "prefers longer, shorter-wins pairs",
         "agreement, shorter wins", "agreement, longer wins"],
        [
            [
                r.name,
                f"{fmt_pct(r.prefers_longer.prefers_longer)} (n={r.prefers_longer.n})",
                f"{fmt_pct(r.prefers_longer_when_shorter_wins.prefers_longer)} "
                f"(n={r.prefers_longer_when_shorter_wins.n})",
                fmt_pct(r.agreement_shorter_wins),
                fmt_pct(r.agreement_longer_wins),
            ]
            for r in rows
        ],
    )  # fmt: skip


def _sensitivity_section(info: LengthInfo) -> list[str]:
    return [
        "<h2>Length sensitivity</h2>",
        f"<p>β estimated on <code>{escape(info.path)}</code> ({info.source}, sha256 "
        f"<code>{info.sha256[:12]}</code>): {info.scored} of {info.pairs} pairs scored; labels, "
        "if any, unused. β is each principle's least-squares slope (through the origin) of its "
        "margin on log(tokens_a/tokens_b); a label's debiased margin is m − β̄·L with β̄ the "
        "mean β of the principles it used.</p>",
        _image("length sensitivity per principle", sensitivity_figure(info)),
        _table(
            "β per principle",
            ["principle", "β"],
            [[name, f"{beta:+.4f}"] for name, beta in info.sensitivity.items()]
            + [["(pooled, aggregated margin)", f"{info.pooled_sensitivity:+.4f}"]],
        ),
    ]


def _calibration_row(name: str, found: CalibrationMetrics) -> list[str]:
    return [
        name,
        fmt_num(found.ece),
        fmt_num(found.brier),
        fmt_num(found.log_loss),
        fmt_pct(found.agreement),
        f"{fmt_pct(found.prefers_longer.prefers_longer)} (n={found.prefers_longer.n})",
    ]


def _mean_beta(sensitivity: dict[str, float] | None) -> str:
    if not sensitivity:
        return "–"
    return f"{sum(sensitivity.values()) / len(sensitivity):+.4f}"


def calibration_rows(report: CalibrationReport) -> list[tuple[str, CalibrationMetrics]]:
    """The report's p_a sets, in the order every table and plot shows them."""
    rows = [("raw", report.raw)]
    if report.debiased is not None:
        rows.append(("debiased, cross-validated", report.debiased))
    if report.cross_validated_temperature_only is not None:
        rows.append(("temperature only, cross-validated", report.cross_validated_temperature_only))
    rows += [
        ("calibrated, cross-validated", report.cross_validated),
        ("calibrated, in sample", report.in_sample),
    ]
    return rows


def render_calibration_html(report: CalibrationReport) -> str:
    profile = report.profile
    key = profile.key
    rows = calibration_rows(report)
    temperature = "∞ (the margin has no weight)"
    if report.temperature is not None:
        temperature = f"{report.temperature:.4g}"
        if report.temperature < 0:
            temperature += " (negative: the profile reverses the judge)"
    parts = [
        f"<p>Gold <code>{escape(report.gold.path)}</code> (sha256 "
        f"<code>{report.gold.sha256[:12]}</code>): {report.gold.pairs} pairs, "
        f"{report.gold.scored} scored. Judge <code>{escape(key.model)}</code>, constitution "
        f"<code>{escape(key.constitution.id)}@{escape(key.constitution.version[:12])}</code>, "
        f"template <code>{escape(key.template.id)}@{escape(key.template.version[:12])}</code>, "
        f"aggregator <code>{key.aggregator.value}</code>, principles "
        f"<code>{escape(str(key.selection))}</code>.</p>",
        f"<p>Profile <code>{profile.hash}</code>: temperature T = {temperature}"
        + (", length debiased (β per principle below)" if profile.length_control else "")
        + ". p_a = σ("
        + ("(margin − β̄·log(tokens_a/tokens_b))" if profile.length_control else "margin")
        + "/T).</p>",
    ]
    for warning in report.warnings:
        parts.append(f"<p><b>warning:</b> {escape(warning)}</p>")
    parts += [
        _table(
            "Before and after",
            ["p_a", "ECE", "Brier", "log loss", "agreement", "prefers longer"],
            [_calibration_row(name, found) for name, found in rows],
        ),
        f"<p>Gold prefers the longer response (in tokens) in "
        f"{fmt_pct(report.gold_prefers_longer.prefers_longer)} of "
        f"{report.gold_prefers_longer.n} pairs. Brier gain (raw − cross-validated, paired "
        f"bootstrap): <b>{escape(fmt_gain(report.brier_gain))}</b>; log-loss gain: "
        f"<b>{escape(fmt_gain(report.log_loss_gain))}</b>.</p>",
        f"<p class='note'>Cross-validated: {report.folds} folds over the gold pairs (a pair and "
        "its swap share a fold), each pair scored by terms fitted on the other folds only, "
        f"folds drawn with seed {report.seed}. In sample: the written profile on the pairs "
        f"it was fitted on, an optimistic number. ECE over {report.n_bins} equal-width bins "
        "of p_a.</p>",
        "<h2>Reliability</h2>",
        _image(
            "reliability before and after",
            reliability_figure(
                [("raw", report.raw.reliability)]
                + [
                    (name, found.reliability)
                    for name, found in rows[1:]
                    if name != "calibrated, in sample"
                ]
            ),
        ),
        "<h2>Length</h2>",
        "<p class='note'>debiased: σ(m − β̄·L) with each fold's β, no temperature; calibrated: "
        "the profile's form, cross-validated. On the pairs where gold prefers the shorter "
        "response, gold's own P(picks longer) is 0.</p>",
        _length_table(report.length_rows),
        _image("P(picks the longer response)", length_rows_figure(report.length_rows)),
    ]
    if report.length is not None:
        parts += _sensitivity_section(report.length)
    parts += [
        _table(
            "Terms fitted per fold",
            ["fold", "T", "mean β"],
            [
                [str(index), fmt_num(t.temperature, 4), _mean_beta(t.length_sensitivity)]
                for index, t in enumerate(report.fold_terms)
            ],
        ),
    ]
    if report.gold.errors:
        parts.append(_table("Pairs not scored", ["id", "reason"], _error_rows(report.gold.errors)))
    parts.append(
        "<details><summary>Every pair</summary>"
        + _table(
            "p_a per pair",
            [
                "id",
                "gold",
                "fold",
                "tokens a / b",
                "raw margin",
                "debiased margin",
                "raw p_a",
                "cross-validated p_a",
            ],
            [
                [
                    p.id,
                    p.gold if p.target in (0.0, 1.0) else f"{p.gold} ({p.target:.2f})",
                    str(p.fold),
                    f"{p.tokens_a} / {p.tokens_b}",
                    f"{p.raw_margin:+.4f}",
                    "–" if p.debiased_margin is None else f"{p.debiased_margin:+.4f}",
                    f"{p.raw_p_a:.3f}",
                    f"{p.cross_validated_p_a:.3f}",
                ]
                for p in report.pairs
            ],
        )
        + "</details>"
    )
    return _page(f"cai-judge calibrate: {key.constitution.id} · {key.model}", parts)


def fmt_gain(found: Estimate | None) -> str:
    if found is None:
        return "–"
    return f"{found.value:+.4f} [{found.low:+.4f}, {found.high:+.4f}]"


def write_calibration_report(report: CalibrationReport, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "calibration.json"
    html_path = directory / "calibration.html"
    json_path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_calibration_html(report), encoding="utf-8")
    return json_path, html_path


def render_length_only_html(report: LengthOnlyReport) -> str:
    key = report.profile.key
    info = report.length
    rows = [
        ("raw", report.raw_prefers_longer.prefers_longer),
        ("debiased", report.debiased_prefers_longer.prefers_longer),
    ]
    figure = _new_figure(4.0, 3.2)
    ax = figure.subplots()
    ax.bar([0, 1], [v or 0.0 for _, v in rows], width=0.6, color="#1f5fa8")
    ax.axhline(0.5, color="#555555", linestyle=":", linewidth=1.0)
    ax.set_xticks([0, 1], [name for name, _ in rows])
    ax.set_ylim(0, 1)
    ax.set_ylabel("P(picks the longer response)")
    parts = [
        f"<p>Judge <code>{escape(key.model)}</code>, constitution "
        f"<code>{escape(key.constitution.id)}@{escape(key.constitution.version[:12])}</code>, "
        f"aggregator <code>{key.aggregator.value}</code>, principles "
        f"<code>{escape(str(key.selection))}</code>. Profile <code>{report.profile.hash}</code>: "
        "length debiasing only, no gold, so no temperature (T = 1): p_a = σ(margin − β̄·L).</p>",
        _table(
            "P(picks the longer response, in tokens) on these pairs",
            ["verdicts", "prefers longer"],
            [
                [name, f"{fmt_pct(found.prefers_longer)} (n={found.n})"]
                for name, found in (
                    ("raw", report.raw_prefers_longer),
                    ("debiased (in sample)", report.debiased_prefers_longer),
                )
            ],
        ),
        "<p class='note'>There is no gold here, so nothing says how often the longer response "
        "should win; fit on a gold set too (`cai-judge calibrate GOLD.jsonl --unlabeled ...`) "
        "for agreement and calibration.</p>",
        _image("P(picks the longer response), raw and debiased", figure),
        *_sensitivity_section(info),
    ]
    if info.errors:
        parts.append(_table("Pairs not scored", ["id", "reason"], _error_rows(info.errors)))
    return _page(f"cai-judge calibrate --unlabeled: {key.constitution.id} · {key.model}", parts)


def write_length_only_report(report: LengthOnlyReport, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "calibration.json"
    html_path = directory / "calibration.html"
    json_path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_length_only_html(report), encoding="utf-8")
    return json_path, html_path
