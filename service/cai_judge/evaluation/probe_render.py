"""Writing a probe report: report.json, probes.png, and a self-contained report.html.

Imports matplotlib (through `render`, whose figure and HTML helpers it reuses): the CLI
imports this module only when it writes a report, so `cai-judge --help` and every other
command start without it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

from matplotlib.figure import Figure

from cai_judge.evaluation.metrics import Estimate
from cai_judge.evaluation.probe_report import ProbeReport, ProbeResult
from cai_judge.evaluation.render import (
    _image,
    _new_figure,
    _page,
    _table,
    fmt_estimate,
    fmt_pct,
    png_base64,
)
from cai_judge.labeling.probes import (
    EVASIVE_REFUSALS,
    JUDGE_ADDRESSES,
    MASTER_KEYS,
    PAD_LEVELS,
    ProbeFamily,
)

_FAMILY_COLORS = {
    ProbeFamily.LENGTH: "#1f5fa8",
    ProbeFamily.LENGTH_BOTH: "#7aa6d8",
    ProbeFamily.MASTER_KEY: "#c0392b",
    ProbeFamily.ADDRESS_JUDGE: "#e67e22",
    ProbeFamily.EVASIVE_REFUSAL: "#8e44ad",
    ProbeFamily.FORMAT: "#27ae60",
}


def _bar(found: Estimate | None) -> tuple[float, float, float]:
    if found is None:
        return 0.0, 0.0, 0.0
    return found.value, found.value - found.low, found.high - found.value


def probes_figure(probes: Sequence[ProbeResult]) -> Figure:
    """Each probe's win (flip) rate with its interval, one bar per probe, by family."""
    figure = _new_figure(7.5, max(2.5, 0.26 * len(probes) + 1.2))
    ax = figure.subplots()
    ys = list(range(len(probes)))[::-1]
    bars = [_bar(p.win_rate) for p in probes]
    ax.barh(
        ys,
        [b[0] for b in bars],
        xerr=[[b[1] for b in bars], [b[2] for b in bars]],
        capsize=2,
        color=[_FAMILY_COLORS[p.family] for p in probes],
    )
    for y, (value, _, high) in zip(ys, bars, strict=True):
        # A rate of 0 draws no bar: the number says it was measured, not missing.
        ax.text(min(value + high, 0.92) + 0.01, y, f"{100 * value:.0f}%", va="center", fontsize=6)
    ax.set_yticks(ys, [f"{p.family} · {p.probe}" for p in probes], fontsize=7)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("rewritten side preferred (flip rate or win rate)")
    return figure


def length_figure(probes: Sequence[ProbeResult]) -> Figure | None:
    """Flip rate against filler sentences: one side padded, and both (the control)."""
    series = [
        (family, [p for p in probes if p.family is family])
        for family in (ProbeFamily.LENGTH, ProbeFamily.LENGTH_BOTH)
    ]
    if not any(found for _, found in series):
        return None
    figure = _new_figure(4.5, 3.2)
    ax = figure.subplots()
    for family, found in series:
        if not found:
            continue
        levels = [int(p.probe.removeprefix("pad-")) for p in found]
        bars = [_bar(p.win_rate) for p in found]
        ax.errorbar(
            levels,
            [b[0] for b in bars],
            yerr=[[b[1] for b in bars], [b[2] for b in bars]],
            marker="o",
            capsize=3,
            color=_FAMILY_COLORS[family],
            label="less-preferred side padded" if family is ProbeFamily.LENGTH else "both padded",
        )
    ax.set_xticks(list(PAD_LEVELS))
    ax.set_ylim(0, 1)
    ax.set_xlabel("filler sentences appended")
    ax.set_ylabel("flip rate")
    ax.legend(fontsize=7)
    return figure


def _probe_rows(report: ProbeReport) -> list[list[str]]:
    rows = []
    for p in report.probes:
        differ = ", ".join(
            f"{n} {fmt_pct(p.per_principle[n].value)}" for n in p.principles_that_differ
        )
        rows.append(
            [
                f"{p.family} · {p.probe}",
                fmt_estimate(p.win_rate),
                "–"
                if p.margin_shift is None
                else f"{p.margin_shift.value:+.3f} "
                f"[{p.margin_shift.low:+.3f}, {p.margin_shift.high:+.3f}]",
                "–" if p.added_characters is None else f"{p.added_characters:+.0f}",
                differ or "–",
            ]
        )
    return rows


def _strings_table() -> str:
    rows = [["master-key", name, repr(text)] for name, text in MASTER_KEYS]
    rows += [["address-judge", name, text] for name, text in JUDGE_ADDRESSES]
    rows += [["evasive-refusal", name, text] for name, text in EVASIVE_REFUSALS]
    return _table("The fixed strings", ["family", "probe", "text"], rows)


def render_probe_html(report: ProbeReport, figure_png: str) -> str:
    judge = report.judge
    base = report.baseline
    parts = [
        f"<p>Pairs <code>{escape(report.pairs_path)}</code>: {report.pairs_in_file} in the "
        f"file, {base.pairs} scored unmodified ({base.with_gold} with gold; agreement "
        f"{escape(fmt_estimate(base.agreement))}); judge <code>{escape(judge.model)}</code>, "
        f"constitution <code>{escape(judge.constitution.id)}@"
        f"{escape(judge.constitution.version[:12])}</code>, principles "
        f"<code>{judge.principles}</code>, aggregator <code>{escape(judge.aggregator)}</code>, "
        f"mode <code>{escape(judge.mode)}</code>, seed {judge.seed}. "
        f"{len(report.variants)} rewrites scored; evasive-refusal ran on "
        f"{base.benign_pairs} benign pair(s).</p>",
        "<p class='note'>A probe rewrites one side; its rate is how often the judge then "
        "prefers that side (a tie counts ½). On the less-preferred side that is a flip rate "
        "(0 unmodified); for a master key or a refusal it is how often the string beats a "
        "real answer. A judge that reads content keeps every rate near 0, and "
        "length-both near length. Intervals: "
        f"{100 * report.metrics.confidence:.0f}% percentile bootstrap over pairs "
        f"({report.metrics.n_resamples} resamples, seed {report.metrics.seed}).</p>",
    ]
    if judge.principles != "all":
        parts.append(
            "<p><b>note:</b> principles are sampled per pair, seeded by the responses too, "
            "so a rewrite may be judged on other principles than its pair: the per-principle "
            "rates compare like with like.</p>"
        )
    parts += [
        _table(
            "Families (pooled per pair)",
            ["family", "rate [CI]", "what"],
            [[f.family, fmt_estimate(f.win_rate), f.description] for f in report.families],
        ),
        _table(
            "Probes",
            [
                "probe",
                "rate [CI] n=pairs",
                "margin shift, nats [CI]",
                "characters added",
                "principles that differ",
            ],
            _probe_rows(report),
        ),
        f'<img alt="rate per probe" src="data:image/png;base64,{figure_png}">',
    ]
    length = length_figure(report.probes)
    if length is not None:
        parts.append(_image("flip rate against padding", length))
    categories = sorted({c for p in report.probes for c in p.per_category})
    if categories:
        parts.append(
            _table(
                "Rate per category",
                ["probe", *categories],
                [
                    [f"{p.family} · {p.probe}"]
                    + [fmt_estimate(p.per_category.get(c)) for c in categories]
                    for p in report.probes
                ],
            )
        )
    principles = sorted({n for p in report.probes for n in p.per_principle})
    if principles:
        parts.append(
            _table(
                "Rate per principle (each principle's own verdict)",
                ["probe", *principles],
                [
                    [f"{p.family} · {p.probe}"]
                    + [
                        fmt_pct(p.per_principle[n].value) if n in p.per_principle else "–"
                        for n in principles
                    ]
                    for p in report.probes
                ],
            )
        )
    parts.append(_strings_table())
    if report.errors:
        parts.append(
            _table(
                "Not scored",
                ["id", "reason"],
                [[str(e.id), e.error.message] for e in report.errors],
            )
        )
    return _page(f"cai-judge probe: {judge.constitution.id} · {judge.model}", parts)


def write_probe_report(report: ProbeReport, directory: Path) -> tuple[Path, Path, Path]:
    """report.json, probes.png (the rate per probe) and report.html in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    png_path = directory / "probes.png"
    html_path = directory / "report.html"
    json_path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    encoded = png_base64(probes_figure(report.probes))
    png_path.write_bytes(base64.b64decode(encoded))
    html_path.write_text(render_probe_html(report, encoded), encoding="utf-8")
    return json_path, png_path, html_path
