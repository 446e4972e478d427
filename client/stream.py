"""Stream a file (or a microphone) to the gateway's ``/v1/stream`` WebSocket and print the events.

    python -m client stream FILE [--url ws://localhost:8080/v1/stream] [--speed 1] [--language en]
    python -m client stream FILE --streams 4 --report      # 4 concurrent copies, latency summary
    python -m client stream --mic [--mic-device default --mic-format pulse]

The file is decoded locally to 16 kHz mono and sent as ``pcm_s16le`` frames of ``--chunk-ms`` at real
time (``--speed 1``), ``--speed N`` times faster, or ``--speed 0`` as fast as possible.

Latency (``stream_file``/``--report``): for every committed word, the time from the moment the audio up
to the word's end had been sent to the moment its ``final`` event arrived. Reusable from benchmarks:
``asyncio.run(stream_file(url, audio, speed=1.0))`` returns a ``StreamResult``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from whisper_triton.protocol import SAMPLE_RATE

DEFAULT_URL = "ws://localhost:8080/v1/stream"


@dataclass
class StreamResult:
    text: str = ""  # the ``done`` event's text (the whole committed transcript)
    words: list[dict] = field(default_factory=list)  # every committed word, in order
    latencies: list[float] = field(default_factory=list)  # per committed word, seconds (see module doc)
    events: list[dict] = field(default_factory=list)
    error: Optional[str] = None
    close_code: Optional[int] = None
    close_reason: str = ""
    wall_s: float = 0.0
    audio_s: float = 0.0
    first_partial_s: Optional[float] = None  # wall time from start to the first partial event

    @property
    def final_text(self) -> str:
        return "".join(w["word"] for w in self.words).strip()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(latencies: list[float]) -> dict[str, float]:
    return {"words": len(latencies), "median_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95),
            "mean_s": statistics.fmean(latencies) if latencies else float("nan"),
            "max_s": max(latencies) if latencies else float("nan")}


def to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


async def stream_file(url: str, audio: np.ndarray, *, speed: float = 1.0, language: str = "",
                      task: str = "transcribe", chinese: str = "none", chunk_ms: int = 100,
                      model: str = "", on_event: Optional[Callable[[dict], None]] = None,
                      headers: Optional[dict] = None, tail_silence_s: float = 0.0,
                      timeout_s: float = 300.0) -> StreamResult:
    """Send ``audio`` (16 kHz mono float32) to ``url`` at ``speed`` x real time; collect the events."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    if tail_silence_s > 0:
        audio = np.concatenate([audio, np.zeros(int(tail_silence_s * SAMPLE_RATE), dtype=np.float32)])
    result = StreamResult(audio_s=len(audio) / SAMPLE_RATE)
    chunk = max(1, int(SAMPLE_RATE * chunk_ms / 1000))
    start_msg: dict[str, Any] = {"type": "start", "language": language, "task": task, "chinese": chinese,
                                 "sample_rate": SAMPLE_RATE, "format": "pcm_s16le"}
    if model:
        start_msg["model"] = model
    sent_at: list[tuple[float, float]] = []  # (audio seconds sent so far, wall time)

    def sent_time(audio_t: float) -> float:
        """Wall time when the audio up to ``audio_t`` had been sent."""
        for audio_end, wall in sent_at:
            if audio_end >= audio_t - 1e-6:
                return wall
        return sent_at[-1][1] if sent_at else t0

    async with connect(url, max_size=None, additional_headers=headers, open_timeout=30) as ws:
        t0 = time.perf_counter()

        async def sender() -> None:
            await ws.send(json.dumps(start_msg))
            for i in range(0, len(audio), chunk):
                piece = audio[i:i + chunk]
                if speed > 0:
                    due = t0 + (i + len(piece)) / SAMPLE_RATE / speed  # a chunk leaves once it is "recorded"
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await ws.send(to_pcm16(piece))
                sent_at.append(((i + len(piece)) / SAMPLE_RATE, time.perf_counter()))
            await ws.send(json.dumps({"type": "stop"}))

        async def receiver() -> None:
            async for raw in ws:
                now = time.perf_counter()
                event = json.loads(raw)
                event["_t"] = round(now - t0, 3)
                result.events.append(event)
                kind = event.get("type")
                if kind == "partial" and result.first_partial_s is None:
                    result.first_partial_s = now - t0
                elif kind == "final":
                    for word in event.get("words", []):
                        result.words.append(word)
                        result.latencies.append(now - sent_time(float(word["end"])))
                elif kind == "error":
                    result.error = event.get("message", "")
                elif kind == "done":
                    result.text = event.get("text", "")
                if on_event is not None:
                    on_event(event)

        send_task = asyncio.create_task(sender())
        try:
            await asyncio.wait_for(receiver(), timeout=timeout_s)
        except ConnectionClosed:
            pass
        finally:
            if not send_task.done():
                send_task.cancel()
            try:
                await send_task
            except (asyncio.CancelledError, ConnectionClosed):
                pass
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason or ""
        result.wall_s = time.perf_counter() - t0
    return result


async def stream_many(url: str, audios: list[np.ndarray], **kwargs: Any) -> list[StreamResult]:
    """Concurrent streams (one WebSocket each), started together."""
    return list(await asyncio.gather(*(stream_file(url, a, **kwargs) for a in audios)))


async def stream_microphone(url: str, device: str, input_format: str, language: str, task: str, chinese: str,
                            on_event: Callable[[dict], None], seconds: float = 0.0) -> None:
    """Capture with FFmpeg's device demuxers (PyAV: pulse/alsa/avfoundation/dshow) and stream it."""
    import av
    from websockets.asyncio.client import connect

    queue: asyncio.Queue[Optional[bytes]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def capture() -> None:
        try:
            with av.open(device, format=input_format) as container:
                resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
                began = time.monotonic()
                for frame in container.decode(audio=0):
                    for out in resampler.resample(frame):
                        loop.call_soon_threadsafe(queue.put_nowait, out.to_ndarray().astype("<i2").tobytes())
                    if seconds and time.monotonic() - began > seconds:
                        break
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "language": language, "task": task, "chinese": chinese,
                                  "sample_rate": SAMPLE_RATE, "format": "pcm_s16le"}))

        async def receiver() -> None:
            async for raw in ws:
                on_event(json.loads(raw))

        recv = asyncio.create_task(receiver())
        capture_task = loop.run_in_executor(None, capture)
        try:
            while (data := await queue.get()) is not None:
                await ws.send(data)
        except (KeyboardInterrupt, asyncio.CancelledError):
            pass
        await ws.send(json.dumps({"type": "stop"}))
        await recv
        await capture_task


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m client stream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="audio/video file (anything FFmpeg decodes)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"the gateway's stream endpoint (default {DEFAULT_URL})")
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time, N = N times faster, 0 = no pacing")
    p.add_argument("--language", default="", help="language code; empty = detect")
    p.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    p.add_argument("--chinese", default="none", help="Chinese script: s2twp (Traditional), t2s (Simplified), none")
    p.add_argument("--model", default="", help="Triton model (default: the gateway's)")
    p.add_argument("--chunk-ms", type=int, default=100)
    p.add_argument("--streams", type=int, default=1, help="run this many concurrent copies of the stream")
    p.add_argument("--json", action="store_true", help="print every event as a JSON line")
    p.add_argument("--report", action="store_true", help="print per-word latency statistics at the end")
    p.add_argument("--api-key", default="", help="Bearer token when the gateway requires one")
    p.add_argument("--tail-silence", type=float, default=0.0, help="seconds of silence appended to the file")
    p.add_argument("--mic", action="store_true", help="stream the microphone instead of a file (Ctrl-C stops)")
    p.add_argument("--mic-device", default="default")
    p.add_argument("--mic-format", default="pulse", help="FFmpeg input device: pulse, alsa, avfoundation, dshow")
    p.add_argument("--seconds", type=float, default=0.0, help="with --mic: stop after this many seconds")
    return p


def _printer(args: argparse.Namespace, tag: str = "") -> Callable[[dict], None]:
    def show(event: dict) -> None:
        if args.json:
            print(json.dumps({**event, **({"stream": tag} if tag else {})}, ensure_ascii=False), flush=True)
            return
        kind = event.get("type")
        prefix = f"[{tag}] " if tag else ""
        if kind == "partial":
            if event.get("text"):
                print(f"{prefix}~ {event['text']}", file=sys.stderr, flush=True)
        elif kind == "final":
            span = event["words"]
            print(f"{prefix}[{span[0]['start']:7.2f} -> {span[-1]['end']:7.2f}] {event['text']}", flush=True)
        elif kind == "error":
            print(f"{prefix}error: {event.get('message')}", file=sys.stderr, flush=True)
        elif kind == "done":
            print(f"{prefix}done: {event.get('text', '')}", flush=True)
    return show


def main_stream(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.mic:
        try:
            asyncio.run(stream_microphone(args.url, args.mic_device, args.mic_format, args.language, args.task,
                                          args.chinese, _printer(args), args.seconds))
        except KeyboardInterrupt:
            pass
        return 0
    if not args.file:
        print("give a FILE or --mic", file=sys.stderr)
        return 2
    from .audio import AudioDecodeError, decode_file

    try:
        audio = decode_file(args.file)
    except (AudioDecodeError, OSError) as exc:
        print(f"{args.file}: error: {exc}", file=sys.stderr)
        return 1
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    kwargs = dict(speed=args.speed, language=args.language, task=args.task, chinese=args.chinese,
                  chunk_ms=args.chunk_ms, model=args.model, headers=headers, tail_silence_s=args.tail_silence)

    async def run() -> list[StreamResult]:
        if args.streams <= 1:
            return [await stream_file(args.url, audio, on_event=_printer(args), **kwargs)]
        return list(await asyncio.gather(*(stream_file(args.url, audio, on_event=_printer(args, str(i)), **kwargs)
                                           for i in range(args.streams))))

    results = asyncio.run(run())
    failed = [r for r in results if r.error or (r.close_code not in (None, 1000))]
    for r in failed:
        print(f"stream closed with {r.close_code} {r.close_reason}: {r.error or ''}", file=sys.stderr)
    if args.report:
        latencies = [x for r in results for x in r.latencies]
        stats = summarize(latencies)
        print(json.dumps({"streams": len(results), "speed": args.speed, "audio_s": results[0].audio_s,
                          "latency": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items()},
                          "wall_s": round(max(r.wall_s for r in results), 2)}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_stream())
