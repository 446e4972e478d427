"""Live gateways: the real app under uvicorn in a subprocess, pointed at the session's real Triton."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.utils.gateway import run_gateway as launch_gateway
from tests.utils.helpers import free_port

TOKEN = "test-token-5f2c"
UPLOAD_LIMIT_MB = 8  # above every test clip; the over-size test sends more


@contextmanager
def run_gateway(triton_url: str, log_dir: Path, **env: str) -> Iterator[str]:
    """The shared gateway launcher, with the small upload limit the over-size test relies on."""
    with launch_gateway(triton_url, log_dir, **{"GATEWAY_MAX_UPLOAD_MB": str(UPLOAD_LIMIT_MB), **env}) as url:
        yield url


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
