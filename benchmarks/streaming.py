"""Streaming benchmark (``make bench-stream``): concurrent OpenAI Realtime transcription sessions.

1. ``/v1/realtime`` (server VAD) with 1, 4, 8, 16 concurrent sessions, each appending real English speech
   with pauses (LibriSpeech and other clips of /work/shared/audio joined with ``--gap`` s of silence; every
   session its own order of the clips) in 100 ms chunks of 24 kHz PCM at real-time pace. Per turn: the
   time from the end of its speech (``audio_end_ms`` of ``speech_stopped``: the moment that audio had been
   sent) to its ``completed`` event (p50/p95; it includes the 500 ms of silence server VAD waits for), the
   first ``delta`` after the speech started, and the WER of the joined ``completed`` transcripts against
   the reference and against the same audio uploaded whole (``/v1/audio/transcriptions``, in the same
   run); sessions refused at the start; CPU seconds of tritonserver (with its model stubs) and of the
   gateway per second of wall time. Sessions start ``--stagger`` seconds apart, as users arrive: admission
   control refuses those the server cannot hold in real time.
2. Optionally (``--sse``) the ``stream=true`` upload against the same upload without ``stream``.
3. Optionally (``--peer whisperlive``) the same levels, on the same audio per session, against WhisperLive
   (benchmarks/whisperlive.py: same base weights, int8, the 2 cores), started after our stack has stopped
   so that each has the machine; its rows carry ``"server": "WhisperLive"`` and reuse our uploads' WER.

Writes ``benchmarks/results/<date>-<machine>-realtime/``: report.md, summary.json, latency_vs_sessions.png.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import (audio_of, error_rate, load_clips, machine_description, results_dir, running_stack,
                     send_in_real_time, stack_arguments)

RATE = 16000
WIRE_RATE = 24000


PEER_SETTINGS = ("whisper-live 0.10.0, faster_whisper backend, the same base CTranslate2 weights, int8, one shared "
                 "model (single_model), OMP_NUM_THREADS=2, max_clients={max_clients}, use_vad")


def log(msg: str) -> None:
    print(f"[stream-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def joined(clips, seconds: float, gap_s: float = 1.0) -> tuple[np.ndarray, str]:
    """Clips in the given order, joined with ``gap_s`` of silence until ``seconds`` are reached."""
    parts, refs, total = [], [], 0.0
    for clip in clips:
        if total >= seconds:
            break
        parts += [audio_of(str(clip.path)), np.zeros(int(gap_s * RATE), dtype=np.float32)]
        refs.append(clip.reference)
        total += clip.duration + gap_s
    return np.concatenate(parts), " ".join(refs)


def to_wire(audio: np.ndarray) -> np.ndarray:
    n = int(round(audio.size * WIRE_RATE / RATE))
    return (np.clip(np.interp(np.arange(n) * RATE / WIRE_RATE, np.arange(audio.size), audio), -1, 1) * 32767).astype("<i2")


async def session(url: str, audio: np.ndarray, model: str, delay_s: float = 0.0) -> dict:
    """One realtime session at real-time pace, opened after ``delay_s``; its turns' timings and transcripts."""
    await asyncio.sleep(delay_s)
    pcm, step = to_wire(audio), WIRE_RATE // 10
    turns: dict[str, dict] = {}
    order: list[str] = []
    out = {"refused": None, "errors": [], "closed": None}
    from websockets.exceptions import ConnectionClosed

    try:
        await _session(url, pcm, step, model, turns, order, out)
    except ConnectionClosed as exc:  # e.g. keepalive: a gateway that holds a client back over 20 s
        out["closed"] = str(exc)
    done = [turns[i] for i in order if "completed" in turns[i]]
    out["text"] = " ".join(t["text"] for t in done)
    out["turn_latency"] = [t["completed"] - t["end"] for t in done if "end" in t]
    out["first_delta"] = [t["first_delta"] - t["start"] for t in done if "first_delta" in t]
    out["turns"], out["turns_started"] = len(done), len(order)
    return out


async def _session(url: str, pcm: np.ndarray, step: int, model: str, turns: dict, order: list, out: dict) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None, open_timeout=60) as ws:
        first = json.loads(await ws.recv())
        if first["type"] == "error":
            out["refused"] = first["error"]["message"]
            return
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": WIRE_RATE}, "transcription": {"model": model, "language": "en"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                               "silence_duration_ms": 500}}}}}))
        t0 = time.monotonic()

        sender = asyncio.create_task(send_in_real_time(
            ws, pcm, WIRE_RATE, step, t0,
            lambda piece: json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(piece.tobytes()).decode()})))
        while True:
            try:
                event = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
            except TimeoutError:
                if sender.done() and all("completed" in turns[i] for i in turns if "committed" in turns[i]):
                    break
                continue
            now, kind = time.monotonic() - t0, event["type"]
            item = turns.setdefault(event.get("item_id", ""), {})
            if kind == "input_audio_buffer.speech_started":
                item["start"] = event["audio_start_ms"] / 1000
                order.append(event["item_id"])
            elif kind == "input_audio_buffer.speech_stopped":
                item["end"] = event["audio_end_ms"] / 1000
            elif kind == "input_audio_buffer.committed":
                item["committed"] = now
            elif kind.endswith("input_audio_transcription.delta"):
                item.setdefault("first_delta", now)
            elif kind.endswith("input_audio_transcription.completed"):
                item["completed"], item["text"] = now, event["transcript"]
            elif kind.endswith("input_audio_transcription.failed") or kind == "error":
                out["errors"].append(event)
        await sender


def cpu_seconds(*groups: int) -> float:
    """CPU seconds (user + system) of every process in the given process groups."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:  # pgrp
            total += int(fields[11]) + int(fields[12])
    return total / tick


def offline(url: str, audios: list[np.ndarray], model: str) -> list[str]:
    import httpx

    from client.audio import encode_wav

    with httpx.Client(timeout=600) as http:
        return [http.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", encode_wav(a), "audio/wav")},
                          data={"model": model, "language": "en"}).raise_for_status().json()["text"] for a in audios]


def session_inputs(clips, n: int, seconds: float, gap: float) -> list[tuple[np.ndarray, str]]:
    """The audio and reference of each of ``n`` sessions: every session its own order of the clips."""
    inputs = []
    for k in range(n):
        rotated = clips[(k * 3) % len(clips):] + clips[:(k * 3) % len(clips)]
        inputs.append(joined(rotated, seconds, gap))
    return inputs


def realtime_sessions(url: str, triton, gateway, clips, seconds: float, gap: float, levels: list[int],
                      model: str, stagger_s: float, uploads_by_level: dict[int, list[str]] | None = None) -> list[dict]:
    """Our rows; fills ``uploads_by_level`` with each level's upload transcripts (for the peer's rows)."""
    rows = []
    ws_url = url.replace("http", "ws", 1) + "/v1/realtime?intent=transcription"
    for n in levels:
        inputs = session_inputs(clips, n, seconds, gap)
        uploads = offline(url, [a for a, _ in inputs], model)
        if uploads_by_level is not None:
            uploads_by_level[n] = uploads
        log(f"/v1/realtime: {n} concurrent session(s) of {np.mean([a.size for a, _ in inputs]) / RATE:.0f} s at real time")
        cpu0, wall0 = cpu_seconds(triton.pid, gateway.pid), time.monotonic()
        gateway_cpu0, counts0 = cpu_seconds(gateway.pid), triton_counts(triton.metrics_url)

        async def run_all():
            return await asyncio.gather(*(session(ws_url, a, model, k * stagger_s) for k, (a, _) in enumerate(inputs)))

        results = asyncio.run(run_all())
        wall = time.monotonic() - wall0
        cpu, gateway_cpu = cpu_seconds(triton.pid, gateway.pid) - cpu0, cpu_seconds(gateway.pid) - gateway_cpu0
        rows.append(level_row("this gateway", n, results, inputs, uploads, cpu / wall, round(gateway_cpu / wall, 2)))
        counts = triton_counts(triton.metrics_url)
        rows[-1]["triton"] = {k: round(v - counts0.get(k, 0.0), 3) for k, v in counts.items()}
        log(f"  {rows[-1]}")
    return rows


# what Triton and the engine counted during a level (summed over models and labels): where the time went
TRITON_COUNTS = {"nv_inference_request_success": 1, "nv_inference_exec_count": 1,
                 "nv_inference_queue_duration_us": 1e-6, "nv_inference_compute_infer_duration_us": 1e-6,
                 "whisper_audio_seconds": 1, "whisper_windows": 1, "whisper_fallback_windows": 1,
                 "whisper_full_context_rechecks": 1}  # metric families (the parser names counters without _total)


def triton_counts(metrics_url: str) -> dict[str, float]:
    """TRITON_COUNTS from Triton's metrics endpoint (durations in seconds)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    totals = dict.fromkeys(TRITON_COUNTS, 0.0)
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        if family.name in TRITON_COUNTS:
            value = sum(sample.value for sample in family.samples if not sample.name.endswith("_created"))
            totals[family.name] += value * TRITON_COUNTS[family.name]
    return totals


def level_row(server: str, n: int, results: list[dict], inputs: list[tuple[np.ndarray, str]],
              uploads: list[str] | None, cpu_per_s: float, gateway_cpu_per_s: float | None) -> dict:
    """One level's row of the table from its sessions' results (refused sessions left out of the figures)."""
    uploads = uploads or [None] * len(inputs)
    served = [(r, ref, up) for r, (_, ref), up in zip(results, inputs, uploads) if r["refused"] is None]
    lat = [x for r, _, _ in served for x in r["turn_latency"]]
    first = [x for r, _, _ in served for x in r["first_delta"]]
    pct = lambda v, q: round(float(np.percentile(v, q)), 3) if v else None  # noqa: E731
    refs = [ref for _, ref, _ in served]
    have_uploads = bool(served) and all(up is not None for _, _, up in served)
    return {
        "server": server, "sessions": n, "served": len(served), "refused": n - len(served),
        "turns": sum(r["turns"] for r, _, _ in served),
        # turns whose speech the server VAD reported started but that never reached `completed` in the session
        # (None for a peer whose protocol has no such event: not measured, rather than zero)
        "turns_unfinished": (sum(r["turns_started"] - r["turns"] for r, _, _ in served)
                             if all("turns_started" in r for r, _, _ in served) else None),
        "turn_latency_p50_s": pct(lat, 50), "turn_latency_p95_s": pct(lat, 95),
        "turn_latency_max_s": round(max(lat), 3) if lat else None,
        "first_delta_p50_s": pct(first, 50), "first_delta_p95_s": pct(first, 95),
        "wer": round(error_rate(refs, [r["text"] for r, _, _ in served], "en"), 4) if served else None,
        "wer_upload": round(error_rate(refs, [up for _, _, up in served], "en"), 4) if have_uploads else None,
        "errors": sum(len(r["errors"]) for r, _, _ in served),
        "closed": sum(1 for r, _, _ in served if r["closed"]),
        "load_avg": round(os.getloadavg()[0], 1),
        "cpu_per_s": round(cpu_per_s, 2), "gateway_cpu_per_s": gateway_cpu_per_s,
        "refusals": sorted({r["refused"] for r in results if r["refused"]}),
        # each served session's WER, live and uploaded: where a level's gap comes from
        "session_wer": [[round(error_rate([ref], [r["text"]], "en"), 3),
                         None if up is None else round(error_rate([ref], [up], "en"), 3)] for r, ref, up in served],
    }


def whisperlive_levels(clips, seconds: float, gap: float, levels: list[int], stagger_s: float,
                       uploads_by_level: dict[int, list[str]], logs: Path, max_clients: int) -> list[dict]:
    """The same levels, on the same audio per session (``session_inputs``), against WhisperLive; a fresh
    server per level (no state carried over); CPU: the WhisperLive server process per second of wall time."""
    from .common import model_path
    from .whisperlive import whisperlive_server, whisperlive_session

    rows = []
    for n in levels:
        inputs = session_inputs(clips, n, seconds, gap)
        with whisperlive_server(model_path("bundled:base"), logs, max_clients=max_clients) as (proc, url):
            log(f"WhisperLive: {n} concurrent session(s) of {np.mean([a.size for a, _ in inputs]) / RATE:.0f} s at real time")
            cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()

            async def run_all():
                return await asyncio.gather(*(whisperlive_session(url, a, k * stagger_s)
                                              for k, (a, _) in enumerate(inputs)))

            results = asyncio.run(run_all())
            wall = time.monotonic() - wall0
            cpu = cpu_seconds(proc.pid) - cpu0
        rows.append(level_row("WhisperLive", n, results, inputs, uploads_by_level.get(n), cpu / wall, None))
        log(f"  {rows[-1]}")
    return rows


def sse_upload(url: str, audio: np.ndarray, reference: str, repeats: int) -> dict:
    import httpx
    from httpx_sse import connect_sse

    from client.audio import encode_wav

    data, form = encode_wav(audio), {"model": "whisper-1", "language": "en"}
    runs = []
    with httpx.Client(timeout=1800) as http:
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = http.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", data, "audio/wav")}, data=form)
            r.raise_for_status()
            whole_s, whole_text = time.perf_counter() - t0, r.json()["text"]
            t0, first, done = time.perf_counter(), None, {}
            with connect_sse(http, "POST", f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", data, "audio/wav")},
                             data={**form, "stream": "true"}) as source:
                for sse in source.iter_sse():
                    event = json.loads(sse.data)
                    if first is None and event["type"] == "transcript.text.delta":
                        first = time.perf_counter() - t0
                    done = event
            runs.append({"one_request_s": round(whole_s, 3), "stream_first_delta_s": round(first or float("nan"), 3),
                         "stream_done_s": round(time.perf_counter() - t0, 3),
                         "wer_one_request": round(error_rate(reference, whole_text, "en"), 4),
                         "wer_stream": round(error_rate(reference, done.get("text", ""), "en"), 4)})
            log(f"  stream=true on {len(audio) / RATE:.0f} s: {runs[-1]}")
    return {"audio_s": round(len(audio) / RATE, 2), "runs": runs}


def plot(rows: list[dict], path: Path, peer: list[dict] | None = None) -> None:
    """Our p50/p95 turn completion and first delta per level; the peer's p50/p95 when it ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sessions = [r["sessions"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sessions, [r["turn_latency_p50_s"] for r in rows], "o-", label="turn completion p50")
    ax.plot(sessions, [r["turn_latency_p95_s"] for r in rows], "s--", label="turn completion p95")
    ax.plot(sessions, [r["first_delta_p50_s"] for r in rows], "^:", label="first delta p50 (after speech start)")
    for server in sorted({r["server"] for r in peer or []}):
        mine = [r for r in peer if r["server"] == server]
        ax.plot([r["sessions"] for r in mine], [r["turn_latency_p95_s"] for r in mine], "s--", color="tab:red",
                label=f"{server}: segment completion p95")
        ax.plot([r["sessions"] for r in mine], [r["turn_latency_p50_s"] for r in mine], "o-", color="tab:red",
                alpha=0.5, label=f"{server}: segment completion p50")
    ax.axhline(2.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("concurrent real-time sessions (/v1/realtime)")
    ax.set_ylabel("seconds after the speech ended / started")
    ax.set_xticks(sessions)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Realtime transcription sessions, base, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(out: Path, summary: dict) -> None:
    lines = [f"# Realtime sessions benchmark ({summary['date']})", "",
             f"Machine: {summary['machine'].get('cpu_model')} × {summary['machine'].get('cpu_count')} CPUs, "
             f"GPU: {summary['machine'].get('gpu')}. Model `{summary['model']}` as deployed in model_repository/.", "",
             f"## `/v1/realtime`, server VAD, real time, about {summary['session_audio_s']} s of English per session "
             f"({summary['gap_s']} s pauses between utterances; the sessions start {summary.get('stagger_s', 0)} s apart)", "",
             "Turn completion: from the end of a turn's speech to its `completed` event (includes the 0.5 s of "
             "silence server VAD waits for). First delta: from the start of the speech to the turn's first "
             "`delta`. WER: the joined `completed` transcripts; upload: the same audio uploaded whole. CPU: "
             "seconds of CPU per second of wall time, tritonserver and gateway together (of 2 cores). Closed: sessions "
             "that ended early (a client's keepalive gives up after 20 s held back). Unfinished: turns whose speech "
             "the server reported started that never reached `completed`. Load avg: the machine's 1-minute "
             "load at the end of the level (other work on the machine included).", ""]
    if summary.get("peer"):
        lines += [f"WhisperLive rows (benchmarks/whisperlive.py; {summary['peer_settings']}): a turn is one of its "
                  "segments; turn completion: from the moment the audio of the segment's end had been sent to the "
                  "first message reporting it `completed`; first delta: from the segment's start audio to the first "
                  "segment, partial or completed, overlapping it; WER: the transcript its own client writes (completed "
                  "segments, then the last partial); WER upload: our gateway's upload of the same audio; CPU: its "
                  "server process. It ran after our stack had stopped, a fresh server per level.", ""]
    lines += ["| server | sessions | refused | turns | turn completion p50 / p95 / max | first delta p50 / p95 | WER "
              "| WER upload | errors | closed | CPU (gateway) | load avg |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.2f} s"  # noqa: E731
    num = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    for r in summary["live"] + (summary.get("peer") or []):
        cpu = f"{r['cpu_per_s']:.2f}" + ("" if r["gateway_cpu_per_s"] is None else f" ({r['gateway_cpu_per_s']:.2f})")
        turns = f"{r['turns']}" + (f" ({r['turns_unfinished']} unfinished)" if r.get("turns_unfinished") else "")
        lines.append(f"| {r['server']} | {r['sessions']} | {r['refused']} | {turns} | "
                     f"{fmt(r['turn_latency_p50_s'])} / {fmt(r['turn_latency_p95_s'])} / {fmt(r['turn_latency_max_s'])} "
                     f"| {fmt(r['first_delta_p50_s'])} / {fmt(r['first_delta_p95_s'])} | {num(r['wer'])} | "
                     f"{num(r['wer_upload'])} | {r['errors']} | {r['closed']} | {cpu} | {r['load_avg']} |")
    lines += ["", "![latency](latency_vs_sessions.png)", ""]
    if summary.get("sse"):
        sse = summary["sse"]
        lines += [f"## `stream=true` upload of {sse['audio_s']} s (baseline: the same upload without `stream`)", "",
                  "| run | one request | stream: first delta | stream: done | WER one request | WER stream |",
                  "|---|---|---|---|---|---|"]
        for i, r in enumerate(sse["runs"], 1):
            lines.append(f"| {i} | {r['one_request_s']:.2f} s | {r['stream_first_delta_s']:.2f} s | "
                         f"{r['stream_done_s']:.2f} s | {r['wer_one_request']:.3f} | {r['wer_stream']:.3f} |")
    lines += ["", "Settings: " + ", ".join(f"`{k}={v}`" for k, v in summary["settings"].items())
              + "".join(f", `{k}={v}` (this run)" for k, v in summary.get("env", {}).items()), ""]
    (out / "report.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,4,8,16", help="concurrent realtime sessions, comma-separated")
    parser.add_argument("--seconds", type=float, default=40.0, help="speech per session")
    parser.add_argument("--gap", type=float, default=1.0, help="silence between utterances, seconds")
    parser.add_argument("--stagger", type=float, default=1.0,
                        help="seconds between two sessions' starts (users arrive one by one; admission control sees "
                             "the load the earlier ones make)")
    parser.add_argument("--model", default="whisper-1", help="whisper-1 = the deployed base model")
    parser.add_argument("--sse", action="store_true", help="also measure the stream=true upload")
    parser.add_argument("--env", action="append", default=[], metavar="GATEWAY_X=V", help="gateway setting for this run")
    parser.add_argument("--upload-seconds", type=float, default=210.0, help="speech in the stream=true upload")
    parser.add_argument("--repeats", type=int, default=2, help="stream=true / one-request pairs")
    parser.add_argument("--peer", choices=["whisperlive"], default=None,
                        help="also run the same levels on the same audio against this peer (after our stack stops)")
    parser.add_argument("--peer-max-clients", type=int, default=4,
                        help="WhisperLive's max_clients (its default 4; further clients get WAIT, counted as refused)")
    stack_arguments(parser)
    args = parser.parse_args(argv)

    from .run import benchmark_repository

    out = results_dir(args, "realtime")
    english = [c for c in load_clips(args.audio_dir) if c.language == "en" and c.kind == "short" and c.duration >= 3]
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="whisper-stream-bench-"))
    sse, env, uploads_by_level, peer = None, {}, {}, None
    levels = [int(n) for n in args.sessions.split(",")]
    if args.peer:
        from .whisperlive import peer_python

        peer_python()  # before the long part: exits when .venv-peers is missing
    try:
        repo, _ = benchmark_repository(tmp, args.repository)
        # one process plays every user: its per-client session limit is raised to the most sessions measured
        env = {"GATEWAY_MAX_STREAMS_PER_CLIENT": str(max(int(n) for n in args.sessions.split(","))),
               **dict(item.split("=", 1) for item in args.env)}
        with running_stack(repo, out / "logs", log, **env) as (triton, gateway, url):
            live = realtime_sessions(url, triton, gateway, english, args.seconds, args.gap, levels, args.model,
                                     args.stagger, uploads_by_level)
            if args.sse:
                upload, upload_ref = joined(english * 8, args.upload_seconds)
                sse = sse_upload(url, upload, upload_ref, args.repeats)
        if args.peer == "whisperlive":  # our stack has stopped: WhisperLive has the machine to itself
            peer = whisperlive_levels(english, args.seconds, args.gap, levels, args.stagger, uploads_by_level,
                                      out / "logs", args.peer_max_clients)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    from gateway.config import Settings

    defaults = Settings(_env_file=None)
    summary = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_description(),
        "model": args.model,
        "session_audio_s": args.seconds,
        "gap_s": args.gap,
        "stagger_s": args.stagger,
        "live": live,
        "peer": peer,
        "peer_settings": PEER_SETTINGS.format(max_clients=args.peer_max_clients) if peer else None,
        "sse": sse,
        "env": env,
        "settings": {k: getattr(defaults, k) for k in (
            "max_streams", "stream_admit_lag_s", "stream_step_s", "stream_beam_size", "stream_final_beam_size",
            "stream_partial_concurrency", "stream_silence_ms", "stream_max_turn_s", "max_triton_concurrency")},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    try:
        plot(live, out / "latency_vs_sessions.png", peer)
    except Exception as exc:  # matplotlib missing: the tables still get written
        log(f"plot skipped: {exc}")
    report(out, summary)
    log(f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
