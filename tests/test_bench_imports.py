"""Benchmarks import nothing from tests/ (DESIGN.md §8), and the service nothing from
cai_judge/testing/: the process helpers both need live in cai_judge/testing/, which only
tests and benchmarks import. Read as text, so an import inside a function, or in the code
a benchmark hands to `python -c`, counts too."""

from __future__ import annotations

import re

from tests.support.paths import REPO_ROOT

TEST_TREE = re.compile(r"^\s*(?:from|import)\s+tests\b|[\"'; ]from tests\.", re.MULTILINE)
TESTING = re.compile(r"\bcai_judge\.testing\b|from cai_judge import testing\b")


def test_no_benchmark_imports_the_test_tree() -> None:
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in sorted((REPO_ROOT / "bench").rglob("*.py"))
        if TEST_TREE.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], f"import these from cai_judge.testing instead: {offenders}"


def test_the_service_never_imports_its_test_helpers() -> None:
    package = REPO_ROOT / "service" / "cai_judge"
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in sorted(package.rglob("*.py"))
        if "testing" not in path.relative_to(package).parts[:1]
        and TESTING.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
