"""`cai-judge label`: a pairs file → a label file, resumable (locally) or on Ray."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cai_judge.cli.common import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONSTITUTION,
    BatchSizeOption,
    CalibrationOption,
    ConstitutionOption,
    ConstitutionsDirOption,
    ExitCode,
    ModelOption,
    build_settings,
    console,
    engine_session,
    fail,
    label_flags,
    label_options,
    load_registry,
    progress,
    report_bad_lines,
    report_pair_error,
    resolve_constitution,
    usage_error,
)
from cai_judge.cli.pairs_file import (
    PROVENANCE_OPTIONS,
    ExistingLabels,
    ResumeError,
    UnreadableFile,
    drop_partial_tail,
    load_existing_labels,
    provenance,
    read_pairs,
)
from cai_judge.labeling.calibration_profile import (
    CalibrationError,
    CalibrationProfile,
    ProfileKey,
    read_profile,
)
from cai_judge.labeling.schema import (
    Label,
    LabelOptions,
    Pair,
    Usage,
)
from cai_judge.ray.locations import is_uri

if TYPE_CHECKING:
    from cai_judge.labeling.constitution import ConstitutionRegistry, ConstitutionSpec
    from cai_judge.settings import Settings

RayOption = Annotated[
    bool,
    typer.Option(
        "--ray",
        help="Label on a Ray cluster, one engine per actor (RAY_ADDRESS, else a local Ray); "
        "INPUT may be JSON Lines or Parquet, OUTPUT .jsonl or .parquet, either a local path "
        "or a URI (s3://, gs://, abfs://, file://, any fsspec protocol installed). Needs "
        "`pip install 'cai-judge[ray]'`.",
    ),
]
RayActorsOption = Annotated[
    int | None,
    typer.Option(min=1, help="--ray: engines (actors); default one per GPU, else one."),
]


InputArgument = Annotated[
    # A string, not a Path: typer's Path checks refuse a URI, and Path("s3://b/x") is s3:/b/x.
    str,
    typer.Argument(
        metavar="INPUT.jsonl",
        help="The pairs, a local file; with --ray also a URI.",
        show_default=False,
    ),
]
OutputOption = Annotated[
    str,
    typer.Option(
        "-o",
        "--output",
        help="Labels, one JSON per line; with --ray also Parquet, and a URI.",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    app.command("label")(label_command)


# -- resuming --------------------------------------------------------------------------


def _template_version(settings: Settings, spec: ConstitutionSpec, cot: bool = False) -> str:
    """The template version this run's labels will carry, found without the engine.

    The version depends only on the template and the tokenizer (JudgePromptRenderer), and
    a tokenizer loads in about a second where the engine takes 30-90 s: so a file made with
    another template is refused before the engine starts. VllmEngine.start loads its
    tokenizer the same way, and _label_file checks the running Judge's version against this
    one before it writes a label, so the two can never silently disagree.
    """
    from transformers import AutoTokenizer

    from cai_judge.engine.default_model import ModelNotReady
    from cai_judge.engine.factory import resolve_model_path
    from cai_judge.labeling.templates import TEMPLATES, JudgePromptRenderer, TemplateError

    try:
        path = resolve_model_path(settings)
    except ModelNotReady as error:
        raise fail(str(error)) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise fail(f"cannot load the tokenizer of the judge model {path}: {error}") from None
    use_chat_template = settings.use_chat_template()
    if use_chat_template is None:
        # `auto`, decided as Judge.__init__ decides it.
        use_chat_template = bool(getattr(tokenizer, "chat_template", None))
    try:
        renderer = JudgePromptRenderer(TEMPLATES[spec.template], tokenizer, use_chat_template)
    except TemplateError as error:
        raise fail(f"the judge model cannot use the judge template: {error}") from None
    # CoT labels carry a version of their own, so a plain file is never resumed in CoT.
    return renderer.cot_version if cot else renderer.version


def _check_resume(
    output: Path,
    existing: ExistingLabels,
    settings: Settings,
    spec: ConstitutionSpec,
    options: LabelOptions,
    profile: CalibrationProfile | None,
) -> str | None:
    """Refuse a label file made with other settings; the template version when checked."""
    from cai_judge.engine.factory import model_display_name

    if not existing.ids:
        return None
    cot = options.mode == "cot"
    run: dict[str, Any] = {
        "model": model_display_name(settings),
        "constitution": {"id": spec.id, "version": spec.version},
        "template": None,
        "selection": options.principles,
        "seed": options.seed,
        "aggregator": options.aggregator.value,
        "calibration": {"profile": profile.hash} if profile is not None else None,
        # As the Judge stamps them on a label (labeling/judge.py).
        "per_principle": [] if options.per_principle else None,
        "mode": options.mode,
        "cot_max_tokens": options.rationale_tokens if cot else None,
        "cot_max_probability": options.cot_max_probability if cot else None,
        "ensemble": ({"delta": options.ensemble_delta} if options.ensemble == "adaptive" else None),
    }
    # The template last: it needs the tokenizer, and a file from another model or
    # constitution is refused without loading anything.
    cheap = tuple(f for f in PROVENANCE_OPTIONS if f != "template")
    found = existing.mismatches(provenance(run), cheap)
    template_version = None
    if not found:
        template_version = _template_version(settings, spec, cot)
        run["template"] = {"id": spec.template, "version": template_version}
        found = existing.mismatches(provenance(run), ("template",))
    if found:
        shown = "\n".join(f"  {m.describe()}" for m in found)
        raise fail(
            f"{output} holds labels made with other settings, and resuming it would mix "
            f"two judges' labels in one file:\n{shown}\n"
            "Write this run to another output file (-o), or rerun with the file's settings."
        )
    return template_version


# -- calibration -----------------------------------------------------------------------


def _load_profile(
    path: Path, settings: Settings, spec: ConstitutionSpec, options: LabelOptions
) -> CalibrationProfile:
    """The profile, checked against everything known before the engine starts."""
    try:
        profile = read_profile(path)
    except CalibrationError as error:
        raise fail(str(error)) from None
    # The template version needs the tokenizer: checked once the judge runs (_check_profile).
    _check_profile(profile, settings, spec, options, profile.key.template.version)
    return profile


def _check_profile(
    profile: CalibrationProfile,
    settings: Settings,
    spec: ConstitutionSpec,
    options: LabelOptions,
    template_version: str,
) -> None:
    from cai_judge.engine.factory import model_display_name

    wanted = ProfileKey.for_labels(model_display_name(settings), spec, template_version, options)
    try:
        profile.check_applies_to(wanted)
    except CalibrationError as error:
        raise fail(
            f"{error}. Label with the settings the profile was fitted for, or fit one for "
            "these with `cai-judge calibrate`."
        ) from None


# -- label -----------------------------------------------------------------------------


def _check_locations(input_path: str, output: str, ray: bool) -> None:
    """Refuse a URI without --ray, and a local INPUT that is missing or a directory (the
    check typer makes on a Path, made here because INPUT may be a URI)."""
    for name, location in (("INPUT.jsonl", input_path), ("--output", output)):
        if is_uri(location) and not ray:
            usage_error(
                name,
                f"{location} is a URI, and only --ray reads and writes URIs: without it, "
                "`label` resumes a run by reading its output back as a local file. Add "
                "--ray, or give a local path.",
            )
    if not is_uri(input_path):
        path = Path(input_path)
        if not path.exists():
            usage_error("INPUT.jsonl", f"File {input_path!r} does not exist.")
        if path.is_dir():
            usage_error("INPUT.jsonl", f"File {input_path!r} is a directory.")


@label_flags()
def label_command(
    input_path: InputArgument,
    output: OutputOption,
    constitution: ConstitutionOption = DEFAULT_CONSTITUTION,
    model: ModelOption = None,
    constitutions_dir: ConstitutionsDirOption = None,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    calibration: CalibrationOption = None,
    ray: RayOption = False,
    ray_actors: RayActorsOption = None,
    *,
    flags: dict[str, Any],
) -> None:
    """Label INPUT.jsonl (pairs) into OUTPUT; re-running resumes where it stopped.

    Resuming needs the model, constitution, template, principles, seed, aggregator,
    calibration profile, per-principle, mode, CoT and ensemble settings it had. With --ray,
    labels on a Ray cluster instead (no resuming), and INPUT and OUTPUT may be URIs.
    """
    _check_locations(input_path, output, ray)
    settings = build_settings(model=model, constitutions_dir=constitutions_dir)
    registry = load_registry(settings)
    spec = resolve_constitution(registry, constitution)
    options = label_options(settings, **flags)
    profile = _load_profile(calibration, settings, spec, options) if calibration else None
    if ray:
        _label_on_ray(input_path, output, settings, spec, options, profile, batch_size, ray_actors)
        return

    try:
        pairs_file = read_pairs(Path(input_path))
    except UnreadableFile as error:
        raise fail(str(error)) from None
    duplicates = pairs_file.duplicates_problem(input_path, "pair", "labels")
    if duplicates:
        raise fail(duplicates)
    report_bad_lines(input_path, pairs_file.bad_lines)

    labels_path = Path(output)
    try:
        existing = load_existing_labels(labels_path)
    except ResumeError as error:
        raise fail(str(error)) from None
    template_version = _check_resume(labels_path, existing, settings, spec, options, profile)
    drop_partial_tail(labels_path, existing)
    todo = [p for p in pairs_file.pairs if p.id not in existing.ids]
    if existing.ids:
        console.print(f"resuming: {len(existing.ids)} pair(s) already in {labels_path}")

    failed = asyncio.run(
        _label_file(
            settings,
            registry,
            spec,
            options,
            todo,
            labels_path,
            batch_size,
            template_version,
            profile,
        )
    )
    failures = len(pairs_file.bad_lines) + failed
    if failures:
        console.print(f"[red]{failures} pair(s) not labeled[/red] (see above)")
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))


async def _label_file(
    settings: Settings,
    registry: ConstitutionRegistry,
    spec: ConstitutionSpec,
    options: LabelOptions,
    todo: list[Pair],
    output: Path,
    batch_size: int,
    template_version: str | None,
    profile: CalibrationProfile | None = None,
) -> int:
    if not todo:
        console.print("nothing to label")
        return 0
    from cai_judge.labeling.pipeline import label_pairs

    failed = 0
    usage = Usage()
    async with engine_session(settings, registry) as judge:
        renderer = judge.renderer(spec.template)
        running = renderer.cot_version if options.mode == "cot" else renderer.version
        if template_version is not None and running != template_version:
            raise fail(
                f"the judge renders template {spec.template} as version {running}, not "
                f"{template_version} as computed from the tokenizer; nothing was written "
                f"to {output}. Please report this bug."
            )
        if profile is not None:
            _check_profile(profile, settings, spec, options, running)
        started = time.perf_counter()
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("a", encoding="utf-8") as sink, progress("labeling") as bar:
            task = bar.add_task("label", total=len(todo))
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                batch = await label_pairs(judge, spec, options, chunk, profile=profile)
                for result in batch.results:
                    if isinstance(result, Label):
                        sink.write(result.model_dump_json(exclude_none=True) + "\n")
                    else:
                        failed += 1
                        report_pair_error(result)
                # Flushed per batch: a killed run resumes after the last whole batch.
                sink.flush()
                usage.add(batch.usage)
                bar.advance(task, len(batch.results))
        elapsed = time.perf_counter() - started
    cached = usage.cached_prompt_tokens / usage.prompt_tokens if usage.prompt_tokens else 0.0
    console.print(
        f"labeled {usage.pairs} pair(s) in {elapsed:.1f} s ({usage.pairs / elapsed:.2f} pairs/s, "
        f"engine start excluded): {usage.score_units} score units, "
        f"{usage.prompt_tokens} prompt tokens, {cached:.0%} from the prefix cache"
    )
    return failed


# -- label --ray -----------------------------------------------------------------------


def _label_on_ray(
    input_path: str,
    output: str,
    settings: Settings,
    spec: ConstitutionSpec,
    options: LabelOptions,
    profile: CalibrationProfile | None,
    batch_size: int,
    actors: int | None,
) -> None:
    """`label --ray`: the same options and checks, the labeling on Ray (cai_judge.ray)."""
    try:
        # cai_judge.ray imports Ray lazily: asked for here, so a missing extra is this
        # message, not a traceback once the tokenizer has loaded (and pyarrow comes with it).
        import ray.data  # noqa: F401

        from cai_judge.ray.locations import LocationError, check_output_is_new, check_source
        from cai_judge.ray.run import label_with_ray
        from cai_judge.ray.stage import StageConfig
    except ImportError as error:
        raise fail(f"--ray needs Ray Data: pip install 'cai-judge[ray]' ({error})") from None
    try:
        # On the driver, before Ray or an engine starts: a URI's credentials and the
        # output's state are checked in seconds, not after the engines have loaded.
        check_source(input_path)
        check_output_is_new(output)
    except LocationError as error:
        raise fail(str(error)) from None
    # Derived before any actor starts, as a resumed plain run derives it: a profile for
    # another template is refused here, not once per actor.
    template_version = _template_version(settings, spec, options.mode == "cot")
    if profile is not None:
        _check_profile(profile, settings, spec, options, template_version)
    config = StageConfig(settings, spec, options, profile, template_version)
    summary = label_with_ray(input_path, output, config, batch_size=batch_size, actors=actors)
    for row, reason in summary.problems:
        console.print(f"[yellow]{input_path}:{row}[/yellow]: {reason}", highlight=False)
    usage, elapsed = summary.usage, summary.elapsed_s
    cached = usage.cached_prompt_tokens / usage.prompt_tokens if usage.prompt_tokens else 0.0
    first = f"{summary.first_label_s:.1f}" if summary.first_label_s is not None else "-"
    console.print(
        f"labeled {usage.pairs} pair(s) in {elapsed:.1f} s ({usage.pairs / elapsed:.2f} pairs/s, "
        f"engine start included; first label after {first} s): {usage.score_units} score "
        f"units, {usage.prompt_tokens} prompt tokens, {cached:.0%} from the prefix cache"
    )
    # Fewer than labeled when the input repeats an id: a repeat is labeled, then dropped.
    console.print(f"wrote {summary.labeled} label(s) to {output}", highlight=False)
    if summary.problems:
        console.print(f"[red]{len(summary.problems)} pair(s) not labeled[/red] (see above)")
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))
