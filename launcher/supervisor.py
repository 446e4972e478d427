"""The gateway process and the ``Supervisor``: keeps tritonserver (and the gateway) running, restarts a
tritonserver that exits, whose model-instance stub dies, or that stops answering (``/v2/health/live``
unanswered for ``TRITON_STUCK_S``: stopped, deadlocked, swapped out), restarts a gateway that exits, and
stops everything on Ctrl-C (SIGINT) or SIGTERM, each child's process group as a whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from launcher.processes import Child, http_status
from launcher.settings import LaunchSettings
from launcher.triton import TritonServer


def gateway_child(grpc_port: int, log_path: Path | None = None, *, base_env: Mapping[str, str] | None = None,
                  log_level: str = "warning", **env: str) -> Child:
    """The gateway in front of the Triton on ``grpc_port``. Its host, port and everything else are its own
    ``GATEWAY_*`` settings, from ``base_env`` (this process's environment by default) and ``env``."""
    environ = dict(os.environ if base_env is None else base_env)
    environ.setdefault("GATEWAY_TRITON_URL", f"127.0.0.1:{grpc_port}")
    environ.update(env)
    return Child("gateway", [sys.executable, "-m", "gateway", "--log-level", log_level], environ, log_path)


def gateway_port() -> int:
    """Where the gateway listens: its own setting (``GATEWAY_PORT``)."""
    from gateway.config import Settings

    return Settings().port


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
        self.last_live = None  # when the new server last answered /v2/health/live (None: not yet)
        return TritonServer(s.repository, s.http_port, s.grpc_port, s.metrics_port, s.models, s.build_dir,
                            bind_address=s.bind_address, model_control=s.model_control == "explicit")

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
            self.last_live = time.monotonic()  # ready answers: from now on, silence means stuck
            port = gateway_port()
            if self.gateway:
                self.gateway.start()
                while not self.stopping and http_status(f"http://127.0.0.1:{port}/health") == 0:
                    if not self.gateway.alive():
                        print("the gateway exited during start-up", file=sys.stderr)
                        return 1
                    time.sleep(0.3)
            print(f"\nready in {time.monotonic() - started:.1f} s", flush=True)
            where = "this machine only" if s.bind_address.startswith("127.") else "OPEN to the network, no authentication"
            print(f"  Triton HTTP     http://{s.bind_address}:{s.http_port}/v2/health/ready  ({where}; model control "
                  f"{'ON' if s.model_control == 'explicit' else 'off'})")
            print(f"  Triton gRPC     {s.bind_address}:{s.grpc_port}")
            print(f"  Triton metrics  http://{s.bind_address}:{s.metrics_port}/metrics")
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
            elif self._stuck():
                print(f"tritonserver (pid {self.triton.pid}) has not answered /v2/health/live for "
                      f"{time.monotonic() - self.last_live:.0f} s; killing it", file=sys.stderr, flush=True)
                self.triton.signal_group(signal.SIGKILL)  # SIGTERM would wait on a stopped process; the loop restarts it
                try:
                    self.triton.process.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            elif self.triton.ready():
                backoff = 1.0
                self._check_stubs()
            if self.gateway and not self.gateway.alive() and not self.stopping:
                print("gateway exited; restarting", file=sys.stderr, flush=True)
                self.gateway = gateway_child(self.settings.grpc_port)
                self.gateway.start()

    def _stuck(self) -> bool:
        """Alive, answered /v2/health/live once, and not since ``stuck_after_s``."""
        if self.triton.live():
            self.last_live = time.monotonic()
            return False
        return self.last_live is not None and time.monotonic() - self.last_live > self.settings.stuck_after_s

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
