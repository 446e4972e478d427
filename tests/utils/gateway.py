"""The one launcher of live gateway processes for tests: ``make serve``'s own gateway process
(``launcher.supervisor.gateway_child``) on a free port, in its own process group, pointed at a Triton.

``run_gateway(...)`` yields its base URL; ``GatewayProcess`` is the same process for tests that stop it,
``kill -9`` it and start another on the same jobs directory.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from launcher.processes import Child
from launcher.supervisor import gateway_child
from tests.utils.helpers import free_port, wait_until


class GatewayProcess:
    """A gateway on a free port of 127.0.0.1 (``GATEWAY_HOST``/``GATEWAY_PORT``), its log in ``log_dir``."""

    def __init__(self, triton_url: str, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"gateway-{self.port}.log"
        # No test inference from an idle gateway: tests that count Triton's requests share the session's
        # Triton with gateways that sit idle meanwhile (the watchdog still checks readiness).
        inherited = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "ACCESS_TOKEN")}
        settings = {"GATEWAY_TRITON_URL": triton_url, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(self.port),
                    "GATEWAY_JOBS_DIR": str(log_dir / f"jobs-{self.port}"), "GATEWAY_WATCHDOG_PROBE_IDLE_S": "0", **env}
        # info: tests read the gateway's own log lines (a client gone mid-request is one 499 line)
        self.child: Child = gateway_child(0, self.log_path, base_env=inherited, log_level="info", **settings)
        self.child.start()

    @property
    def proc(self):
        return self.child.process

    def wait_ready(self, timeout: float = 60.0) -> "GatewayProcess":
        def answering() -> bool:
            if not self.child.alive():
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/openapi.json", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answering, timeout, f"the gateway on port {self.port} to answer:\n{self.log()}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run, as in a crash."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=15)

    def stop(self) -> None:
        self.child.stop(15)

    def __enter__(self) -> "GatewayProcess":
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayURL(str):
    """A gateway's base URL, with the PID of the process serving it (tests that watch its memory)."""

    pid: int


@contextmanager
def run_gateway(triton_url: str, log_dir: Path, **env: str) -> Iterator[GatewayURL]:
    """A ``GatewayProcess``, ready; yields its base URL (with its ``pid``) and stops it."""
    with GatewayProcess(triton_url, log_dir, **env) as gateway:
        url = GatewayURL(gateway.url)
        url.pid = gateway.proc.pid
        yield url
