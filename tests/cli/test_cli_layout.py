"""The CLI's shape (DESIGN.md §8): command modules share only `cli/common.py`, and one
helper starts and stops the engine for every command. Pure: a fake engine and judge."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, ClassVar

import pytest
import typer

from cai_judge.cli import common
from cai_judge.engine.default_model import ModelNotReady
from cai_judge.settings import Settings

CLI = Path(common.__file__).parent


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "cai_judge.cli":
            found.update(f"cai_judge.cli.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_command_modules_import_only_common_from_the_cli():
    allowed = {"cai_judge.cli.common", "cai_judge.cli.pairs_file"}
    for path in CLI.glob("*.py"):
        if path.name in {"main.py", "__init__.py", "common.py", "pairs_file.py"}:
            continue
        cli_imports = {m for m in imported_modules(path) if m.startswith("cai_judge.cli.")}
        assert cli_imports <= allowed, f"{path.name} imports {sorted(cli_imports - allowed)}"
    # common and pairs_file are leaves: they import no other CLI module.
    for name in ("common.py", "pairs_file.py"):
        leaks = {m for m in imported_modules(CLI / name) if m.startswith("cai_judge.cli")}
        assert not leaks, f"{name} imports {sorted(leaks)}"


def test_only_common_starts_the_engine():
    for path in CLI.glob("*.py"):
        if path.name != "common.py":
            assert "start_engine" not in path.read_text(), path.name


class FakeEngine:
    def __init__(self) -> None:
        self.shut_down = False

    async def shutdown(self) -> None:
        self.shut_down = True


class FakeJudge:
    instances: ClassVar[list[FakeJudge]] = []

    def __init__(self, engine: FakeEngine, registry: Any, use_chat_template: Any) -> None:
        self.engine = engine
        self.closed = False
        FakeJudge.instances.append(self)

    def close(self) -> None:
        assert not self.engine.shut_down, "the judge closes before its engine"
        self.closed = True


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    engine = FakeEngine()

    async def start_engine(settings: Settings, *, serving: bool) -> FakeEngine:
        assert not serving, "the offline commands run the engine core in-process"
        return engine

    monkeypatch.setattr("cai_judge.engine.factory.start_engine", start_engine)
    monkeypatch.setattr("cai_judge.labeling.judge.Judge", FakeJudge)
    FakeJudge.instances.clear()
    return engine


async def test_engine_session_closes_judge_and_engine_when_the_body_fails(
    fake_engine: FakeEngine,
):
    with pytest.raises(RuntimeError, match="boom"):
        async with common.engine_session(Settings(), None) as judge:  # type: ignore[arg-type]
            assert judge is FakeJudge.instances[0]
            raise RuntimeError("boom")
    assert FakeJudge.instances[0].closed and fake_engine.shut_down


async def test_engine_session_turns_a_model_not_ready_into_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    async def start_engine(settings: Settings, *, serving: bool) -> None:
        raise ModelNotReady("run `cai-judge model prepare` first")

    monkeypatch.setattr("cai_judge.engine.factory.start_engine", start_engine)
    with pytest.raises(typer.Exit) as exit_info:
        async with common.engine_session(Settings(), None):  # type: ignore[arg-type]
            pytest.fail("the body must not run")
    assert exit_info.value.exit_code == 2
