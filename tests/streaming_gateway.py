"""A live gateway for the streaming tests: the shared launcher in ``tests.gateway_process``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.gateway_process import run_gateway


@contextmanager
def stream_gateway(triton_url: str, log_dir: Path, **env: str) -> Iterator[str]:
    """Yields the base URL (``http://127.0.0.1:PORT``); ``/v1/stream`` and ``/live`` are on it.

    Admission by turn-decoding capacity is off unless a test sets it: these tests send several streams at
    once, faster than real time, on a machine shared with the test run, and test what a stream gets, not
    when the gateway refuses one (``tests/unit/test_streaming.py`` does)."""
    env.setdefault("GATEWAY_STREAM_FINAL_CAPACITY", "1000")
    with run_gateway(triton_url, log_dir, **env) as url:
        yield url
