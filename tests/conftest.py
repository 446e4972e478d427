"""Session fixtures: the real tritonserver with the real model_repository/ and real weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.utils.helpers import ROOT, SHARED_AUDIO, free_port, shared_audio_available

MODELS = ["whisper", "whisper-tiny-en", "speaker"]
# Every test is marked by its folder, so `-m "not browser and not deploy"` (or `-m unit`) picks a quick run;
# `make test` runs them all. Browser tests also need the real servers: they are integration tests too.
FOLDER_MARKS = {"unit": ("unit",), "integration": ("integration",), "browser": ("browser", "integration"),
                "deploy": ("deploy",)}


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        for name in FOLDER_MARKS.get(parts[0] if len(parts) > 1 else "", ()):
            item.add_marker(name)


@pytest.fixture(scope="session", autouse=True)
def _jobs_dir_outside_home(tmp_path_factory):
    """Gateways built in tests keep their durable-jobs database in a temporary directory, not in ~."""
    previous = os.environ.get("GATEWAY_JOBS_DIR")
    os.environ["GATEWAY_JOBS_DIR"] = str(tmp_path_factory.mktemp("jobs"))
    yield
    if previous is None:
        os.environ.pop("GATEWAY_JOBS_DIR", None)
    else:
        os.environ["GATEWAY_JOBS_DIR"] = previous


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    """tritonserver from the nvidia-pytriton wheel, serving ``model_repository/`` on free ports."""
    from launcher.triton import TritonServer

    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    server = TritonServer(ROOT / "model_repository", free_port(), free_port(), free_port(), models=MODELS, log_path=log)
    server.start()
    try:
        server.wait_ready(timeout=float(os.environ.get("TRITON_READY_TIMEOUT_S", 600)))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (``tests/postgres.py``); ``postgres.new_database()`` per test."""
    from tests.utils.postgres import start_or_skip

    server = start_or_skip()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    if not shared_audio_available():
        pytest.skip(f"real test speech not found at {SHARED_AUDIO} (set WHISPER_TEST_AUDIO); speech-content tests need it")
    return SHARED_AUDIO


def read_metrics(url: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def model_metric(metrics: dict[str, float], name: str, model: str) -> float:
    return metrics.get(f'{name}{{model="{model}",version="1"}}', 0.0)


@pytest.fixture(scope="session")
def espeak_wav(tmp_path_factory):
    """Synthesise a known sentence with espeak-ng, for machines without ../shared."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (make test installs it with apt-get)")
    path = tmp_path_factory.mktemp("espeak") / "hello.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), "Hello world. The quick brown fox jumps over the lazy dog."], check=True)
    return path
