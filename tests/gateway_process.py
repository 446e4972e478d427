"""A live gateway process (``python -m gateway``: uvicorn with the gateway's server limits) on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.helpers import ROOT, free_port


@contextmanager
def run_gateway(triton_url: str, log_dir: Path, **env: str) -> Iterator[str]:
    """``python -m gateway`` on a free port; yields its base URL."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "ACCESS_TOKEN")}
    # No test inference from an idle gateway: tests that count Triton's requests share the session's Triton
    # with gateways that sit idle meanwhile (the watchdog still checks readiness, and probes under traffic).
    environ.update({"GATEWAY_TRITON_URL": triton_url, "GATEWAY_JOBS_DIR": str(log_dir / f"jobs-{port}"),
                    "GATEWAY_WATCHDOG_PROBE_IDLE_S": "0", **env})
    log_path = log_dir / f"gateway-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port)],
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
