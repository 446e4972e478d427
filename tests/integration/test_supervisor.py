"""`make serve`'s supervisor: Ctrl-C leaves no orphans; a killed, stopped (SIGSTOP) tritonserver or a killed
model-instance stub is restarted; Triton listens on 127.0.0.1 only, with no model control."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.helpers import ROOT, free_port

pytestmark = pytest.mark.integration


def _ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status == 200
    except OSError:
        return False


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _wait(predicate, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.2)
    raise TimeoutError


@pytest.fixture
def supervisor(tmp_path):
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = dict(os.environ, TRITON_HTTP_PORT=str(http), TRITON_GRPC_PORT=str(grpc), TRITON_METRICS_PORT=str(metrics),
               WHISPER_MODELS="whisper-tiny-en", WHISPER_TRITON_BUILD=str(ROOT / "build"), TRITON_STUCK_S="3")
    for name in ("TRITON_BIND_ADDRESS", "TRITON_MODEL_CONTROL"):  # make serve's defaults
        env.pop(name, None)
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "whisper_triton.server", "triton"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # Ready once the supervisor itself says so (a crash before that is a start-up failure, not restarted).
        _wait(lambda: _ready(http) and b"ready in" in (tmp_path / "serve.log").read_bytes(), 300)
        yield proc, http, grpc, metrics
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        log.close()


def test_sigint_stops_everything(supervisor):
    proc, http, _, _ = supervisor
    assert _pids(f"--http-port={http}")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    assert not _ready(http)
    assert _pids(f"--http-port={http}") == []
    # The backend stubs are children of tritonserver; none may outlive it.
    stubs = [p for p in _pids("triton_python_backend_stub") if os.getppid() != p]
    for pid in stubs:
        with open(f"/proc/{pid}/status") as fh:
            assert "PPid:\t1\n" not in fh.read(), f"orphaned backend stub {pid}"


def test_killed_triton_is_restarted(supervisor):
    from client import WhisperTritonClient

    _, http, grpc, _ = supervisor
    [pid] = _pids(f"tritonserver.*--http-port={http}")
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: not _ready(http), 10)
    recovery = _wait(lambda: _ready(http), 120)
    print(f"tritonserver recovered {recovery:.1f} s after kill -9")
    assert _pids(f"tritonserver.*--http-port={http}") != [pid]
    with WhisperTritonClient(f"127.0.0.1:{grpc}", model="whisper-tiny-en") as c:
        assert c.transcribe(np.zeros(16000, dtype=np.float32)).text == ""


def test_killed_model_instance_stub_restarts_triton(supervisor, tmp_path):
    """Triton 2.51 keeps reporting ready with a dead instance stub (its batches fail); the supervisor notices."""
    from client import WhisperTritonClient

    _, http, grpc, _ = supervisor
    [triton_pid] = _pids(f"tritonserver.*--http-port={http}")
    stubs = [p for p in _pids("triton_python_backend_stub") if _ppid(p) == triton_pid]
    assert stubs, "no backend stub under tritonserver"
    time.sleep(1.5)  # the supervisor counts the stubs once ready
    os.kill(stubs[0], signal.SIGKILL)
    _wait(lambda: _pids(f"tritonserver.*--http-port={http}") not in ([triton_pid], []), 30)
    recovery = _wait(lambda: _ready(http), 120)
    print(f"tritonserver restarted and ready {recovery:.1f} s after a stub was killed")
    with WhisperTritonClient(f"127.0.0.1:{grpc}", model="whisper-tiny-en") as c:
        assert c.transcribe(np.zeros(16000, dtype=np.float32)).text == ""
    assert b"backend stub died" in (tmp_path / "serve.log").read_bytes()


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def test_a_stopped_triton_is_killed_and_restarted(supervisor, tmp_path):
    """SIGSTOP: alive, not answering. The supervisor used to restart only a tritonserver that had exited."""
    from client import WhisperTritonClient

    _, http, grpc, _ = supervisor
    [pid] = _pids(f"tritonserver.*--http-port={http}")
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        _wait(lambda: _pids(f"tritonserver.*--http-port={http}") not in ([pid], []), 30)
        recovery = _wait(lambda: _ready(http), 120)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass  # killed by the supervisor, as it should be
    print(f"stopped tritonserver replaced and ready {time.monotonic() - stopped:.1f} s after SIGSTOP "
          f"(ready {recovery:.1f} s after its restart)")
    with WhisperTritonClient(f"127.0.0.1:{grpc}", model="whisper-tiny-en") as c:
        assert c.transcribe(np.zeros(16000, dtype=np.float32)).text == ""
    assert b"has not answered /v2/health/live" in (tmp_path / "serve.log").read_bytes()


def _listening(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in list(fh)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def test_triton_listens_on_loopback_and_cannot_be_unloaded(supervisor):
    """make serve used to bind 8000/8001/8002 to 0.0.0.0 with explicit model control: anyone who reached port
    8000 could POST /v2/repository/models/whisper/unload and take the service down."""
    _, http, grpc, metrics = supervisor
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    for port in (http, grpc, metrics):
        addresses = _listening(port)
        assert addresses and addresses <= loopback, f"port {port} listens on {addresses}"
    request = urllib.request.Request(f"http://127.0.0.1:{http}/v2/repository/models/whisper-tiny-en/unload",
                                     data=b"{}", method="POST")
    try:
        status = urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status != 200
    time.sleep(0.5)
    assert urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/whisper-tiny-en/ready", timeout=5).status == 200
