"""Imports point one way (DESIGN.md §8, docs/internals.md "Layout"): the import graph of
service/cai_judge, read with ast (TYPE_CHECKING and function-level imports included), may
only go down the layers below. Transports never import one another: the HTTP app does
not import the gRPC server, both plug into the runtime, and serve.py lists them."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import cai_judge

PACKAGE = Path(cai_judge.__file__).parent

# Lowest first. A package may import its own modules and the packages of lower layers;
# two packages of one layer may not import each other. A new top-level package or
# module gets its layer here (a new transport: beside api and grpc).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"constants"}),
    frozenset({"settings"}),
    frozenset({"store"}),
    frozenset({"engine"}),
    frozenset({"labeling"}),
    frozenset({"sl_cai", "evaluation"}),
    frozenset({"services"}),
    frozenset({"runtime"}),
    frozenset({"api", "grpc", "ray"}),  # transports: the fronts, and Ray's batch path
    frozenset({"serve", "worker"}),  # processes: lists of fronts
    frozenset({"cli"}),
    frozenset(
        {"testing"}
    ),  # process helpers for tests and bench/: nothing in the service imports them
)
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported cai_judge module) for every import statement in the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "cai_judge":
                names = [f"cai_judge.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("cai_judge."):
                yield node.lineno, name


def top(module_path: Path) -> str:
    """The top-level package (or module) a file of service/cai_judge belongs to."""
    return module_path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def edges() -> Iterator[tuple[str, int, str, str]]:
    """(file, line, its top-level package, the imported top-level package)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if "gen" in path.relative_to(PACKAGE).parts:  # generated gRPC stubs
            continue
        source = top(path)
        for line, module in imports(path):
            target = module.split(".")[1]
            if target != source:
                yield str(path.relative_to(PACKAGE)), line, source, target


def test_api_does_not_import_grpc():
    found = [
        f"{file}:{line}" for file, line, source, target in edges()
        if source == "api" and target == "grpc"
    ]  # fmt: skip
    assert not found, f"api/ imports cai_judge.grpc at {found}"


def test_every_top_level_package_has_a_layer():
    names = {top(path) for path in PACKAGE.rglob("*.py")} - {"__init__"}
    names |= {
        path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"
    }
    names -= {"constitutions"}  # data (YAML), no code
    missing = sorted(names - RANK.keys())
    assert not missing, f"give {missing} a layer in LAYERS"


def test_imports_only_go_down_the_layers():
    wrong = [
        f"{file}:{line} ({source} -> {target})"
        for file, line, source, target in edges()
        if RANK.get(target, -1) >= RANK.get(source, -1)
    ]
    assert not wrong, "imports that run up or across a layer:\n" + "\n".join(wrong)


def test_the_checks_see_a_violation(tmp_path: Path):
    """The walker must find imports of each shape, or the tests above pass vacuously."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import cai_judge.grpc.server\n"
        "from cai_judge import grpc\n"
        "if TYPE_CHECKING:\n"
        "    from cai_judge.grpc.server import GrpcServer\n"
        "def later():\n"
        "    from cai_judge.grpc import servicer\n"
    )
    found = [module for _, module in imports(sample)]
    assert found == [
        "cai_judge.grpc.server", "cai_judge.grpc", "cai_judge.grpc.server", "cai_judge.grpc",
    ]  # fmt: skip
