"""Re-exports cai_judge/testing/vllm_server.py, where the benchmarks import it from too (a
benchmark never imports tests/), so the tests' imports from here keep working."""

from cai_judge.testing.vllm_server import STARTUP_TIMEOUT_S, VllmServer, launch, wait_ready

__all__ = [
    "STARTUP_TIMEOUT_S",
    "VllmServer",
    "launch",
    "wait_ready",
]
