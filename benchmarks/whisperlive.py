"""WhisperLive (collabora/WhisperLive, PyPI ``whisper-live``) as a peer in the streaming benchmark.

Its server runs from its own virtual environment (``make peers-venv``: ``.venv-peers``, from
benchmarks/peers/requirements.txt) so that it never touches the project's ``.venv``. Settings, chosen to
match our deployment (base, int8, CPU, 2 cores):

- ``backend="faster_whisper"`` with ``faster_whisper_custom_model_path`` = our base CTranslate2 directory
  (the same weights); WhisperLive picks ``compute_type="int8"`` itself on a machine without CUDA;
- ``single_model=True``: one model shared by all clients behind a lock, as the repository's
  ``run_server.py`` does by default for a custom model (one model per client would load N copies and
  oversubscribe 2 cores);
- ``OMP_NUM_THREADS=2``: that one model may use both cores (``run_server.py`` defaults to 1; our Triton
  model runs 2 one-thread instances, so 2 threads is the same CPU);
- ``max_clients`` (default 4, WhisperLive's own default): further clients get its ``WAIT`` answer, counted
  as refused;
- the client asks for ``use_vad=True`` (its default: faster-whisper's Silero VAD filter on each chunk),
  ``language="en"``, ``task="transcribe"``; audio goes as float32 16 kHz frames of 100 ms at real time,
  like our sessions' 100 ms appends.

What one session measures (``whisperlive_session``), on the audio timeline (segment ``start``/``end`` are
seconds of the session's audio; at real-time pace audio second ``t`` has been sent ``t`` s after the start):

- turn latency, per completed segment: from the moment the audio of the segment's ``end`` had been sent
  to the first message that reports that segment with ``completed: true``. WhisperLive completes a
  segment when Whisper starts a new one after it, or when the last segment's text came back unchanged
  ``same_output_threshold`` (10) times;
- first delta, per completed segment: from the moment its ``start`` audio had been sent to the first
  message carrying any segment (partial or completed) that overlaps its [start, end];
- text: what WhisperLive's own client writes as the transcript: completed segments in order, each kept
  when it starts at or after the end of the previous kept one, plus the last partial segment at the end
  when it differs (so audio that never got a ``completed`` still counts for WER, as in its client).

After the audio, the session waits until the server has caught up: its segments reach the end of the
speech (the last non-zero sample, ``REACH_S`` of slack) and the last segment is completed or its text has
not changed for ``NO_CHANGE_S`` (15 s, the patience of WhisperLive's own client, its
``disconnect_if_no_response_for``); at most ``TAIL_LIMIT_S`` after the end of the audio. Then it sends
``END_OF_AUDIO`` and closes. (WhisperLive's client counts its 15 s from the last change even while a
lagging server is still working, and would leave with the tail untranscribed; this waits for the server,
as our sessions wait for every committed turn.) The latencies above do not include that wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / ".venv-peers"
RATE = 16000
CHUNK_S = 0.1
NO_CHANGE_S = 15.0
REACH_S = 2.0
TAIL_LIMIT_S = 90.0

# Run inside the peer venv: argv = host, port, model_dir, max_clients.
_RUNNER = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
from whisper_live.server import TranscriptionServer
host, port, model_dir, max_clients = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
TranscriptionServer().run(host, port, backend="faster_whisper", faster_whisper_custom_model_path=model_dir,
                          single_model=True, max_clients=max_clients, max_connection_time=3600)
"""


def peer_python() -> Path:
    """The peer venv's interpreter; exits with the command that installs it when it is missing."""
    python = PEER_VENV / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"no {python}: run `make peers-venv` (WhisperLive in its own venv)")
    return python


def options(uid: str) -> dict:
    """The JSON options message a WhisperLive client sends first."""
    return {"uid": uid, "language": "en", "task": "transcribe", "model": "base", "use_vad": True}


async def handshake(url: str, timeout: float = 30.0) -> dict:
    """Connect, send the options and return the server's first message (``SERVER_READY``, ``WAIT`` or an error)."""
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None, open_timeout=timeout) as ws:
        await ws.send(json.dumps(options(f"probe-{uuid.uuid4().hex[:8]}")))
        return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def wait_ready(url: str, timeout: float, alive) -> bool:
    """True once a client gets ``SERVER_READY`` (the shared model is then loaded); False on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            if asyncio.run(handshake(url, max(1.0, deadline - time.monotonic()))).get("message") == "SERVER_READY":
                return True
        except Exception:  # refused while it binds, or closed before answering
            time.sleep(0.2)  # a connection attempt loop, not a readiness guess
    return False


@contextlib.contextmanager
def whisperlive_server(model_dir: str, logs: Path, max_clients: int = 4, threads: int = 2,
                       timeout: float = 300.0) -> Iterator[tuple[subprocess.Popen, str]]:
    """WhisperLive's server on a free port in its own process group; yields ``(process, ws_url)`` once a
    client has been answered ``SERVER_READY``, and stops the process group afterwards."""
    from .common import free_port

    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with open(logs / "whisperlive.log", "ab") as log_file:
        proc = subprocess.Popen([str(peer_python()), "-c", _RUNNER, "127.0.0.1", str(port), model_dir,
                                 str(max_clients)], stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    url = f"ws://127.0.0.1:{port}"
    try:
        if not wait_ready(url, timeout, lambda: proc.poll() is None):
            raise SystemExit(f"WhisperLive did not answer SERVER_READY in {timeout:.0f} s "
                             f"(see {logs / 'whisperlive.log'})")
        yield proc, url
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def whisperlive_session(url: str, audio: np.ndarray, delay_s: float = 0.0) -> dict:
    """One WhisperLive client at real-time pace, opened after ``delay_s``: the dict ``streaming.session``
    returns (``refused``, ``errors``, ``closed``, ``text``, ``turn_latency``, ``first_delta``, ``turns``),
    with the latencies defined in this module's docstring."""
    from websockets.exceptions import ConnectionClosed

    await asyncio.sleep(delay_s)
    out: dict = {"refused": None, "errors": [], "closed": None}
    seen: list[tuple[float, float, float]] = []  # (time since the first frame, start, end) of new segment spans
    completed: dict[str, dict] = {}  # by start, first report as completed
    transcript: list[dict] = []  # as WhisperLive's client builds it
    last: dict = {"partial": None}
    try:
        await _session(url, np.ascontiguousarray(audio, dtype=np.float32), out, seen, completed, transcript, last)
    except ConnectionClosed as exc:
        out["closed"] = str(exc)
    partial = last["partial"]
    if partial is not None and (not transcript or transcript[-1]["text"] != partial["text"]):
        transcript.append(partial)
    out["text"] = " ".join(s["text"].strip() for s in transcript).strip()
    done = sorted(completed.values(), key=lambda s: s["start"])
    out["turn_latency"] = [max(0.0, s["at"] - s["end"]) for s in done]
    out["first_delta"] = [min(t for t, a, b in seen if a < s["end"] and b > s["start"]) - s["start"]
                          for s in done if any(a < s["end"] and b > s["start"] for _, a, b in seen)]
    out["turns"] = len(done)
    return out


async def _session(url: str, audio: np.ndarray, out: dict, seen: list, completed: dict, transcript: list,
                   last: dict) -> None:
    from websockets.asyncio.client import connect

    from .common import send_in_real_time

    async with connect(url, max_size=None, open_timeout=60) as ws:
        await ws.send(json.dumps(options(uuid.uuid4().hex)))
        first = json.loads(await ws.recv())
        if first.get("message") != "SERVER_READY":
            out["refused"] = f"{first.get('status', '')} {first.get('message', '')}".strip()
            return
        step = int(CHUNK_S * RATE)
        t0 = time.monotonic()

        sender = asyncio.create_task(send_in_real_time(ws, audio, RATE, step, t0, lambda piece: piece.tobytes()))
        spans: set[tuple[str, str]] = set()
        last_change, last_text = time.monotonic(), None
        ended = t0 + audio.size / RATE
        voiced = np.flatnonzero(audio)
        speech_end = (voiced[-1] + 1) / RATE if voiced.size else 0.0
        reached = 0.0  # the latest segment end the server has reported

        def caught_up() -> bool:
            settled = last["partial"] is None or time.monotonic() - last_change > NO_CHANGE_S
            return reached >= speech_end - REACH_S and settled

        while not (sender.done() and (caught_up() or time.monotonic() - ended > TAIL_LIMIT_S)):
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
            except TimeoutError:
                continue
            now = time.monotonic() - t0
            if message.get("status") in ("ERROR", "WARNING") or message.get("message") == "DISCONNECT":
                out["errors"].append(message)
                if message.get("message") == "DISCONNECT":
                    break
                continue
            segments = message.get("segments")
            if not segments:
                continue
            for seg in segments:
                key = (seg["start"], seg["end"])
                if key not in spans:
                    spans.add(key)
                    seen.append((now, float(seg["start"]), float(seg["end"])))
                    reached = max(reached, float(seg["end"]))
                if seg.get("completed"):
                    if seg["start"] not in completed:
                        completed[seg["start"]] = {"start": float(seg["start"]), "end": float(seg["end"]),
                                                   "text": seg["text"], "at": now}
                    if not transcript or float(seg["start"]) >= float(transcript[-1]["end"]):
                        transcript.append(seg)
            tail = segments[-1]
            last["partial"] = None if tail.get("completed") else tail
            if tail["text"] != last_text:
                last_change, last_text = time.monotonic(), tail["text"]
        if sender.done():
            await sender
        else:
            sender.cancel()
        with contextlib.suppress(Exception):
            await ws.send(b"END_OF_AUDIO")


def main(argv: list[str] | None = None) -> int:
    """One session against a fresh server: ``python -m benchmarks.whisperlive [--seconds S]``, a quick check."""
    import argparse
    import tempfile

    from .common import DEFAULT_AUDIO, error_rate, load_clips, model_path
    from .streaming import joined

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO)
    args = parser.parse_args(argv)
    clips = [c for c in load_clips(args.audio_dir) if c.language == "en" and c.kind == "short" and c.duration >= 3]
    audio, reference = joined(clips, args.seconds)
    with tempfile.TemporaryDirectory(prefix="whisperlive-") as logs, \
            whisperlive_server(model_path("bundled:base"), Path(logs)) as (_, url):
        result = asyncio.run(whisperlive_session(url, audio))
        print(Path(logs, "whisperlive.log").read_text()[-2000:])
    result["wer"] = error_rate(reference, result["text"], "en")
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
