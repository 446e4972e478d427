"""A live gateway (``uvicorn gateway.main:create_app --factory``) for the streaming tests, on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import ROOT, free_port


@contextmanager
def stream_gateway(triton_url: str, log_dir: Path, **env: str) -> Iterator[str]:
    """Yields the base URL (``http://127.0.0.1:PORT``); ``/v1/stream`` and ``/live`` are on it."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "ACCESS_TOKEN")}
    environ.update({"GATEWAY_TRITON_URL": triton_url, **env})
    log_path = log_dir / f"stream-gateway-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.main:create_app", "--factory",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if urllib.request.urlopen(f"{url}/live", timeout=2).status == 200:
                    break
            except OSError:
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
