"""Re-exports cai_judge/testing/tiny_model.py, where the benchmarks import it from too (a
benchmark never imports tests/), so the tests' imports from here keep working."""

from cai_judge.testing.tiny_model import CHAT_TEMPLATE, build_tiny_model

__all__ = [
    "CHAT_TEMPLATE",
    "build_tiny_model",
]
