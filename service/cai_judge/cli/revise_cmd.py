"""`cai-judge revise` (prompts → SL-CAI revision rows, resumable) and `cai-judge export-sft`
(revision rows → the chat-messages rows TRL's SFTTrainer reads).

Resuming and bad lines work as in `label` (cli/label_cmd.py): bad input lines are reported
by line number and the rest is revised; a re-run skips ids already in the output, after
checking that the file was made with the same model, constitution and sampling, and cuts
a half-written last line. `--score` closes the CAI loop: the constitution labels each
final revision against its initial response, and the command prints the win rate.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cai_judge.cli.common import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONSTITUTION,
    BatchSizeOption,
    ConstitutionOption,
    ConstitutionsDirOption,
    ExitCode,
    ModelOption,
    build_settings,
    console,
    engine_session,
    fail,
    flag_value,
    label_options,
    load_registry,
    model_flags,
    report_bad_lines,
    report_pair_error,
    resolve_constitution,
)
from cai_judge.cli.pairs_file import (
    ResumeError,
    UnreadableFile,
    drop_partial_tail,
    load_existing_labels,
    read_records,
)
from cai_judge.constants import DEFAULT_PRINCIPLES
from cai_judge.labeling.schema import Label, LabelOptions, Pair, PairError
from cai_judge.sl_cai.reviser import NoRevisablePrinciples, revisable_principles
from cai_judge.sl_cai.schema import (
    Revision,
    RevisionOptions,
    RevisionPrompt,
    RevisionUsage,
)

if TYPE_CHECKING:
    from cai_judge.labeling.constitution import ConstitutionRegistry, ConstitutionSpec
    from cai_judge.settings import Settings


def register(app: typer.Typer) -> None:
    app.command("revise")(revise_command)
    app.command("export-sft")(export_sft_command)


# What a row records about how it was made, by the option that sets it: a file is only
# resumed by a run that agrees on all of them, or it would mix two runs' revisions.
REVISION_PROVENANCE: dict[str, str] = {
    "model": "--model",
    "constitution": "--constitution",
    "seed": "--seed",
    "rounds": "--rounds",
    "temperature": "--temperature",
    "max_tokens": "--max-tokens",
    "few_shot_examples": "--few-shot/--no-few-shot",
}


def _provenance(row: dict[str, Any]) -> dict[str, str]:
    def text(value: Any) -> str:
        if isinstance(value, dict) and "id" in value and "version" in value:
            return f"{value['id']}@{str(value['version'])[:12]}"
        return "(none)" if value is None else json.dumps(value)

    return {name: text(row.get(name)) for name in REVISION_PROVENANCE}


def _check_resume(output: Path, run: dict[str, str]) -> set[str]:
    """The ids already revised in `output`; refuses a file made with other settings."""
    try:
        existing = load_existing_labels(output)
    except ResumeError as error:
        raise fail(str(error).replace("cai-judge label", "cai-judge revise")) from None
    if not existing.ids:
        return set()
    mismatches: list[str] = []
    lines = output.read_bytes().split(b"\n")
    for line_number, raw in enumerate(lines[:-1], start=1):
        row = json.loads(raw)
        for name, value in _provenance(row).items():
            if value != run[name]:
                mismatches.append(
                    f"  {REVISION_PROVENANCE[name]}: the file has {value} (line {line_number}), "
                    f"this run has {run[name]}"
                )
        if mismatches:
            break
    if mismatches:
        shown = "\n".join(mismatches)
        raise fail(
            f"{output} holds revisions made with other settings, and resuming it would mix "
            f"two runs in one file:\n{shown}\n"
            "Write this run to another output file (-o), or rerun with the file's settings."
        )
    drop_partial_tail(output, existing)
    return existing.ids


# -- revise ----------------------------------------------------------------------------


@model_flags(RevisionOptions, into="revision")
def revise_command(
    input_path: Annotated[
        Path, typer.Argument(metavar="PROMPTS.jsonl", exists=True, dir_okay=False)
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Revision rows (SFT-ready), one JSON per line.")
    ],
    constitution: ConstitutionOption = DEFAULT_CONSTITUTION,
    score: Annotated[
        bool,
        typer.Option(
            help="Label each final revision against its initial response under the same "
            "constitution, and print the win rate."
        ),
    ] = False,
    score_principles: Annotated[
        str, typer.Option(help="With --score: `all`, or k principles sampled per pair.")
    ] = DEFAULT_PRINCIPLES,
    model: ModelOption = None,
    constitutions_dir: ConstitutionsDirOption = None,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    *,
    revision: dict[str, Any],
) -> None:
    """Critique and revise responses to PROMPTS.jsonl (`{id, prompt, initial_response?}`).

    Without `initial_response` the model writes one first. Re-running resumes where it
    stopped; resuming needs the model, constitution, seed, rounds, temperature, max tokens
    it had.
    """
    from cai_judge.engine.factory import model_display_name

    settings = build_settings(model=model, constitutions_dir=constitutions_dir)
    registry = load_registry(settings)
    spec = resolve_constitution(registry, constitution)
    try:
        revisable_principles(spec)
    except NoRevisablePrinciples as error:
        raise fail(str(error)) from None
    # The flags' bounds are the model's own (model_flags), so this cannot refuse them.
    options = RevisionOptions(**revision)
    scoring = None
    if score:
        principles = flag_value(LabelOptions, "principles", score_principles, "--score-principles")
        scoring = label_options(principles=principles, seed=options.seed)

    try:
        prompts_file = read_records(input_path, RevisionPrompt)
    except UnreadableFile as error:
        raise fail(str(error)) from None
    duplicates = prompts_file.duplicates_problem(input_path, "prompt", "revisions")
    if duplicates:
        raise fail(duplicates)
    report_bad_lines(input_path, prompts_file.bad_lines)

    shots = len(spec.revision_examples or ()) if options.few_shot else 0
    run = _provenance(
        {
            "model": model_display_name(settings),
            "constitution": {"id": spec.id, "version": spec.version},
            **options.model_dump(exclude={"few_shot"}),
            "few_shot_examples": shots,
        }
    )
    done = _check_resume(output, run)
    todo = [p for p in prompts_file.records if p.id not in done]
    if done:
        console.print(f"resuming: {len(done)} prompt(s) already in {output}")

    failed = asyncio.run(
        _revise_file(settings, registry, spec, options, scoring, todo, output, batch_size)
    )
    if scoring is not None:
        _print_win_rate(output)
    failures = len(prompts_file.bad_lines) + failed
    if failures:
        console.print(f"[red]{failures} prompt(s) not revised[/red] (see above)")
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))


def _score_row(label: Label) -> dict[str, Any]:
    verdict = {"a": "revision", "b": "initial", "tie": "tie"}[label.preferred]
    return {
        "preferred": verdict,
        "p_revision": label.p_a,
        "margin": label.margin,
        "principles": label.principles,
        "low_confidence": label.low_confidence,
        "template": label.template.model_dump(),
    }


async def _revise_file(
    settings: Settings,
    registry: ConstitutionRegistry,
    spec: ConstitutionSpec,
    options: RevisionOptions,
    scoring: LabelOptions | None,
    todo: list[RevisionPrompt],
    output: Path,
    batch_size: int,
) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from cai_judge.sl_cai.reviser import Reviser

    if not todo:
        console.print("nothing to revise")
        return 0
    failed = 0
    usage = RevisionUsage()
    generations = sum(p.initial_response is None for p in todo) + 2 * options.rounds * len(todo)
    async with engine_session(settings, registry) as judge:
        reviser = Reviser(judge.engine, judge)
        started = time.perf_counter()
        output.parent.mkdir(parents=True, exist_ok=True)
        columns = (
            TextColumn("revising"), BarColumn(), MofNCompleteColumn(), TextColumn("generations"),
            TextColumn("{task.fields[step]}"), TimeRemainingColumn(),
        )  # fmt: skip
        with (
            output.open("a", encoding="utf-8") as sink,
            Progress(*columns, console=console) as bar,
        ):
            task = bar.add_task("revise", total=generations, step="")

            def advance(step: str, count: int) -> None:
                bar.update(task, advance=count, step=step)

            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                batch = await reviser.revise(chunk, spec, options, on_step=advance)
                scores: dict[str, dict[str, Any]] = {}
                if scoring is not None:
                    bar.update(task, step="scoring")
                    scores = await _score(judge, spec, scoring, batch.revisions)
                for result in batch.results:
                    if isinstance(result, PairError):
                        failed += 1
                        report_pair_error(result)
                        continue
                    if result.id in scores:
                        result = result.model_copy(update={"score": scores[result.id]})
                    sink.write(result.model_dump_json(exclude_none=True) + "\n")
                # Flushed per batch: a killed run resumes after the last whole batch.
                sink.flush()
                usage.add(batch.usage)
        elapsed = time.perf_counter() - started
    console.print(
        f"revised {usage.prompts} prompt(s) in {elapsed:.1f} s "
        f"({usage.prompts / elapsed:.2f} prompts/s, engine start excluded): "
        f"{usage.generations} generations, {usage.prompt_tokens} prompt tokens"
    )
    return failed


async def _score(
    judge: Any, spec: ConstitutionSpec, options: LabelOptions, revisions: list[Revision]
) -> dict[str, dict[str, Any]]:
    """Each revision's label against its initial response, by id (a = the revision)."""
    pairs = [
        Pair(id=r.id, prompt=r.prompt, response_a=r.response, response_b=r.initial_response)
        for r in revisions
        # An empty text cannot be labeled: such a row is written without a score.
        if r.response and r.initial_response
    ]
    if not pairs:
        return {}
    from cai_judge.labeling.pipeline import label_pairs

    batch = await label_pairs(judge, spec, options, pairs)
    return {label.id: _score_row(label) for label in batch.labels}


def _print_win_rate(output: Path) -> None:
    """The share of scored rows in `output` whose revision the constitution prefers
    (a tie counts half): does revising win the constitution's preference?"""
    verdicts: list[str] = []
    if output.exists():
        for line in output.read_text(encoding="utf-8").splitlines():
            row_score = json.loads(line).get("score")
            if row_score:
                verdicts.append(row_score["preferred"])
    if not verdicts:
        console.print("win rate: no row could be scored")
        return
    wins, ties = verdicts.count("revision"), verdicts.count("tie")
    rate = (wins + ties / 2) / len(verdicts)
    console.print(
        f"win rate of the revision over the initial response: {rate:.3f} "
        f"({wins} won, {ties} tied, {verdicts.count('initial')} lost, of {len(verdicts)} "
        "scored rows; a tie counts half)"
    )
    typer.echo(json.dumps({"win_rate": rate, "won": wins, "tied": ties, "scored": len(verdicts)}))


# -- export-sft ------------------------------------------------------------------------


def export_sft_command(
    revisions_path: Annotated[
        Path, typer.Argument(metavar="SFT.jsonl", exists=True, dir_okay=False)
    ],
    output: Annotated[Path, typer.Option("-o", "--output")],
) -> None:
    """Write `{"messages": [...]}` rows (the prompt's turns, then the final revision as the
    assistant's turn): the conversational format TRL's SFTTrainer reads.

    Bad lines of SFT.jsonl are reported by line number and left out; the exit status is 1
    when any line was bad.
    """
    try:
        revisions = read_records(revisions_path, Revision, "not a revision row: ")
    except UnreadableFile as error:
        raise fail(str(error)) from None
    bad = revisions.bad_lines
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as sink:
        for revision in revisions.records:
            sink.write(json.dumps({"messages": revision.messages()}, ensure_ascii=False) + "\n")
    written = len(revisions.records)
    report_bad_lines(revisions_path, bad)
    console.print(
        f"wrote {written} conversation(s) to {output}; {len(bad)} bad line(s) in {revisions_path}"
    )
    if bad:
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))
