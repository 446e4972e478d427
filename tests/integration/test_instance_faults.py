"""Model-instance fault isolation, end to end with a real tritonserver.

A temporary model repository holds ``whisper-faults``: the real ``whisper-tiny-en`` config (two
instances, a long batching delay, no response cache) and a ``model.py`` that loads the real
``model_repository/whisper/1/model.py`` and plants a bug in its engine: a request whose audio starts
with a magic marker makes ``WhisperEngine.validate`` raise ``RuntimeError`` (not ``InvalidRequest``),
so the engine's *batched* ``transcribe`` raises for every request in the batch.

1. Good and poisoned requests sent together share batches (Triton's exec count < request count);
   every good one still gets its own correct transcript, only the poisoned ones get an error.
2. ``kill -9`` of one instance's ``triton_python_backend_stub`` while requests run: only requests
   in flight at the kill may fail; the model keeps serving, and the killed instance comes back.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from client import WhisperTritonClient
from tests.conftest import model_metric, read_metrics
from tests.helpers import ROOT, audio_of, clip, free_port, wer

pytestmark = pytest.mark.integration

MODEL = "whisper-faults"
MARKER = np.array([0.0123, -0.0456, 0.0789, -0.0321, 0.0654, -0.0987], dtype=np.float32)
GOOD = ["en/LDC93S1.wav", "en/arctic_a0024.wav", "en/1089-134686-0001.wav", "en/LJ002-0035.wav",
        "en/1272-128104-0000.flac", "en/LJ050-0131.wav"]
POISONED = ["en/LJ002-0020.wav", "en/1089-134686-0002.wav"]
READY_TIMEOUT_S = float(os.environ.get("TRITON_READY_TIMEOUT_S", 300))

FAULTY_MODEL_PY = '''
"""The real Whisper model with a planted bug: audio starting with MARKER makes the engine raise."""
import importlib.util
import logging

import numpy as np

_spec = importlib.util.spec_from_file_location("whisper_real_model", {real!r})
_real = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_real)

MARKER = np.array({marker!r}, dtype=np.float32)
log = logging.getLogger("whisper_triton.faults")


class TritonPythonModel(_real.TritonPythonModel):
    def initialize(self, args):
        super().initialize(args)
        validate = self.engine.validate

        def buggy_validate(request):
            audio = request.audio
            if audio.size >= MARKER.size and np.array_equal(audio[:MARKER.size], MARKER):
                raise RuntimeError("planted bug: poisoned audio")
            return validate(request)

        self.engine.validate = buggy_validate

    def execute(self, requests):
        log.info("execute() with %d requests", len(requests))
        return super().execute(requests)
'''


def _faulty_repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    source = ROOT / "model_repository" / "whisper-tiny-en"
    target = repo / MODEL
    (target / "1").mkdir(parents=True)
    shutil.copytree(source / "warmup", target / "warmup")  # follows the symlink: a real copy
    text = (source / "config.pbtxt").read_text()
    edits = [
        (r'(?m)^name: "whisper-tiny-en"', f'name: "{MODEL}"'),
        (r"preferred_batch_size: \[[^\]]*\]", "preferred_batch_size: [ 8 ]"),
        (r"max_queue_delay_microseconds: \d+", "max_queue_delay_microseconds: 1500000"),  # 1.5 s: one batch
        (r"response_cache \{\s*enable: (?:true|false)\s*\}", "response_cache {\n  enable: false\n}"),
        (r"(instance_group \[\s*\{\s*count: )\d+", r"\g<1>2"),
    ]
    for pattern, replacement in edits:
        text, n = re.subn(pattern, replacement, text)
        assert n == 1, f"config.pbtxt of whisper-tiny-en changed shape: {pattern!r} matched {n} times"
    (target / "config.pbtxt").write_text(text)
    real = ROOT / "model_repository" / "whisper" / "1" / "model.py"
    (target / "1" / "model.py").write_text(FAULTY_MODEL_PY.format(real=str(real), marker=MARKER.tolist()))
    return repo


@pytest.fixture(scope="module")
def faulty_triton(tmp_path_factory, shared_audio):
    from whisper_triton.server import TritonServer

    tmp = tmp_path_factory.mktemp("faults")
    server = TritonServer(_faulty_repository(tmp), free_port(), free_port(), free_port(), models=[MODEL],
                          log_path=tmp / "tritonserver.log", model_control=True)  # the reload below needs it
    server.start()
    try:
        server.wait_ready(timeout=READY_TIMEOUT_S)
        yield server
    finally:
        server.stop(5)  # after the stub kill Triton cannot unload cleanly; do not wait its exit timeout


def _poison(audio: np.ndarray) -> np.ndarray:
    out = audio.copy()
    out[:MARKER.size] = MARKER
    return out


def _transcribe(url: str, audio: np.ndarray, timeout_s: float = 120) -> tuple[str, str]:
    """("ok", text) or ("error", message)."""
    try:
        with WhisperTritonClient(url, MODEL, timeout_s=timeout_s) as c:
            return "ok", c.transcribe(audio, language="en").text
    except InferenceServerException as exc:
        return "error", f"{exc.status()}: {exc.message()}"


def _log_text(server) -> str:
    return Path(server.log_path).read_text(errors="replace")


def test_a_poisoned_request_fails_alone_in_a_shared_batch(faulty_triton):
    items = [(f, audio_of(f)) for f in GOOD] + [(f, _poison(audio_of(f))) for f in POISONED]
    order = [0, 6, 1, 2, 7, 3, 4, 5]  # poisoned ones in the middle of the burst
    before = read_metrics(faulty_triton.metrics_url)
    with ThreadPoolExecutor(len(items)) as pool:
        outcomes = dict(zip(order, pool.map(lambda i: _transcribe(faulty_triton.grpc_url, items[i][1]), order)))
    after = read_metrics(faulty_triton.metrics_url)

    def delta(name: str) -> float:
        return model_metric(after, name, MODEL) - model_metric(before, name, MODEL)

    executions, successes, failures = (delta("nv_inference_exec_count"), delta("nv_inference_request_success"),
                                       delta("nv_inference_request_failure"))
    log = _log_text(faulty_triton)
    retried = re.findall(r"batch of (\d+) requests retried alone: (\d+) failed, (\d+) succeeded", log)
    print(f"\n[faults] {len(items)} requests ({len(POISONED)} poisoned) ran as {int(executions)} executions; "
          f"success={int(successes)} failure={int(failures)}; isolation retries: {retried}")

    refs = {f: clip(f)["reference_text"] for f in GOOD}
    for i, (file, _) in enumerate(items):
        status, text = outcomes[i]
        if file in POISONED:
            assert status == "error", f"poisoned {file} got a transcript: {text!r}"
            assert "internal error while transcribing" in text and "INTERNAL" in text, text
            assert "Traceback" not in text and "planted bug" not in text, "a traceback leaked to the client"
        else:
            assert status == "ok", f"good request {file} failed: {text}"
            own = wer(refs[file], text)
            assert own <= 0.5, (file, refs[file], text)
            others = {g: wer(refs[g], text) for g in GOOD if g != file}
            assert own < min(others.values()), f"{file}'s transcript fits another clip better: {text!r} {others}"
    # (the Python backend counts a response that carries an error as a successful request execution)
    assert successes + failures == len(items)
    assert executions < len(items), f"{len(items)} requests ran as {int(executions)} executions: never batched"
    # the isolation really ran: a batch that held a poisoned request was retried request by request
    assert retried and sum(int(f) for _, f, _ in retried) == len(POISONED), retried
    assert any(int(s) > 0 for _, _, s in retried), f"no poisoned request shared a batch with good ones: {retried}"
    assert "planted bug: poisoned audio" in log  # the exception is logged, with its traceback, server-side
    assert "Traceback" in log


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _stub_pids(server) -> dict[int, str]:
    """pid -> command line of each Python-backend stub of the server (its direct children)."""
    stubs = {}
    for pid in _children(server.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "triton_python_backend_stub" in cmdline and MODEL in cmdline:
            stubs[pid] = cmdline
    return stubs


def test_kill_one_instance_stub(faulty_triton):
    """SIGKILL one instance's stub under load.

    Triton 2.51's Python backend does not restart a dead stub (the restart was removed after r24.05,
    triton-inference-server/server#8604), and ``/v2/health/ready`` stays 200. What must hold: the
    server survives, the other instance keeps serving, requests routed to the dead instance fail at
    once with an INTERNAL error that names it (no hang, no traceback), and a reload of the model
    (``POST /v2/repository/models/<m>/load``, what a watchdog or an operator does) brings back every
    instance, after which nothing fails.
    """
    import tritonclient.grpc as grpcclient

    url = faulty_triton.grpc_url
    stubs = _stub_pids(faulty_triton)
    assert len(stubs) == 2, f"expected one stub per instance (2), found {stubs}"
    victim = sorted(stubs)[0]
    instance = re.search(rf"({re.escape(MODEL)}_\d+_\d+)", stubs[victim])
    assert instance, stubs[victim]
    files = GOOD[:4]
    refs = {f: clip(f)["reference_text"] for f in files}
    results: list[dict] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(k: int) -> None:
        n = 0
        while not stop.is_set():
            file = files[(k + n) % len(files)]
            n += 1
            t0 = time.monotonic()
            status, text = _transcribe(url, audio_of(file), timeout_s=60)
            with lock:
                results.append({"file": file, "start": t0, "end": time.monotonic(), "status": status, "text": text})

    def count_since(t: float, status: str) -> int:
        with lock:
            return sum(1 for r in results if r["start"] > t and r["status"] == status)

    def wait_for(cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                with lock:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}: "
                                         f"{[(r['status'], r['text'][:80]) for r in results]}")
            time.sleep(0.05)

    threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(4)]
    t_start = time.monotonic()
    for t in threads:
        t.start()
    try:
        wait_for(lambda: count_since(t_start, "ok") >= 4, 60, "traffic before the kill")
        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        # the surviving instance serves, the dead one fails fast
        wait_for(lambda: count_since(t_kill, "ok") >= 4 and count_since(t_kill, "error") >= 1, 60,
                 "successes and failures after the kill")
        health_after_kill = faulty_triton.ready()
        t_reload = time.monotonic()
        with grpcclient.InferenceServerClient(url) as admin:
            admin.load_model(MODEL)  # explicit mode: a reload, old instances finish what they hold
        t_reloaded = time.monotonic()
        wait_for(lambda: count_since(t_reloaded, "ok") >= 8, 90, "successes after the reload")
        new_stubs = _stub_pids(faulty_triton)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=70)

    with lock:
        done = list(results)
    failures = [r for r in done if r["status"] != "ok"]
    print(f"\n[stub kill] requests={len(done)} failures={len(failures)}; killed {instance.group(1)} (pid {victim}); "
          f"ready after kill={health_after_kill}; reload took {t_reloaded - t_reload:.1f} s; stubs before="
          f"{sorted(stubs)} after reload={sorted(new_stubs)} (an old one still there: the old version's unload "
          f"waits on the dead stub)")
    for r in failures[:3]:
        print(f"[stub kill] failed {r['start'] - t_kill:+.2f}s..{r['end'] - t_kill:+.2f}s after the kill: {r['text'][:160]}")
    assert faulty_triton.alive(), "tritonserver died with its stub"
    assert len(set(new_stubs) - set(stubs)) == 2, f"the reload did not start a stub per instance: {new_stubs}"
    early = [r for r in failures if r["end"] < t_kill]
    late = [r for r in failures if r["start"] > t_reloaded]
    assert not early and not late, f"failures outside kill..reload: {[(r['start'] - t_kill, r['text']) for r in early + late]}"
    for r in failures:  # fast, and about the dead instance only
        assert f"Stub process '{instance.group(1)}' is not healthy" in r["text"], r["text"]
        assert r["end"] - max(r["start"], t_kill) < 10, f"a failure took {r['end'] - r['start']:.1f} s"
    for r in done:
        if r["status"] == "ok":
            assert wer(refs[r["file"]], r["text"]) <= 0.5, (r["file"], r["text"])
