"""Live gateways: the real app under uvicorn in a subprocess, pointed at the session's real Triton."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, free_port

TOKEN = "test-token-5f2c"
UPLOAD_LIMIT_MB = 8  # above every test clip; the over-size test sends more


@contextmanager
def run_gateway(triton_url: str, log_dir: Path, **env: str) -> Iterator[str]:
    """``uvicorn gateway.main:create_app --factory`` on a free port; yields its base URL."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "ACCESS_TOKEN")}
    environ.update({"GATEWAY_TRITON_URL": triton_url, "GATEWAY_MAX_UPLOAD_MB": str(UPLOAD_LIMIT_MB), **env})
    log_path = log_dir / f"gateway-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "gateway.main:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start in 60 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def gateway(triton, tmp_path_factory) -> Iterator[str]:
    """The gateway with default settings (no auth), in front of the real Triton."""
    with run_gateway(triton.grpc_url, tmp_path_factory.mktemp("gateway")) as url:
        yield url


@pytest.fixture(scope="session")
def gateway_with_token(triton, tmp_path_factory) -> Iterator[str]:
    """The gateway with ``API_KEY`` set (``/health`` and ``/metrics`` left open, the default)."""
    with run_gateway(triton.grpc_url, tmp_path_factory.mktemp("gateway-auth"), API_KEY=TOKEN) as url:
        yield url


@pytest.fixture(scope="session")
def gateway_without_triton(tmp_path_factory) -> Iterator[str]:
    """A gateway whose Triton address has nothing listening (Triton down)."""
    with run_gateway(f"127.0.0.1:{free_port()}", tmp_path_factory.mktemp("gateway-down"),
                     GATEWAY_TRITON_TIMEOUT_S="5", GATEWAY_HEALTH_TIMEOUT_S="1") as url:
        yield url


@pytest.fixture(scope="session")
def http(gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=120) as client:
        yield client
