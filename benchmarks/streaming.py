"""Streaming benchmark (``make bench-stream``): live WebSocket streams and ``stream=true`` uploads.

1. ``/v1/stream`` at real-time pace, 1, 2, 4... concurrent streams of the same ~30 s of English speech:
   per committed word, the time from "its audio had been sent" to "its final event arrived" (median,
   p95), the first partial, and the committed text's WER against the reference.
2. ``stream=true`` on a long upload (LibriSpeech clips joined with 1 s pauses): time to the first
   ``transcript.text.delta`` and to ``transcript.text.done``, against the same upload without ``stream``
   (the baseline, in the same run), with both texts' WER.

Writes ``benchmarks/results/<date>-<machine>-streaming/``: report.md, summary.json, latency_vs_streams.png.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import audio_of, error_rate, load_clips, machine_description, results_dir, running_stack, stack_arguments

RATE = 16000


def log(msg: str) -> None:
    print(f"[stream-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def joined(clips, seconds: float, gap_s: float = 1.0) -> tuple[np.ndarray, str]:
    """English clips, in manifest order, joined with ``gap_s`` of silence until ``seconds`` are reached."""
    parts, refs, total = [], [], 0.0
    for clip in clips:
        if total >= seconds:
            break
        parts += [audio_of(str(clip.path)), np.zeros(int(gap_s * RATE), dtype=np.float32)]
        refs.append(clip.reference)
        total += clip.duration + gap_s
    return np.concatenate(parts), " ".join(refs)


def live_streams(url: str, audio: np.ndarray, reference: str, levels: list[int]) -> list[dict]:
    from client.stream import percentile, stream_many

    rows = []
    for n in levels:
        log(f"/v1/stream: {n} concurrent stream(s) of {len(audio) / RATE:.1f} s at real time")
        results = asyncio.run(stream_many(url.replace("http", "ws", 1) + "/v1/stream", [audio] * n, speed=1.0,
                                          language="en", tail_silence_s=2.0))
        latencies = [x for r in results for x in r.latencies]
        rows.append({
            "streams": n,
            "words": len(latencies),
            "latency_median_s": round(percentile(latencies, 50), 3),
            "latency_p95_s": round(percentile(latencies, 95), 3),
            "latency_max_s": round(max(latencies), 3) if latencies else None,
            "first_partial_s": round(float(np.median([r.first_partial_s for r in results if r.first_partial_s])), 3),
            "wer": round(float(np.mean([error_rate(reference, r.final_text, "en") for r in results])), 4),
            "errors": sum(1 for r in results if r.error),
        })
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


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = [r["streams"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(streams, [r["latency_median_s"] for r in rows], "o-", label="median")
    ax.plot(streams, [r["latency_p95_s"] for r in rows], "s--", label="p95")
    ax.set_xlabel("concurrent real-time streams")
    ax.set_ylabel("word latency (s): audio sent → final event")
    ax.set_xticks(streams)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("/v1/stream word latency")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(out: Path, summary: dict) -> None:
    lines = [f"# Streaming benchmark ({summary['date']})", "",
             f"Machine: {summary['machine'].get('cpu_model')} × {summary['machine'].get('cpu_count')} CPUs, "
             f"GPU: {summary['machine'].get('gpu')}. Model `whisper` (base) as deployed in model_repository/.", "",
             f"## `/v1/stream`, real time, {summary['live_audio_s']} s of English speech per stream", "",
             "| streams | words | median latency | p95 latency | max | first partial | WER | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary["live"]:
        lines.append(f"| {r['streams']} | {r['words']} | {r['latency_median_s']:.2f} s | {r['latency_p95_s']:.2f} s | "
                     f"{r['latency_max_s']:.2f} s | {r['first_partial_s']:.2f} s | {r['wer']:.3f} | {r['errors']} |")
    sse = summary["sse"]
    lines += ["", "![latency](latency_vs_streams.png)", "",
              f"## `stream=true` upload of {sse['audio_s']} s (baseline: the same upload without `stream`)", "",
              "| run | one request | stream: first delta | stream: done | WER one request | WER stream |",
              "|---|---|---|---|---|---|"]
    for i, r in enumerate(sse["runs"], 1):
        lines.append(f"| {i} | {r['one_request_s']:.2f} s | {r['stream_first_delta_s']:.2f} s | {r['stream_done_s']:.2f} s "
                     f"| {r['wer_one_request']:.3f} | {r['wer_stream']:.3f} |")
    lines += ["", "Settings: " + ", ".join(f"`{k}={v}`" for k, v in summary["settings"].items()), ""]
    (out / "report.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,2,4", help="concurrent live streams to measure, comma-separated")
    parser.add_argument("--live-seconds", type=float, default=30.0, help="speech per live stream")
    parser.add_argument("--upload-seconds", type=float, default=210.0, help="speech in the stream=true upload")
    parser.add_argument("--repeats", type=int, default=2, help="stream=true / one-request pairs")
    stack_arguments(parser)
    args = parser.parse_args(argv)

    from .run import benchmark_repository

    out = results_dir(args, "streaming")
    english = [c for c in load_clips(args.audio_dir) if c.language == "en" and c.kind == "short" and c.duration >= 3]
    live_audio, live_ref = joined(english, args.live_seconds)
    upload, upload_ref = joined(english * 8, args.upload_seconds)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="whisper-stream-bench-"))
    try:
        repo, _ = benchmark_repository(tmp, args.repository)
        levels = [int(n) for n in args.streams.split(",")]
        # one process plays every listener: its per-client stream limit is raised to the most streams measured
        with running_stack(repo, out / "logs", log, GATEWAY_MAX_STREAMS_PER_CLIENT=str(max(levels))) as (_, _, url):
            live = live_streams(url, live_audio, live_ref, levels)
            sse = sse_upload(url, upload, upload_ref, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    from gateway.config import Settings

    defaults = Settings(_env_file=None)
    summary = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_description(),
        "live_audio_s": round(len(live_audio) / RATE, 2),
        "live": live,
        "sse": sse,
        "settings": {k: getattr(defaults, k) for k in ("stream_step_s", "stream_beam_size", "stream_trim_s",
                                                        "sse_chunk_seconds", "sse_chunks_ahead")},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    try:
        plot(live, out / "latency_vs_streams.png")
    except Exception as exc:  # matplotlib missing: the tables still get written
        log(f"plot skipped: {exc}")
    report(out, summary)
    log(f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
