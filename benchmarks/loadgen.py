"""One HTTP load generator for every system: httpx (async), a fixed concurrency, real clips.

Every response is checked against its own clip (``common.matches_own_clip``): a wrong or swapped
transcript counts as an error, as does any non-200 answer or a transport failure.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass

import httpx
import numpy as np

from .common import Clip, error_rate, matches_own_clip


@dataclass
class Result:
    file: str
    language: str
    duration: float
    latency_s: float
    status: int
    ok: bool
    text: str
    error: str = ""


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarise(results: list[Result], wall_s: float, clips: list[Clip]) -> dict:
    done = [r for r in results if r.status == 200]
    audio = sum(r.duration for r in done)
    lat = [r.latency_s for r in done]
    en = [r for r in done if r.language == "en"]
    zh = [r for r in done if r.language == "zh"]
    refs = {c.file: c.reference for c in clips}
    return {
        "requests": len(results),
        "completed": len(done),
        "errors": sum(1 for r in results if not r.ok),
        "http_errors": sum(1 for r in results if r.status != 200),
        "mismatches": sum(1 for r in results if r.status == 200 and not r.ok),
        "wall_s": round(wall_s, 3),
        "audio_s": round(audio, 3),
        "rtfx": round(audio / wall_s, 3) if wall_s > 0 else None,
        "requests_per_s": round(len(done) / wall_s, 3) if wall_s > 0 else None,
        "latency_p50_s": percentile(lat, 50),
        "latency_p95_s": percentile(lat, 95),
        "latency_p99_s": percentile(lat, 99),
        "latency_mean_s": float(np.mean(lat)) if lat else None,
        "wer_en": error_rate([refs[r.file] for r in en], [r.text for r in en], "en") if en else None,
        "cer_zh": error_rate([refs[r.file] for r in zh], [r.text for r in zh], "zh") if zh else None,
        "error_examples": [f"{r.file}: {r.error}" for r in results if not r.ok][:5],
    }


async def _load(url: str, requests: list[Clip], concurrency: int, payloads: dict[str, bytes], timeout_s: float,
                clips: list[Clip], model: str) -> tuple[list[Result], float]:
    queue: asyncio.Queue = asyncio.Queue()
    for clip in requests:
        queue.put_nowait(clip)
    results: list[Result] = []
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:

        async def worker() -> None:
            while True:
                try:
                    clip = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                files = {"file": (clip.path.name, payloads[clip.file], "application/octet-stream")}
                data = {"model": model, "language": clip.language, "response_format": "json"}
                started = time.perf_counter()
                status, text, error = 0, "", ""
                try:
                    response = await client.post("/v1/audio/transcriptions", files=files, data=data)
                    status = response.status_code
                    if status == 200:
                        text = response.json().get("text", "")
                    else:
                        error = f"HTTP {status}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                latency = time.perf_counter() - started
                ok = status == 200
                if ok:
                    ok, error = matches_own_clip(clip, text, clips)
                results.append(Result(clip.file, clip.language, clip.duration, latency, status, ok, text, error))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return results, wall


def request_list(clips: list[Clip], concurrency: int, min_requests: int, seed: int) -> list[Clip]:
    """The clips in a shuffled order, repeated (whole passes) until there are at least
    ``max(min_requests, 4 * concurrency)``: enough that the drain at the end (fewer than ``concurrency``
    requests in flight) is a small part of the measurement."""
    rng = random.Random(seed)
    out: list[Clip] = []
    while len(out) < max(min_requests, 4 * concurrency, len(clips)):
        batch = list(clips)
        rng.shuffle(batch)
        out += batch
    return out


def sweep(url: str, clips: list[Clip], concurrencies: list[int], *, min_requests: int = 0, timeout_s: float = 900.0,
          model: str = "whisper-1", seed: int = 0, warmup: bool = True, log=print) -> dict:
    """Run each concurrency once over ``clips``; returns {concurrency: summary (+ per-request rows)}."""
    payloads = {c.file: c.path.read_bytes() for c in clips}
    out = {}
    if warmup:
        asyncio.run(_load(url, clips[:1], 1, payloads, timeout_s, clips, model))
    for c in concurrencies:
        requests = request_list(clips, c, min_requests, seed + c)
        results, wall = asyncio.run(_load(url, requests, c, payloads, timeout_s, clips, model))
        summary = summarise(results, wall, clips)
        summary["rows"] = [asdict(r) for r in results]
        out[c] = summary
        log(f"    c={c:<3d} {summary['completed']}/{summary['requests']} ok, errors {summary['errors']}, RTFx {summary['rtfx']}, "
            f"p50 {summary['latency_p50_s']:.2f}s p95 {summary['latency_p95_s']:.2f}s, WER {_fmt(summary['wer_en'])} CER {_fmt(summary['cer_zh'])}"
            if summary["completed"] else f"    c={c}: no request completed ({summary['error_examples'][:1]})")
    return out


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"
