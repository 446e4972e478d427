"""The gateway process and the ``Supervisor``: keeps tritonserver (and the gateway) running, restarts a
child that dies, and stops everything on Ctrl-C (SIGINT) or SIGTERM, each child's process group as a whole."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from launcher.processes import Child, http_status
from launcher.settings import LaunchSettings
from launcher.triton import TritonServer


def gateway_address(environ: Mapping[str, str]) -> tuple[str, int]:
    """The gateway's host and port: its own settings (``GATEWAY_HOST``, ``GATEWAY_PORT``), as ``environ`` sets them."""
    from gateway.config import Settings

    given = {name: environ[f"GATEWAY_{name.upper()}"] for name in ("host", "port") if f"GATEWAY_{name.upper()}" in environ}
    settings = Settings(**given)
    return settings.host, settings.port


def gateway_child(grpc_port: int, log_path: Path | None = None, *, base_env: Mapping[str, str] | None = None,
                  **env: str) -> Child:
    """The gateway in front of the Triton on ``grpc_port``. Its host, port and everything else are its own
    ``GATEWAY_*`` settings, from ``base_env`` (this process's environment by default) and ``env``."""
    environ = dict(os.environ if base_env is None else base_env)
    environ.setdefault("GATEWAY_TRITON_URL", f"127.0.0.1:{grpc_port}")
    environ.update(env)
    host, port = gateway_address(environ)
    argv = [sys.executable, "-m", "uvicorn", "gateway.main:create_app", "--factory", "--host", host,
            "--port", str(port), "--log-level", "warning"]
    return Child("gateway", argv, environ, log_path)


def gateway_port() -> int:
    """Where the gateway listens: its own setting (``GATEWAY_PORT``)."""
    return gateway_address(os.environ)[1]


class Supervisor:
    """Keeps tritonserver (and the gateway) running; restarts a child that dies; stops all on a signal."""

    def __init__(self, settings: LaunchSettings, with_gateway: bool):
        self.settings, self.with_gateway = settings, with_gateway
        self.stopping = False
        self.restarts = 0
        self.expected_stubs: int | None = None  # stub processes once ready; fewer later = an instance died
        self.triton = self._new_triton()
        self.gateway = gateway_child(settings.grpc_port) if with_gateway else None

    def _new_triton(self) -> TritonServer:
        s = self.settings
        return TritonServer(s.repository, s.http_port, s.grpc_port, s.metrics_port, s.models, s.build_dir)

    def _on_signal(self, signum, _frame) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        s = self.settings
        started = time.monotonic()
        print(f"starting tritonserver (models: {', '.join(s.models)}) ...", flush=True)
        self.triton.start()
        try:
            while not self.stopping and not self.triton.ready():
                if not self.triton.alive():
                    print("tritonserver exited during start-up; see the log above", file=sys.stderr)
                    return 1
                if time.monotonic() - started > s.ready_timeout_s:
                    print("tritonserver did not become ready in time", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            if self.stopping:
                return 0
            port = gateway_port()
            if self.gateway:
                self.gateway.start()
                while not self.stopping and http_status(f"http://127.0.0.1:{port}/health") == 0:
                    if not self.gateway.alive():
                        print("the gateway exited during start-up", file=sys.stderr)
                        return 1
                    time.sleep(0.3)
            print(f"\nready in {time.monotonic() - started:.1f} s", flush=True)
            print(f"  Triton HTTP     http://localhost:{s.http_port}/v2/health/ready")
            print(f"  Triton gRPC     localhost:{s.grpc_port}")
            print(f"  Triton metrics  http://localhost:{s.metrics_port}/metrics")
            if self.gateway:
                print(f"  Gateway         http://localhost:{port}/  (API: /v1/audio/transcriptions, docs: /docs)")
            print("Press Ctrl-C to stop.", flush=True)
            self._watch()
            return 0
        finally:
            print("stopping ...", flush=True)
            if self.gateway:
                self.gateway.stop(10)
            self.triton.stop(30)
            print("stopped.", flush=True)

    def _watch(self) -> None:
        backoff = 1.0
        while not self.stopping:
            time.sleep(0.5)
            if not self.triton.alive() and not self.stopping:
                self.restarts += 1
                code = self.triton.process.returncode if self.triton.process else None
                print(f"tritonserver exited (code {code}); restart #{self.restarts} in {backoff:.0f} s", file=sys.stderr, flush=True)
                self.triton.stop(1)  # reap what is left of its process group (stubs)
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                self.triton = self._new_triton()
                self.expected_stubs = None
                self.triton.start()
            elif self.triton.ready():
                backoff = 1.0
                self._check_stubs()
            if self.gateway and not self.gateway.alive() and not self.stopping:
                print("gateway exited; restarting", file=sys.stderr, flush=True)
                self.gateway = gateway_child(self.settings.grpc_port)
                self.gateway.start()

    def _check_stubs(self) -> None:
        """A model instance whose stub process died fails every batch sent to it while Triton still reports
        ready, and Triton 2.51 does not restart the stub. So a missing stub restarts tritonserver."""
        stubs = len(self.triton.stub_pids())
        if self.expected_stubs is None:
            self.expected_stubs = stubs
            print(f"watching {stubs} model instance stubs", flush=True)
        elif stubs < self.expected_stubs:
            print(f"a model instance's backend stub died ({stubs} of {self.expected_stubs} left); restarting tritonserver",
                  file=sys.stderr, flush=True)
            self.triton.stop(10)  # the loop sees it gone and restarts it
