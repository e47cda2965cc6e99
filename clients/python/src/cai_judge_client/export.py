"""Labels to a Bradley–Terry training set: one row per labeled pair, chosen vs rejected.

Each row has `id`, `prompt`, `chosen`, `rejected`, `margin` and `p_chosen`:

- `prompt`: always chat messages. A string prompt becomes one user message, so a file that
  mixes string and chat prompts (examples/pairs.jsonl does) has one column type: Arrow and
  `datasets` need that, and TRL's RewardTrainer decides chat-or-not from the first row
  (a mixed export failed in both).
- `chosen` / `rejected`: the response the constitution preferred, and the other, as
  one-message assistant turns: TRL's conversational preference format.
- `margin` follows TRL RewardTrainer's convention: a non-negative number, in nats, that the
  trainer subtracts inside the loss, `−log σ(r_chosen − r_rejected − margin)`. It is the
  label's log-odds margin (docs/DESIGN.md §2) taken from the chosen side: `|margin|`.
- `p_chosen` follows the soft-label Bradley–Terry convention of DESIGN.md §2: the judge's
  probability that `chosen` is better, `σ(|margin|)` (≥ 0.5), for the loss
  `−[p·log σ(r_c − r_r) + (1 − p)·log σ(r_r − r_c)]`.

Ties (margin exactly 0) say nothing about which is better and are left out unless asked
for; per-item errors have no label and are always left out. Both are counted.

Parquet needs `pyarrow` (`pip install 'cai-judge-client[parquet]'`), a Hugging Face
`datasets.Dataset` needs `datasets` (`[datasets]`); JSONL and `reward_rows` need nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai_judge_client._dataset import as_dict
from cai_judge_client.types import Label, LabelResult, PairError, PairInput, parse_result

__all__ = ["ExportSummary", "reward_rows", "to_reward_dataset"]

PARQUET_BATCH_ROWS = 10_000

LabelsSource = Iterable[LabelResult | dict[str, Any]] | str | os.PathLike[str]
PairsSource = Iterable[PairInput] | str | os.PathLike[str]


@dataclass
class ExportSummary:
    rows: int = 0
    ties: int = 0
    errors: int = 0
    path: Path | None = None


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _labels(source: LabelsSource) -> Iterator[LabelResult]:
    items: Iterable[Any] = (
        _read_jsonl(Path(source)) if isinstance(source, str | os.PathLike) else source
    )
    for item in items:
        yield parse_result(item) if isinstance(item, dict) else item


def _pairs_by_id(source: PairsSource) -> dict[str, dict[str, Any]]:
    items: Iterable[Any] = (
        _read_jsonl(Path(source)) if isinstance(source, str | os.PathLike) else source
    )
    return {str(pair["id"]): pair for pair in map(as_dict, items)}


def reward_rows(
    labels: LabelsSource,
    pairs: PairsSource,
    *,
    include_ties: bool = False,
    summary: ExportSummary | None = None,
) -> Iterator[dict[str, Any]]:
    """The rows, one per labeled pair (see the module docstring for each column)."""
    summary = summary if summary is not None else ExportSummary()
    by_id = _pairs_by_id(pairs)
    for result in _labels(labels):
        if isinstance(result, PairError):
            summary.errors += 1
            continue
        assert isinstance(result, Label)
        if result.preferred == "tie" and not include_ties:
            summary.ties += 1
            continue
        pair = by_id.get(result.id)
        if pair is None:
            raise KeyError(
                f"label {result.id!r} has no pair with that id: pass the pairs that were labeled"
            )
        a_wins = result.preferred != "b"
        chosen, rejected = (
            (pair["response_a"], pair["response_b"])
            if a_wins
            else (pair["response_b"], pair["response_a"])
        )
        summary.rows += 1
        yield {
            "id": result.id,
            "prompt": _messages(pair["prompt"]),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "margin": abs(result.margin),
            "p_chosen": result.p_a if a_wins else 1.0 - result.p_a,
        }


def _messages(prompt: Any) -> list[dict[str, str]]:
    """One prompt form: chat messages (a string is the user's one turn)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def to_reward_dataset(
    labels: LabelsSource,
    pairs: PairsSource,
    path: str | os.PathLike[str] | None = None,
    *,
    include_ties: bool = False,
) -> Any:
    """Write the rows to `path` (`.jsonl`, or `.parquet` with pyarrow) and return an
    `ExportSummary`; without `path`, return a `datasets.Dataset` (needs `datasets`).

    `labels` and `pairs` are iterables or JSONL files (e.g. `label_dataset`'s output and
    its input); they are matched by pair id.
    """
    summary = ExportSummary()
    rows = reward_rows(labels, pairs, include_ties=include_ties, summary=summary)
    if path is None:
        try:
            import datasets
        except ImportError:
            raise ImportError(
                "a datasets.Dataset needs `datasets`: pip install 'cai-judge-client[datasets]', "
                "or pass a path to write JSONL or Parquet"
            ) from None
        return datasets.Dataset.from_list(list(rows))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".parquet":
        _write_parquet(rows, target)
    elif target.suffix in (".jsonl", ".json"):
        with target.open("w", encoding="utf-8") as sink:
            for row in rows:
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        raise ValueError(f"{target}: use a .jsonl or .parquet file name")
    summary.path = target
    return summary


def _write_parquet(rows: Iterator[dict[str, Any]], target: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            "Parquet needs pyarrow: pip install 'cai-judge-client[parquet]', or write .jsonl"
        ) from None
    writer = None
    batch: list[dict[str, Any]] = []
    try:
        for row in rows:
            batch.append(row)
            if len(batch) == PARQUET_BATCH_ROWS:
                writer = _write_batch(pa, pq, writer, batch, target)
                batch = []
        if batch or writer is None:
            writer = _write_batch(pa, pq, writer, batch, target)
    finally:
        if writer is not None:
            writer.close()


def _write_batch(pa: Any, pq: Any, writer: Any, batch: list[dict[str, Any]], target: Path) -> Any:
    table = pa.Table.from_pylist(batch, schema=writer.schema if writer is not None else None)
    if writer is None:
        writer = pq.ParquetWriter(target, table.schema)
    writer.write_table(table)
    return writer
