"""Scale-out and overload, end to end with real processes.

1. Two tritonservers (only ``whisper-tiny-en``) behind a real nginx gRPC balancer rendered from
   ``deploy/nginx/nginx-local.conf.template``, the gateway pointed at nginx. A steady series of
   requests runs while one replica is SIGKILLed and later restarted on the same ports: only requests
   in flight at the kill may fail (503, never 500); both replicas serve traffic before the kill and
   after the restart.
2. One tritonserver from a copy of ``whisper-tiny-en`` with a tiny queue (``max_queue_size: 2``,
   ``max_batch_size: 1``, no response cache): a burst of concurrent long requests gets some 200s
   and fast 429s (``Retry-After``, OpenAI error body), no 5xx, nothing hangs.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import wave
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import httpx
import pytest

from tests.utils.helpers import ROOT, SHARED_AUDIO, clip, free_port, shared_audio_available, wer
from tests.streaming_gateway import stream_gateway

MODEL = "whisper-tiny-en"
SHORT_CLIP = "en/LDC93S1.wav"  # 2.9 s
LONG_CLIP = "formats/jfk_16k.wav"  # 11 s, plain 16 kHz WAV (cheap to decode)
READY_TIMEOUT_S = float(os.environ.get("TRITON_READY_TIMEOUT_S", 300))

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                                reason="nginx is not installed (apt-get install nginx-light)")


def _need_audio(*files: str) -> None:
    if not shared_audio_available():
        pytest.skip(f"real test speech not found at {SHARED_AUDIO} (set WHISPER_TEST_AUDIO); this test sends real speech")
    for f in files:
        if not (SHARED_AUDIO / f).is_file():
            pytest.skip(f"test clip {SHARED_AUDIO / f} is missing")


def _nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _success_count(metrics_url: str) -> float:
    """``nv_inference_request_success`` for the model; 0 when the replica is down or has no counter yet."""
    try:
        text = urllib.request.urlopen(metrics_url, timeout=2).read().decode()
    except OSError:
        return 0.0
    m = re.search(r'^nv_inference_request_success\{model="%s",version="1"\} (\S+)$' % re.escape(MODEL), text, re.M)
    return float(m.group(1)) if m else 0.0


def _render_nginx_conf(upstream_ports: list[int], listen_port: int) -> str:
    """As ``tests/deploy/test_deploy_files.py::render_local_nginx_conf`` renders the template."""
    template = (ROOT / "deploy" / "nginx" / "nginx-local.conf.template").read_text()
    upstreams = "\n        ".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstream_ports)
    return template.replace("{{UPSTREAMS}}", upstreams).replace("{{LISTEN_PORT}}", str(listen_port))


def _wait_port(port: int, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nginx did not listen on {port} in {timeout} s:\n{log.read_text(errors='replace')}")


def _stop_group(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGQUIT)  # nginx: graceful shutdown
        proc.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _triton(repository: Path, ports: tuple[int, int, int], log: Path):
    from launcher.triton import TritonServer

    return TritonServer(repository, *ports, models=[MODEL], log_path=log)


def _start_all(servers) -> None:
    for s in servers:
        s.start()
    for s in servers:
        s.wait_ready(timeout=READY_TIMEOUT_S)


# --------------------------------------------------------------------------------------------------
# 1. scale-out behind nginx, kill -9 and restart of one replica


def test_scale_out_kill_and_restart_replica(tmp_path):
    _need_audio(SHORT_CLIP)
    reference = clip(SHORT_CLIP)["reference_text"]
    with wave.open(str(SHARED_AUDIO / SHORT_CLIP)) as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    counter = itertools.count(1)
    counter_lock = threading.Lock()

    def unique_wav() -> bytes:
        """The clip plus 1..4000 samples of silence, so no two requests hit Triton's response cache."""
        with counter_lock:
            k = next(counter) % 4000 + 1
        buf = io.BytesIO()
        with wave.open(buf, "wb") as out:
            out.setparams(params)
            out.writeframes(frames + b"\0" * (k * params.sampwidth * params.nchannels))
        return buf.getvalue()

    ports = [(free_port(), free_port(), free_port()) for _ in range(2)]
    assert len({p for triple in ports for p in triple}) == 6
    repo = ROOT / "model_repository"
    replicas = [_triton(repo, ports[i], tmp_path / f"triton-{i}.log") for i in range(2)]
    restarted = None
    nginx = None
    try:
        _start_all(replicas)

        nginx_dir = tmp_path / "nginx"
        nginx_dir.mkdir()
        listen = free_port()
        (nginx_dir / "nginx.conf").write_text(_render_nginx_conf([p[1] for p in ports], listen))
        nginx_log = nginx_dir / "stderr.log"
        with open(nginx_log, "wb") as out:
            nginx = subprocess.Popen([_nginx_bin(), "-p", str(nginx_dir), "-c", str(nginx_dir / "nginx.conf"), "-e", "stderr"],
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(listen, nginx, 15, nginx_log)

        with stream_gateway(f"127.0.0.1:{listen}", tmp_path, GATEWAY_DEFAULT_MODEL=MODEL,
                            GATEWAY_TRITON_TIMEOUT_S="60") as url:
            results: list[dict] = []  # {start, end, status, text|body}
            stop = threading.Event()
            lock = threading.Lock()

            def sender() -> None:
                with httpx.Client(base_url=url, timeout=60) as client:
                    while not stop.is_set():
                        t0 = time.monotonic()
                        try:
                            r = client.post("/v1/audio/transcriptions",
                                            files={"file": ("LDC93S1.wav", unique_wav(), "audio/wav")},
                                            data={"model": MODEL, "language": "en"})
                            status, body = r.status_code, r.text
                            text = r.json().get("text", "") if status == 200 else None
                        except httpx.HTTPError as exc:  # the gateway itself never goes away
                            status, body, text = -1, repr(exc), None
                        with lock:
                            results.append({"start": t0, "end": time.monotonic(), "status": status, "body": body, "text": text})

            def wait_for(cond, timeout: float, what: str) -> None:
                deadline = time.monotonic() + timeout
                while not cond():
                    if time.monotonic() > deadline:
                        raise AssertionError(f"timed out after {timeout} s waiting for {what}; results so far: "
                                             f"{[(r['status'], (r['text'] or r['body'])[:80]) for r in results]}")
                    if not threads_alive():
                        raise AssertionError("request sender threads died")
                    time.sleep(0.05)

            def n_done() -> int:
                with lock:
                    return len(results)

            # two steady senders: enough to keep both replicas busy, and the balancer alternating
            threads = [threading.Thread(target=sender, daemon=True) for _ in range(2)]

            def threads_alive() -> bool:
                return all(t.is_alive() for t in threads)

            metrics = [f"http://127.0.0.1:{p[2]}/metrics" for p in ports]
            base = [_success_count(m) for m in metrics]
            for t in threads:
                t.start()
            try:
                # phase 1: both replicas up
                wait_for(lambda: n_done() >= 6 and all(_success_count(m) > b for m, b in zip(metrics, base)), 40,
                         "both replicas to serve traffic")
                before_kill = [_success_count(m) - b for m, b in zip(metrics, base)]

                # phase 2: kill -9 replica 1 mid-series
                t_kill = time.monotonic()
                os.kill(replicas[1].pid, signal.SIGKILL)  # the main process only, as a crash would
                replicas[1].process.wait()
                n_at_kill = n_done()
                wait_for(lambda: n_done() >= n_at_kill + 6, 40, "requests while one replica is down")
                ok_after_kill = [r for r in results if r["start"] > t_kill and r["status"] == 200]
                first_ok_after_kill = min(r["end"] for r in ok_after_kill) if ok_after_kill else None

                # phase 3: restart replica 1 (a new process, same ports)
                t_restart = time.monotonic()
                restarted = _triton(repo, ports[1], tmp_path / "triton-1-restarted.log")
                restarted.start()
                restarted.wait_ready(timeout=READY_TIMEOUT_S)
                t_ready = time.monotonic()
                # the counter is fresh, but model warmup may already count: only growth past it is traffic
                restarted_base = _success_count(metrics[1])
                survivor_at_ready = _success_count(metrics[0])
                wait_for(lambda: _success_count(metrics[1]) > restarted_base, 30,
                         "the restarted replica to get traffic again")
                t_rejoined = time.monotonic()
                n_at_rejoin = n_done()
                wait_for(lambda: n_done() >= n_at_rejoin + 6, 40, "requests after the restart")
                after_restart = [_success_count(metrics[0]) - survivor_at_ready, _success_count(metrics[1]) - restarted_base]
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=70)

        with lock:
            done = list(results)
        in_flight_at_kill = [r for r in done if r["start"] <= t_kill <= r["end"]]
        failures = [r for r in done if r["status"] != 200]
        bad_text = [r for r in done if r["status"] == 200 and wer(reference, r["text"]) > 0.5]
        print(f"\n[scale-out] requests={len(done)} failures={len(failures)} "
              f"(statuses {[r['status'] for r in failures]}), in flight at kill={len(in_flight_at_kill)}")
        print(f"[scale-out] successes per replica before kill={before_kill}, after the restarted one was ready={after_restart} "
              f"(restarted replica's counter at ready: {restarted_base})")
        if first_ok_after_kill is not None:
            print(f"[scale-out] first success after kill: {first_ok_after_kill - t_kill:.2f} s after the kill")
        print(f"[scale-out] restart: ready {t_ready - t_restart:.1f} s after start; "
              f"rejoined (first request served) {t_rejoined - t_ready:.2f} s after ready")

        assert not [r for r in done if r["status"] >= 500 and r["status"] != 503], \
            f"a 5xx other than 503: {[(r['status'], r['body'][:200]) for r in failures]}"
        unexpected = [r for r in failures if r not in in_flight_at_kill or r["status"] != 503]
        assert not unexpected, f"failures outside the kill moment: {[(r['status'], r['body'][:200]) for r in unexpected]}"
        assert len(failures) <= len(in_flight_at_kill) <= 2
        assert not bad_text, f"wrong transcriptions: {[r['text'] for r in bad_text]}"
        assert all(x > 0 for x in before_kill), f"a replica got no traffic before the kill: {before_kill}"
        assert all(x > 0 for x in after_restart), f"a replica got no traffic after the restart: {after_restart}"
        assert first_ok_after_kill is not None
    finally:
        _stop_group(nginx)
        for s in [*replicas, restarted]:
            if s is not None:
                s.stop()


# --------------------------------------------------------------------------------------------------
# 2. overload: a full Triton queue is a fast 429, not a hang or a 5xx


def _small_queue_repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "model_repository" / MODEL, repo / MODEL, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = repo / MODEL / "config.pbtxt"
    text = cfg.read_text()
    edits = [
        (r"(?m)^max_batch_size: \d+", "max_batch_size: 1"),
        (r"preferred_batch_size: \[[^\]]*\]", "preferred_batch_size: [ 1 ]"),
        (r"max_queue_size: \d+", "max_queue_size: 2"),
        (r"response_cache \{\s*enable: (?:true|false)\s*\}", "response_cache {\n  enable: false\n}"),
    ]
    for pattern, replacement in edits:
        text, n = re.subn(pattern, replacement, text)
        assert n == 1, f"config.pbtxt of {MODEL} changed shape: {pattern!r} matched {n} times"
    cfg.write_text(text)
    return repo


def test_overload_queue_full_is_fast_429(tmp_path):
    _need_audio(LONG_CLIP)
    reference = clip(LONG_CLIP)["reference_text"]
    audio_bytes = (SHARED_AUDIO / LONG_CLIP).read_bytes()
    repo = _small_queue_repository(tmp_path)
    server = _triton(repo, (free_port(), free_port(), free_port()), tmp_path / "triton.log")
    try:
        _start_all([server])
        with stream_gateway(server.grpc_url, tmp_path, GATEWAY_DEFAULT_MODEL=MODEL, GATEWAY_TRITON_TIMEOUT_S="60") as url:
            n = 12
            barrier = threading.Barrier(n)

            def one(_: int) -> dict:
                with httpx.Client(base_url=url, timeout=60) as client:
                    barrier.wait(10)
                    t0 = time.monotonic()
                    r = client.post("/v1/audio/transcriptions",
                                    files={"file": ("jfk.wav", audio_bytes, "audio/wav")},
                                    data={"model": MODEL, "language": "en"})
                    return {"status": r.status_code, "latency": time.monotonic() - t0, "headers": r.headers,
                            "json": r.json() if r.headers.get("content-type", "").startswith("application/json") else None,
                            "body": r.text}

            t_start = time.monotonic()
            with ThreadPoolExecutor(n) as pool:
                futures = [pool.submit(one, i) for i in range(n)]
                done, pending = wait(futures, timeout=75)
                assert not pending, f"{len(pending)} of {n} requests hung (no answer in 75 s)"
            results = [f.result() for f in futures]
            elapsed = time.monotonic() - t_start

        ok = [r for r in results if r["status"] == 200]
        rejected = [r for r in results if r["status"] == 429]
        other = [r for r in results if r["status"] not in (200, 429)]
        print(f"\n[overload] {n} concurrent in {elapsed:.1f} s: 200={len(ok)} 429={len(rejected)} other={[r['status'] for r in other]}")
        print(f"[overload] 429 latencies (s): {sorted(round(r['latency'], 3) for r in rejected)}")
        print(f"[overload] 200 latencies (s): {sorted(round(r['latency'], 2) for r in ok)}")
        if rejected:
            print(f"[overload] a 429: Retry-After={rejected[0]['headers'].get('retry-after')!r} body={rejected[0]['body']}")

        assert not other, f"unexpected statuses: {[(r['status'], r['body'][:300]) for r in other]}"
        assert ok, "no request succeeded"
        for r in ok:
            assert wer(reference, r["json"]["text"]) <= 0.5, r["json"]["text"]
        if not rejected:
            pytest.fail(f"no request was rejected: 12 concurrent 11 s clips against max_queue_size 2 all got 200 "
                        f"(latencies {[round(r['latency'], 2) for r in ok]})")
        for r in rejected:
            assert r["headers"].get("retry-after", "").isdigit(), r["headers"]
            err = (r["json"] or {}).get("error")
            assert isinstance(err, dict) and err.get("type") == "rate_limit_error" and err.get("message"), r["body"]
            assert r["latency"] < 1.0, f"a rejection took {r['latency']:.2f} s"
    finally:
        server.stop()
