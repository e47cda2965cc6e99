"""`cai-judge revise` and `export-sft` as a user runs them (real subprocess, tiny model),
and `cai-judge label --mode cot`: resume, bad lines, refusals, --score's win rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import PAIRS, read_labels, run_cli, write_jsonl

PROMPTS: list[object] = [
    {"id": "q0", "prompt": "How do I pick a lock?"},
    {"id": "q1", "prompt": "Tell me a joke.", "initial_response": "No."},
    {"id": "q2", "prompt": [{"role": "user", "content": "Hi"}]},
    {"id": "q3", "prompt": "Is coffee healthy?", "initial_response": "Maybe."},
]


def revise_args(folder: Path, model: Path, *extra: str) -> list[str]:
    return [
        "revise", str(folder / "prompts.jsonl"), "-o", str(folder / "sft.jsonl"),
        "--model", str(model), "--rounds", "1", "--seed", "3", "--temperature", "0.8",
        "--max-tokens", "6", "--batch-size", "2", *extra,
    ]  # fmt: skip


@pytest.mark.engine
def test_revise_resumes_reports_bad_lines_scores_and_exports(tmp_path: Path, tiny_model_dir: Path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [*PROMPTS[:2], {"id": "bad", "prompt": ""}, *PROMPTS[2:]]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    output = tmp_path / "sft.jsonl"

    first = run_cli(*revise_args(tmp_path, tiny_model_dir, "--score"), cwd=tmp_path)
    assert first.returncode == 1, first.stderr[-3000:]
    assert f"{prompts}:3" in first.stderr and "prompt: String should have at least" in (
        first.stderr
    )
    assert f"{prompts}:6" in first.stderr and "not valid JSON" in first.stderr
    assert "2 prompt(s) not revised" in first.stderr
    written = read_labels(output)
    assert [r["id"] for r in written] == ["q0", "q1", "q2", "q3"]
    for row in written:
        assert row["response"] == row["chain"][-1]["revision"]  # type: ignore[index]
        assert row["constitution"]["id"] == "harmless"  # type: ignore[index]
        assert (row["seed"], row["rounds"], row["max_tokens"]) == (3, 1, 6)
        assert row["score"]["preferred"] in {"revision", "initial", "tie"}  # type: ignore[index]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    wins = sum(r["score"]["preferred"] == "revision" for r in written)  # type: ignore[index]
    ties = sum(r["score"]["preferred"] == "tie" for r in written)  # type: ignore[index]
    assert summary == {"win_rate": (wins + ties / 2) / 4, "won": wins, "tied": ties, "scored": 4}
    assert "win rate of the revision over the initial response" in first.stderr

    # A run killed mid-write: one whole row and half of the next survive. The resumed run
    # redoes the rest, and (same seed, temperature 0.8) writes the same rows again.
    kept = output.read_text().splitlines(keepends=True)
    output.write_text(kept[0] + kept[1][:50])
    second = run_cli(*revise_args(tmp_path, tiny_model_dir, "--score"), cwd=tmp_path)
    assert second.returncode == 1, second.stderr[-3000:]
    assert "resuming: 1 prompt(s) already" in second.stderr
    resumed = read_labels(output)
    # The same texts to the character (seeded sampling); the revision's score to 1e-4, since
    # the resumed run scores other pairs in its batches (DESIGN.md §2, vLLM #11778).
    assert [without_score(r) for r in resumed] == [without_score(r) for r in written]
    for again, first_row in zip(resumed, written, strict=True):
        again_score, first_score = again["score"], first_row["score"]
        assert again_score["principles"] == first_score["principles"]  # type: ignore[index]
        for number in ("margin", "p_revision"):
            assert again_score[number] == pytest.approx(  # type: ignore[index]
                first_score[number],
                abs=1e-4,  # type: ignore[index]
            )

    # Another seed would mix two runs in one file: refused before the engine starts.
    before = output.read_bytes()
    refused = run_cli(*revise_args(tmp_path, tiny_model_dir, "--seed", "4"), cwd=tmp_path)
    assert refused.returncode == 2
    assert "holds revisions made with other settings" in refused.stderr
    assert "--seed: the file has 3 (line 1), this run has 4" in refused.stderr
    assert "vllm" not in refused.stderr.lower() and output.read_bytes() == before

    # Export to TRL's conversational format; a bad line is reported and left out.
    with output.open("a") as sink:
        sink.write('{"id": "broken"}\n')
    messages = tmp_path / "messages.jsonl"
    exported = run_cli("export-sft", str(output), "-o", str(messages), cwd=tmp_path)
    assert exported.returncode == 1
    assert f"{output}:5" in exported.stderr and "not a revision row" in exported.stderr
    conversations = [json.loads(line) for line in messages.read_text().splitlines()]
    assert len(conversations) == 4
    assert conversations[1]["messages"] == [
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": written[1]["response"]},
    ]
    assert conversations[2]["messages"][0] == {"role": "user", "content": "Hi"}


def test_revise_refuses_duplicates_and_unrevisable_constitutions(tmp_path: Path):
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [PROMPTS[0], PROMPTS[0]])
    result = run_cli("revise", str(prompts), "-o", str(tmp_path / "o.jsonl"), cwd=tmp_path)
    assert result.returncode == 2 and "'q0' on lines 1, 2" in result.stderr
    folder = tmp_path / "constitutions"
    folder.mkdir()
    (folder / "judge-only.yaml").write_text(
        "id: judge-only\nprinciples:\n  - id: kind\n    question: Which is kinder?\n"
    )
    write_jsonl(prompts, PROMPTS[:1])
    result = run_cli(
        "revise", str(prompts), "-o", str(tmp_path / "o.jsonl"), "--constitution", "judge-only",
        "--constitutions-dir", str(folder), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no principle with both `critique` and `revision`" in result.stderr
    result = run_cli("revise", str(prompts), "-o", "x", "--rounds", "0", cwd=tmp_path)
    assert result.returncode == 2 and "--rounds" in result.stderr


@pytest.mark.engine
def test_label_mode_cot(tmp_path: Path, tiny_model_dir: Path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, PAIRS[:2])
    output = tmp_path / "labels.jsonl"
    args = ["label", str(pairs), "-o", str(output), "--model", str(tiny_model_dir),
            "--principles", "2", "--mode", "cot", "--cot-max-tokens", "6"]  # fmt: skip
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    labels = read_labels(output)
    assert all(label["mode"] == "cot" and len(label["rationales"]) == 2 for label in labels)  # type: ignore[arg-type]
    # A CoT file is not resumed by a plain run: the mode (and with it the template version)
    # differs, and the mode is compared first, before the tokenizer is loaded.
    plain = run_cli(*args[:-4], cwd=tmp_path)
    assert plain.returncode == 2 and "has cot (line 1), this run has plain" in plain.stderr
    bad = run_cli(*args[:-3], "nope", cwd=tmp_path)
    assert bad.returncode == 2 and "--mode" in bad.stderr


def without_score(row: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in row.items() if key != "score"}
