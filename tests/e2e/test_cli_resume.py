"""Resuming a label file made with other settings is refused before any labeling.

One engine run writes a small label file; every other run here is refused before the
engine would start, so the module costs one engine start.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import PAIRS, read_labels, run_cli, write_jsonl
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.engine

BUILTIN_HARMLESS = REPO_ROOT / "service/cai_judge/constitutions/harmless.yaml"
FIRST_QUESTION = "Which of these assistant responses does less harm overall?"


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A folder with pairs.jsonl and labels.jsonl, labeled by the tiny model."""
    folder = tmp_path_factory.mktemp("labeled")
    write_jsonl(folder / "pairs.jsonl", PAIRS[:3])
    result = run_cli(*label_args(folder, tiny_model_dir), cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_labels(folder / "labels.jsonl")) == 3
    return folder


def label_args(folder: Path, model: Path | str, *extra: str) -> list[str]:
    return [
        "label", str(folder / "pairs.jsonl"), "-o", str(folder / "labels.jsonl"),
        "--model", str(model), "--principles", "2", "--seed", "0", *extra,
    ]  # fmt: skip


def copy_of(labeled: Path, tmp_path: Path) -> Path:
    """The labeled folder with one pair more: a run that is not refused labels it."""
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:4])
    shutil.copy(labeled / "labels.jsonl", tmp_path / "labels.jsonl")
    return tmp_path


def edit_labels(folder: Path, **fields: object) -> None:
    labels = read_labels(folder / "labels.jsonl")
    for label in labels:
        for name, value in fields.items():
            if value is None:
                label.pop(name, None)
            else:
                label[name] = value
    write_jsonl(folder / "labels.jsonl", labels)


def assert_refused(
    result: subprocess.CompletedProcess[str], folder: Path, before: bytes, *expected: str
) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "holds labels made with other settings" in result.stderr
    assert "another output file" in result.stderr
    for text in expected:
        assert text in result.stderr, (text, result.stderr[-3000:])
    # Refused before the engine started, and the file is left exactly as it was.
    assert "vllm" not in (result.stdout + result.stderr).lower()
    assert (folder / "labels.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--seed", "1"], ["--seed: the file has 0 (line 1), this run has 1"]),
        (
            ["--aggregator", "mean_prob"],
            ["--aggregator: the file has mean_logodds (line 1), this run has mean_prob"],
        ),
        (["--principles", "all"], ["--principles: the file has 2 (line 1), this run has all"]),
        # Two at once are both named.
        (["--principles", "3", "--seed", "5"], ["--principles:", "--seed:"]),
    ],
)
def test_resume_with_other_options_is_refused(
    labeled: Path, tmp_path: Path, tiny_model_dir: Path, extra: list[str], expected: list[str]
):
    folder = copy_of(labeled, tmp_path)
    # A half-written last line is kept too: a refused run changes nothing.
    with (folder / "labels.jsonl").open("a") as handle:
        handle.write('{"id": "p9", "pre')
    before = (folder / "labels.jsonl").read_bytes()
    result = run_cli(*label_args(folder, tiny_model_dir), *extra, cwd=folder)
    assert_refused(result, folder, before, *expected)


def test_resume_with_another_constitution_version_is_refused(
    labeled: Path, tmp_path: Path, tiny_model_dir: Path
):
    folder = copy_of(labeled, tmp_path)
    edited = tmp_path / "constitutions"
    edited.mkdir()
    text = BUILTIN_HARMLESS.read_text()
    assert FIRST_QUESTION in text
    (edited / "harmless.yaml").write_text(text.replace(FIRST_QUESTION, "Which does less harm?"))
    constitution = read_labels(folder / "labels.jsonl")[0]["constitution"]
    assert isinstance(constitution, dict)
    file_version = str(constitution["version"])
    before = (folder / "labels.jsonl").read_bytes()
    result = run_cli(
        *label_args(folder, tiny_model_dir), "--constitutions-dir", str(edited), cwd=folder
    )
    assert_refused(
        result, folder, before, f"--constitution: the file has harmless@{file_version[:12]}"
    )


def test_resume_with_another_model_is_refused(labeled: Path, tmp_path: Path, tiny_model_dir: Path):
    folder = copy_of(labeled, tmp_path)
    edit_labels(folder, model="some/other-judge")
    before = (folder / "labels.jsonl").read_bytes()
    result = run_cli(*label_args(folder, tiny_model_dir), cwd=folder)
    assert_refused(
        result, folder, before,
        f"--model: the file has some/other-judge (line 1), this run has {tiny_model_dir}",
    )  # fmt: skip


def test_resume_with_another_template_is_refused(
    labeled: Path, tmp_path: Path, tiny_model_dir: Path
):
    folder = copy_of(labeled, tmp_path)
    template = read_labels(folder / "labels.jsonl")[0]["template"]
    assert isinstance(template, dict)
    edit_labels(folder, template={"id": template["id"], "version": "0123456789abcdef"})
    before = (folder / "labels.jsonl").read_bytes()
    result = run_cli(*label_args(folder, tiny_model_dir), cwd=folder)
    assert_refused(
        result, folder, before,
        "judge template", f"the file has {template['id']}@0123456789ab (line 1)",
        f"this run has {template['id']}@{template['version'][:12]}",
    )  # fmt: skip


def test_resume_of_a_file_without_the_principles_setting_is_refused(
    labeled: Path, tmp_path: Path, tiny_model_dir: Path
):
    # Files from before labels recorded `selection` cannot show they match: refused.
    folder = copy_of(labeled, tmp_path)
    edit_labels(folder, selection=None)
    before = (folder / "labels.jsonl").read_bytes()
    result = run_cli(*label_args(folder, tiny_model_dir), cwd=folder)
    assert_refused(result, folder, before, "--principles: the file has (none) (line 1)")


def test_resume_with_the_same_settings_is_accepted(
    labeled: Path, tmp_path: Path, tiny_model_dir: Path
):
    # The template version found from the tokenizer alone, before the engine starts, is
    # the one the running Judge stamps on the new label.
    folder = copy_of(labeled, tmp_path)
    result = run_cli(*label_args(folder, tiny_model_dir), cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming: 3 pair(s) already" in result.stderr
    labels = read_labels(folder / "labels.jsonl")
    assert [label["id"] for label in labels] == ["p0", "p1", "p2", "p3"]
    assert len({json.dumps(label["template"]) for label in labels}) == 1
