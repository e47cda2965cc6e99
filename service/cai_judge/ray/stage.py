"""The Ray Data stage: one actor per engine, each labeling batches of pairs.

An actor owns the offline engine (`engine.vllm_offline`, the CLI's, DESIGN.md §4) and the same
Judge as `cai-judge label`: no cache, the Judge's prefix-group scheduling, and the one labeling
pipeline (`labeling.pipeline.label_pairs`: plan, run, calibrate, re-index, DESIGN.md §8), the
same call `cai-judge label` makes per batch, so the labels are the CLI's. Ray Data calls the actor
synchronously, one batch at a time, so the actor keeps one event loop of its own and runs each
batch to completion on it (the engine's replies are delivered to the loop that asked).

A batch is Arrow (JSON Lines as one `line` column of each line's bytes, so a bad line, or a
byte that is not UTF-8, is reported, not fatal, as the CLI reports it; Parquet as the pair
columns). Each input row gives exactly one output row:
`label` (the label as `cai-judge label` writes it), `error` (why that row has none) or neither
(a blank line), `pair_id` (the id of a row that parsed as a pair), and the batch's usage on its
first row, so the driver can number lines, find repeated ids, sum usage and write in input
order.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from cai_judge.labeling.pipeline import label_pairs
from cai_judge.labeling.schema import Label, Pair, PairError
from cai_judge.labeling.validation import describe_validation_error

if TYPE_CHECKING:
    import pyarrow as pa

    from cai_judge.labeling.calibration_profile import CalibrationProfile
    from cai_judge.labeling.constitution import ConstitutionSpec
    from cai_judge.labeling.schema import LabelOptions
    from cai_judge.settings import Settings

# Output columns, one row per input row.
LABEL = "label"
ERROR = "error"
PAIR_ID = "pair_id"
USAGE = "usage"
# The input column of a JSON Lines file (`lines.py`): a line's bytes.
LINE = "line"


@dataclass(frozen=True)
class StageConfig:
    """Everything an actor needs, built once on the driver: workers of a cluster see neither
    the driver's environment nor its constitution files, so both travel in here."""

    settings: Settings
    # The one constitution version this run labels with (the registry holds a lock, which
    # does not pickle; the actor builds a registry of this one spec).
    spec: ConstitutionSpec
    options: LabelOptions
    profile: CalibrationProfile | None
    # The version the driver derived from the tokenizer (and checked the profile against);
    # None when it was not derived. The running Judge must render the same one.
    template_version: str | None = None


def _parse_text(line: str) -> Pair | str | None:
    """A JSON Lines row: its pair, why it is not one, or None for a blank line (skipped,
    as `cai-judge label` skips it)."""
    if not line.strip():
        return None
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as error:
        return f"not valid JSON: {error.msg}"
    return _parse_record(raw)


def _parse_record(raw: Any) -> Pair | str:
    try:
        return Pair.model_validate(raw)
    except ValidationError as error:
        return describe_validation_error(error, whole="(line)")


def _parse_line(raw: bytes) -> Pair | str | None:
    """A JSON Lines row as `lines.py` reads it: the line's bytes, decoded here, alone."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
    return _parse_text(line)


def _is_bytes(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_binary(kind) or pa.types.is_large_binary(kind))


def parse_rows(batch: pa.Table) -> list[Pair | str | None]:
    """Each row of an input batch as a pair, a reason it is not one, or None (blank)."""
    # The reader's column, by name and type: a Parquet file of pairs has at least three.
    if batch.column_names == [LINE] and _is_bytes(batch.schema.field(LINE).type):
        return [_parse_line(raw) for raw in batch.column(LINE).to_pylist()]
    return [_parse_record(row) for row in batch.to_pylist()]


def bind_cpu_threads(settings: Settings) -> int:
    """Give this actor's torch the threads `CAI_JUDGE_CPU_THREADS_BIND` names, as the CLI's
    engine has them; the count set, or 0 where nothing was changed (CUDA).

    Ray starts an actor of `num_cpus=1` with OMP_NUM_THREADS=1, so on the CPU build its
    engine would run one thread where `cai-judge label` runs one per bound core (DESIGN.md
    §4: every engine in a comparison gets the same binding). Set before the engine starts:
    vLLM's CPU worker refuses `torch.set_num_threads` once it has bound its threads.
    """
    import torch

    from cai_judge.engine.vllm_async import resolve_threads_bind

    if torch.cuda.is_available():
        return 0
    count = 0
    for part in resolve_threads_bind(settings.cpu_threads_bind).split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    torch.set_num_threads(count)
    return count


class LabelStage:
    """The callable class given to `map_batches`: Ray builds one per actor, hence one engine
    per actor (per GPU on a GPU cluster)."""

    def __init__(self, config: StageConfig) -> None:
        from cai_judge.engine.factory import start_engine
        from cai_judge.labeling.constitution import ConstitutionRegistry
        from cai_judge.labeling.judge import Judge

        self._config = config
        bind_cpu_threads(config.settings)
        self._loop = asyncio.new_event_loop()
        self._engine = self._loop.run_until_complete(start_engine(config.settings, serving=False))
        registry = ConstitutionRegistry()
        registry.add(config.spec)
        self._judge = Judge(self._engine, registry, config.settings.use_chat_template())
        renderer = self._judge.renderer(config.spec.template)
        running = renderer.cot_version if config.options.mode == "cot" else renderer.version
        if config.template_version is not None and running != config.template_version:
            # A bug, not a user error: refusing beats writing labels of another version.
            raise RuntimeError(
                f"the judge renders template {config.spec.template} as version {running}, "
                f"not {config.template_version} as the driver computed from the tokenizer"
            )

    def __call__(self, batch: pa.Table) -> dict[str, list[str | None]]:
        parsed = parse_rows(batch)
        pairs = [p for p in parsed if isinstance(p, Pair)]
        results: list[Label | PairError] = []
        usage = None
        if pairs:
            config = self._config
            labeled = self._loop.run_until_complete(
                label_pairs(self._judge, config.spec, config.options, pairs, profile=config.profile)
            )
            results, usage = labeled.results, labeled.usage
        answers = iter(results)
        labels: list[str | None] = []
        errors: list[str | None] = []
        pair_ids = [row.id if isinstance(row, Pair) else None for row in parsed]
        for row in parsed:
            if row is None:
                labels.append(None)
                errors.append(None)
            elif isinstance(row, str):
                labels.append(None)
                errors.append(row)
            else:
                result = next(answers)
                if isinstance(result, Label):
                    labels.append(result.model_dump_json(exclude_none=True))
                    errors.append(None)
                else:
                    labels.append(None)
                    errors.append(f"pair {result.id!r}: {result.error.message}")
        usages: list[str | None] = [None] * len(parsed)
        if usage is not None and usages:
            usages[0] = usage.model_dump_json()
        return {LABEL: labels, ERROR: errors, PAIR_ID: pair_ids, USAGE: usages}
