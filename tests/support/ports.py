"""Re-exports cai_judge/testing/ports.py, where the benchmarks import it from too (a
benchmark never imports tests/), so the tests' imports from here keep working."""

from cai_judge.testing.ports import free_port

__all__ = [
    "free_port",
]
