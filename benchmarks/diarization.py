"""Diarization benchmark (``make bench-diarize``): DER per number of speakers, speaker-count accuracy,
and the latency diarization adds to a 10-minute upload, on the live stack (tritonserver with the
``whisper``, ``whisper-tiny-en`` and ``speaker`` models, and the gateway).

- Conversations of 2, 3 and 4 speakers are built from real LibriSpeech / LJ Speech / JFK / VoxPopuli
  recordings (``benchmarks/conversations.py``: short turns, pauses and overlaps; ground truth by
  construction). Each is sent to the gateway with ``response_format=diarized_json`` (whisper-tiny-en:
  the speakers do not depend on the Whisper model) and scored two ways with the standard DER
  (``benchmarks/der.py``, 0.25 s collar, overlaps scored): the speaker turns the gateway clustered
  from the speaker model's windows (the same code the gateway runs, on the speaker model's answer),
  and the speakers of the transcript's segments as the client gets them.
- A 10-minute 4-speaker conversation is transcribed with the default model, plain ``json`` and
  ``diarized_json`` in turn; the added latency is the difference of the medians.

    python -m benchmarks.diarization [--per-count 5] [--seconds 120] [--long-seconds 600] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks import conversations
from benchmarks.common import DEFAULT_AUDIO, ROOT, machine_description, running_stack
from benchmarks.der import der
from client.audio import encode_wav

COUNTS = (2, 3, 4)
TINY = "whisper-tiny-en"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def conversation_set(files: dict, per_count: int, seconds: float, seed: int) -> list[tuple[int, int, object]]:
    rng = np.random.default_rng(seed)
    names = sorted(files)
    out = []
    for k in COUNTS:
        for i in range(per_count):
            speakers = [str(s) for s in rng.choice(names, size=k, replace=False)]
            out.append((k, i, conversations.build(speakers, files, seconds=seconds, seed=seed * 1000 + k * 100 + i)))
    return out


def window_turns(triton_url: str, audio: np.ndarray) -> tuple[list[tuple[float, float, str]], float]:
    """The speaker model's windows for ``audio``, clustered exactly as the gateway does."""
    from gateway import diarization
    from gateway.config import Settings
    from gateway.triton import TritonClient

    settings = Settings(_env_file=None)

    async def run():
        client = TritonClient(triton_url)
        try:
            start = time.perf_counter()
            windows = await client.speaker_windows(settings.diarization_model, audio)
            elapsed = time.perf_counter() - start
        finally:
            await client.close()
        found = diarization.find_speakers(windows, {}, diarization.DiarizeOptions(max_speakers=settings.max_speakers),
                                          settings.diarization_threshold)
        return [(t.start, t.end, found.labels[t.speaker]) for t in found.turns], elapsed

    return asyncio.run(run())


def score_conversations(url: str, triton_url: str, convs: list) -> list[dict]:
    rows = []
    with httpx.Client(base_url=url, timeout=900) as http:
        for k, i, conv in convs:
            wav = encode_wav(conv.audio)
            start = time.perf_counter()
            r = http.post("/v1/audio/transcriptions", files={"file": ("c.wav", wav)},
                          data={"model": TINY, "response_format": "diarized_json"})
            elapsed = time.perf_counter() - start
            r.raise_for_status()
            segments = r.json()["segments"]
            seg_der = der(conv.reference, [(s["start"], s["end"], s["speaker"]) for s in segments])
            turns, speaker_s = window_turns(triton_url, conv.audio)
            win_der = der(conv.reference, turns)
            found = len({s for *_, s in turns})
            overlap = sum(e - s for s, e, _ in conv.reference) - _union(conv.reference)
            rows.append({"speakers": k, "index": i, "audio_s": round(conv.duration, 1),
                         "speech_s": round(_union(conv.reference), 1), "overlap_s": round(overlap, 1),
                         "turns": len(conv.pieces), "found": found, "found_in_segments": len({s["speaker"] for s in segments}),
                         "der_windows": round(win_der.der, 4), "missed": round(win_der.missed / win_der.total, 4),
                         "false_alarm": round(win_der.false_alarm / win_der.total, 4),
                         "confusion": round(win_der.confusion / win_der.total, 4),
                         "der_segments": round(seg_der.der, 4), "request_s": round(elapsed, 2),
                         "speaker_model_s": round(speaker_s, 2), "who": conv.speakers})
            log(f"{k} speakers #{i}: DER windows {win_der.der:.3f} segments {seg_der.der:.3f}, found {found}")
    return rows


def _union(turns: list[tuple[float, float, str]]) -> float:
    total, end = 0.0, -1.0
    for s, e, _ in sorted(turns):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def latency(url: str, triton_url: str, conv, repeats: int) -> dict:
    wav = encode_wav(conv.audio)
    plain, diarized = [], []
    with httpx.Client(base_url=url, timeout=1800) as http:
        for _ in range(repeats):
            for fmt, sink in (("json", plain), ("diarized_json", diarized)):
                start = time.perf_counter()
                r = http.post("/v1/audio/transcriptions", files={"file": ("long.wav", wav)},
                              data={"model": "whisper-1", "response_format": fmt})
                r.raise_for_status()
                sink.append(time.perf_counter() - start)
                log(f"10-min {fmt}: {sink[-1]:.1f} s")
            segments = r.json()["segments"]
    speakers = {s["speaker"] for s in segments}
    scored = der(conv.reference, [(s["start"], s["end"], s["speaker"]) for s in segments])
    p, d = statistics.median(plain), statistics.median(diarized)
    return {"audio_s": round(conv.duration, 1), "plain_s": [round(x, 2) for x in plain],
            "diarized_s": [round(x, 2) for x in diarized], "plain_median_s": round(p, 2),
            "diarized_median_s": round(d, 2), "added_s": round(d - p, 2), "added_pct": round(100 * (d - p) / p, 1),
            "speakers_found": len(speakers), "speakers_true": len(conv.speakers), "der_segments": round(scored.der, 4),
            "speaker_model_s": round(window_turns(triton_url, conv.audio)[1], 2)}


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for k in COUNTS:
        sel = [r for r in rows if r["speakers"] == k]
        if not sel:
            continue
        out.append({"speakers": k, "conversations": len(sel),
                    "der_windows": round(float(np.mean([r["der_windows"] for r in sel])), 4),
                    "der_segments": round(float(np.mean([r["der_segments"] for r in sel])), 4),
                    "missed": round(float(np.mean([r["missed"] for r in sel])), 4),
                    "false_alarm": round(float(np.mean([r["false_alarm"] for r in sel])), 4),
                    "confusion": round(float(np.mean([r["confusion"] for r in sel])), 4),
                    "count_accuracy": round(sum(r["found"] == k for r in sel) / len(sel), 3),
                    "count_accuracy_segments": round(sum(r["found_in_segments"] == k for r in sel) / len(sel), 3)})
    return out


def report(out: Path, summary: dict) -> None:
    m = summary["machine"]
    lines = [f"# Diarization benchmark ({summary['date']})", "",
             f"Machine: {m.get('cpu_model')} × {m.get('cpu_count')} CPUs, GPU: {m.get('gpu')}. Speaker model "
             "`speaker` (Resemblyzer GE2E from its PyPI wheel, numpy), clustering threshold "
             f"{summary['settings']['diarization_threshold']}.", "",
             f"## DER per number of speakers ({summary['per_count']} conversations of about "
             f"{summary['seconds']:.0f} s each; collar 0.25 s, overlaps scored)", "",
             "DER (windows): the speaker turns clustered from the speaker model's windows. DER (segments): the "
             "`diarized_json` segments as the client gets them (Whisper's segment edges, split where the speaker "
             "changes at times estimated from the text).", "",
             "| speakers | DER (windows) | missed | false alarm | confusion | DER (segments) | count right (windows / segments) |",
             "|---|---|---|---|---|---|---|"]
    for s in summary["by_count"]:
        lines.append(f"| {s['speakers']} | **{100 * s['der_windows']:.1f}%** | {100 * s['missed']:.1f}% | "
                     f"{100 * s['false_alarm']:.1f}% | {100 * s['confusion']:.1f}% | {100 * s['der_segments']:.1f}% | "
                     f"{100 * s['count_accuracy']:.0f}% / {100 * s['count_accuracy_segments']:.0f}% |")
    lines += ["", "Per conversation:", "",
              "| speakers | # | audio | overlap | turns | found | DER windows | DER segments | speaker model | request (tiny) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lines.append(f"| {r['speakers']} | {r['index']} | {r['audio_s']} s | {r['overlap_s']} s | {r['turns']} | "
                     f"{r['found']} | {100 * r['der_windows']:.1f}% | {100 * r['der_segments']:.1f}% | "
                     f"{r['speaker_model_s']} s | {r['request_s']} s |")
    lat = summary.get("latency")
    if lat:
        lines += ["", f"## Latency added on a {lat['audio_s'] / 60:.1f}-minute {lat['speakers_true']}-speaker upload "
                  "(default model `whisper`, base)", "",
                  "| | runs | median |", "|---|---|---|",
                  f"| `json` | {', '.join(f'{x} s' for x in lat['plain_s'])} | {lat['plain_median_s']} s |",
                  f"| `diarized_json` | {', '.join(f'{x} s' for x in lat['diarized_s'])} | {lat['diarized_median_s']} s |",
                  "", f"Added: **{lat['added_s']} s ({lat['added_pct']:+.1f}%)**; speakers found "
                  f"{lat['speakers_found']} of {lat['speakers_true']}, DER (segments) {100 * lat['der_segments']:.1f}%; "
                  f"the speaker model alone: {lat['speaker_model_s']} s. Whisper and the speaker model run at once "
                  "(one upload goes to one Whisper instance, one core; the speaker model uses the other)."]
    lines += ["", "Settings: " + ", ".join(f"`{k}={v}`" for k, v in summary["settings"].items()), ""]
    (out / "report.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-count", type=int, default=5, help="conversations per number of speakers")
    parser.add_argument("--seconds", type=float, default=120.0, help="length of each conversation")
    parser.add_argument("--long-seconds", type=float, default=600.0, help="the latency upload (0 = skip)")
    parser.add_argument("--repeats", type=int, default=2, help="json / diarized_json pairs on the long upload")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from gateway.config import Settings

    from .run import machine_tag

    if not (args.audio_dir / "manifest.tsv").is_file():
        raise SystemExit(f"no manifest.tsv in {args.audio_dir} (set --audio-dir or WHISPER_TEST_AUDIO)")
    files = conversations.speaker_files(args.audio_dir)
    convs = conversation_set(files, args.per_count, args.seconds, args.seed)
    out = args.out or ROOT / "benchmarks" / "results" / f"{dt.date.today().isoformat()}-{machine_tag()}-diarization"
    out.mkdir(parents=True, exist_ok=True)
    with running_stack(ROOT / "model_repository", out / "logs", log,
                       models=("whisper", TINY, "speaker")) as (triton, _, url):
        rows = score_conversations(url, triton.grpc_url, convs)
        lat = None
        if args.long_seconds > 0:
            names = sorted(files)
            who = [str(s) for s in np.random.default_rng(args.seed + 7).choice(names, size=4, replace=False)]
            long = conversations.build(who, files, seconds=args.long_seconds, seed=args.seed + 7)
            lat = latency(url, triton.grpc_url, long, args.repeats)
    defaults = Settings(_env_file=None)
    summary = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_description(),
               "per_count": args.per_count, "seconds": args.seconds, "by_count": summarise(rows), "rows": rows,
               "latency": lat, "settings": {k: getattr(defaults, k) for k in ("diarization_model",
                                                                            "diarization_threshold", "max_speakers")}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    report(out, summary)
    log(f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
