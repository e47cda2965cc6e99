"""Re-exports cai_judge/testing/service_process.py, where the benchmarks import it from too (a
benchmark never imports tests/), so the tests' imports from here keep working."""

from cai_judge.testing.ports import free_port
from cai_judge.testing.service_process import STARTUP_TIMEOUT_S, ServiceProcess, start_server, stop

__all__ = [
    "STARTUP_TIMEOUT_S",
    "ServiceProcess",
    "free_port",
    "start_server",
    "stop",
]
