"""A real `cai-judge serve` in a subprocess on a free loopback port: the one way tests and
benchmarks (bench/) start the service, wait for it to be ready, and stop it.

DESIGN.md §6 (the edges): what is under test is the whole process, its signals and its
exit status, so it is spawned, never imported. It runs in its own process group, so
stopping it takes its engine core along; start-up waits on /health/ready, failing at once,
with the log's tail, if the process exits first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from cai_judge.testing.ports import free_port

STARTUP_TIMEOUT_S = 240.0


class ServiceProcess:
    """`cai-judge serve` as a child process; a context manager that stops it on exit.

    `settings` are the service's settings by field name (`max_model_len="1024"` becomes
    `CAI_JUDGE_MAX_MODEL_LEN`); `env` adds raw environment variables. The HTTP port is
    picked here unless one of them sets it.
    """

    def __init__(
        self,
        *,
        settings: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        environment = {
            **os.environ,
            **{f"CAI_JUDGE_{k.upper()}": v for k, v in (settings or {}).items()},
            **(env or {}),
        }
        environment.setdefault("CAI_JUDGE_PORT", str(free_port()))
        self.port = int(environment["CAI_JUDGE_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._environment = environment
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self._process is not None, "start() the service first"
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> ServiceProcess:
        """Spawn it and wait until /health/ready answers 200."""
        return self.spawn().wait_ready(timeout_s)

    def spawn(self) -> ServiceProcess:
        """Start the process without waiting for it: several replicas then start side by
        side (a start is mostly imports, one core each), and wait_ready() each."""
        output = self.log.open("wb") if self.log is not None else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [sys.executable, "-m", "cai_judge.cli.main", "serve"],
            env=self._environment, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group, so the engine's children go with it
        )  # fmt: skip
        return self

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> ServiceProcess:
        """Wait until /health/ready answers 200; killed if it does not within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited during start-up: {self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return self
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"service not ready in {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text()[-chars:] if self.log is not None else "(no log kept)"

    def metric(self, name: str) -> float:
        """The sum of the /metrics samples whose line starts with `name` (labels included)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def rss(self, *, children: bool = True) -> int:
        """Resident memory of the service, with its engine processes unless told not to."""
        parent = psutil.Process(self.pid)
        family = [parent, *parent.children(recursive=True)] if children else [parent]
        return sum(p.memory_info().rss for p in family)

    def stop(self, sig: signal.Signals = signal.SIGINT, wait_s: float = 30) -> None:
        """Ask it to stop (`sig`), wait up to `wait_s`, then SIGKILL what is left of the group
        (an engine core whose parent died)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=wait_s)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group: a crash, not a shutdown."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=30)

    def __enter__(self) -> ServiceProcess:
        return self if self._process is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_server(model_dir: Path, log: Path, **settings: str) -> ServiceProcess:
    """The tests' service: `model_dir` with a 1024-token context and a 1 GiB KV cache, plus
    `settings` by field name. Ready when it returns."""
    return start_servers(model_dir, [log], **settings)[0]


def start_servers(model_dir: Path, logs: Sequence[Path], **settings: str) -> list[ServiceProcess]:
    """One service per log, as start_server makes it, started side by side: all ready when
    it returns, or all stopped when one fails."""
    servers = [
        ServiceProcess(
            settings={"model": str(model_dir), "max_model_len": "1024", **settings},
            env={"VLLM_CPU_KVCACHE_SPACE": "1"},
            log=log,
        )
        for log in logs
    ]
    try:
        for server in servers:
            server.spawn()
        return [server.wait_ready() for server in servers]
    except BaseException:
        for server in servers:
            server.stop()  # a server never spawned has nothing to stop
        raise


def stop(server: ServiceProcess) -> None:
    server.stop()
