"""`cai-judge export`: a label file → reward-model training rows (chosen/rejected/margin/
p_chosen), recalibrated with a profile when one is given.

Apart from `label` (cli/label_cmd.py): it starts no engine, and needs the judge model's
tokenizer only for a length-controlled profile.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from cai_judge.cli.common import (
    CalibrationOption,
    ExitCode,
    build_settings,
    console,
    fail,
    report_bad_lines,
)
from cai_judge.cli.pairs_file import LabelsFile, UnreadableFile, read_labels, read_pairs
from cai_judge.labeling.calibration_profile import (
    CalibrationError,
    CalibrationProfile,
    label_key,
    read_profile,
    response_token_count,
)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


def export_command(
    labels_path: Annotated[
        Path, typer.Argument(metavar="LABELS.jsonl", exists=True, dir_okay=False)
    ],
    pairs_path: Annotated[
        Path, typer.Option("--pairs", exists=True, dir_okay=False, help="The labeled pairs.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output")],
    drop_low_confidence: Annotated[bool, typer.Option(help="Leave low-mass labels out.")] = False,
    calibration: CalibrationOption = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="With a length-controlled --calibration: the judge model whose tokenizer "
            "counts the responses' tokens (the profile's model). Env: CAI_JUDGE_MODEL."
        ),
    ] = None,
) -> None:
    """Write chosen/rejected/margin/p_chosen rows for reward-model training (TRL and soft BT).

    With --calibration, margin and p_chosen are the profile's calibrated numbers (labels
    already calibrated by another profile are recalibrated from their raw numbers).
    Bad lines of LABELS.jsonl (blank, half-written, not JSON or UTF-8, not a label, a
    repeated id) are reported by line number and left out; the rest is exported, and the
    exit status is 1 when any line was bad or any label has no pair.
    """
    from cai_judge.labeling.export import EXPORT_COLUMNS, export_rows

    try:
        pairs = {p.id: p for p in read_pairs(pairs_path).pairs}
    except UnreadableFile as error:
        raise fail(str(error)) from None
    labels_file = read_labels(labels_path)
    report_bad_lines(labels_path, labels_file.bad_lines)
    profile = count_tokens = None
    if calibration is not None:
        profile, count_tokens = _export_profile(calibration, model, labels_file, labels_path)
    found = export_rows(
        labels_file.labels, pairs, profile=profile, count_tokens=count_tokens,
        drop_low_confidence=drop_low_confidence,
    )  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as sink:
        sink.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in found.rows)
    columns = output.with_name(output.name + ".columns.json")
    columns.write_text(json.dumps(EXPORT_COLUMNS, indent=2) + "\n")
    bad = len(labels_file.bad_lines)
    console.print(
        f"exported {len(labels_file.labels)} label(s): wrote {len(found.rows)} row(s) to "
        f"{output} (column conventions: {columns}); skipped {found.ties} tie(s), "
        f"{found.dropped} low-confidence, {found.missing} without a pair; {bad} bad line(s) "
        f"in {labels_path}"
    )
    if found.missing or bad:
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))


def _export_profile(
    path: Path, model: str | None, labels_file: LabelsFile, labels_path: Path
) -> tuple[CalibrationProfile, Callable[[str], int] | None]:
    """The profile, refused unless it applies to every label; and, for a length term, the
    token counter of the profile's model."""
    from transformers import AutoTokenizer

    from cai_judge.engine.default_model import ModelNotReady
    from cai_judge.engine.factory import model_display_name, resolve_model_path

    try:
        profile = read_profile(path)
    except CalibrationError as error:
        raise fail(str(error)) from None
    for label in labels_file.labels:
        try:
            profile.check_applies_to(label_key(label))
        except CalibrationError as error:
            line = labels_file.line_numbers[label.id]
            raise fail(f"{labels_path}:{line}: {error}; nothing was exported") from None
    if not profile.length_control:
        return profile, None
    settings = build_settings(model=model)
    if model_display_name(settings) != profile.key.model:
        raise fail(
            f"the profile's length term counts tokens with {profile.key.model}'s tokenizer; "
            f"give --model for that model (this run has {model_display_name(settings)})"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(settings))
    except ModelNotReady as error:
        raise fail(str(error)) from None
    except (OSError, ValueError) as error:
        raise fail(f"cannot load the tokenizer of {profile.key.model}: {error}") from None
    return profile, functools.partial(response_token_count, tokenizer)
