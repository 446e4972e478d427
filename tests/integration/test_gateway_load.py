"""200 concurrent mixed requests through a real gateway and the session's real Triton.

Short English and Mandarin clips, two ~30 s files, four response formats, and about 10% bad requests
(empty file, text file, header-only WAV, unknown model, unknown language, bad response format), all
sent at once. Every good request carries a distinct input (its clip after its own amount of leading
silence, so no cache can answer one from another), and its transcript must
fit its own clip's reference, and fit it better than any other clip's: a mix-up of responses fails.
Every bad request gets its own 4xx with an OpenAI error body. 200 sent = 200 answered, no 5xx, no
429: the gateway holds the burst (``GATEWAY_MAX_IN_FLIGHT``) and feeds Triton at most
``GATEWAY_MAX_TRITON_CONCURRENCY`` calls at a time, below Triton's ``max_queue_size``.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from client.audio import encode_wav
from benchmarks.common import Clip, matches_own_clip
from tests.helpers import audio_of, clip
from tests.integration.conftest import run_gateway

pytestmark = pytest.mark.integration

N_REQUESTS = 200
URL = "/v1/audio/transcriptions"
SR = 16000
EN_SHORT = ["en/LDC93S1.wav", "en/arctic_a0024.wav", "en/uberi_english.wav", "en/1272-128104-0000.flac",
            "en/1089-134686-0001.wav", "en/LJ002-0035.wav"]  # 1.6-5.9 s
ZH_SHORT = ["zh/BAC009S0724W0121.wav", "zh/BAC009S0002W0122.wav", "zh/BAC009S0002W0123.wav",
            "zh/BAC009S0002W0124.wav", "zh/funasr_asr_example_zh.wav", "zh/cosyvoice_zero_shot_prompt.wav"]
# ~30 s each: built from clips that are not sent short, with 0.8 s of silence between them
EN_MEDIUM = ["en/1995-1837-0001.wav", "en/3570-5694-0005.flac", "en/2300-131720-0008.flac",
             "en/1089-134686-0000.wav"]
ZH_MEDIUM = "long/zh_concat.wav"  # 33 s, in the manifest with its reference
FORMATS = ["json", "text", "srt", "verbose_json"]
TOTAL_TIMEOUT_S = float(os.environ.get("LOAD_TEST_TIMEOUT_S", 600))


_wav = encode_wav


def _concat(files: list[str]) -> np.ndarray:
    gap = np.zeros(int(0.8 * SR), dtype=np.float32)
    return np.concatenate([part for f in files for part in (audio_of(f), gap)])


@dataclass
class Req:
    index: int
    kind: str  # "good" or the bad kind
    files: dict  # multipart files
    data: dict
    clip: Clip | None = None
    fmt: str = "json"
    expect_status: int = 200
    expect_code: str | None = None
    expect_param: str | None = None


def _text_of(response: httpx.Response, fmt: str) -> str:
    if fmt in ("json", "verbose_json"):
        return response.json()["text"]
    if fmt == "srt":
        lines = response.text.splitlines()
        return " ".join(ln for ln in lines if ln.strip() and "-->" not in ln and not ln.strip().isdigit())
    return response.text


def _build_requests(tmp_path: Path) -> tuple[list[Req], list[Clip]]:
    def as_clip(file: str) -> Clip:
        row = clip(file)
        return Clip(file, row["path"], row["language"], row["duration_seconds"], row["reference_text"])

    shorts = [as_clip(f) for f in EN_SHORT + ZH_SHORT]
    en_medium_audio = _concat(EN_MEDIUM)
    en_medium = Clip("medium/en_concat.wav", tmp_path / "en_medium.wav", "en", en_medium_audio.size / SR,
                     " ".join(clip(f)["reference_text"] for f in EN_MEDIUM))
    zh_medium = as_clip(ZH_MEDIUM)
    all_clips = shorts + [en_medium, zh_medium]
    audio = {c.file: audio_of(c.file) for c in shorts + [zh_medium]}
    audio[en_medium.file] = en_medium_audio

    header_only = clip("en/LDC93S1.wav")["path"].read_bytes()[:44]
    bad_kinds = [
        ("empty_file", {"file": ("empty.wav", b"", "audio/wav")}, {}, 400, "empty_file", None),
        ("text_file", {"file": ("notes.mp3", b"Just some text renamed to .mp3\n" * 40, "audio/mpeg")}, {}, 415,
         "unsupported_media", None),
        ("truncated", {"file": ("short.wav", header_only, "audio/wav")}, {}, 400, None, None),
        ("unknown_model", None, {"model": "no-such-model"}, 404, "model_not_found", "model"),
        ("bad_language", None, {"language": "xx"}, 400, None, None),
        ("bad_format", None, {"response_format": "docx"}, 400, None, "response_format"),
    ]
    n_bad = N_REQUESTS // 10
    bad_slots = set(range(5, N_REQUESTS, N_REQUESTS // n_bad))  # spread through the burst
    medium_slots = {17, 111}
    requests: list[Req] = []
    good = 0
    for i in range(N_REQUESTS):
        if i in bad_slots:
            kind, files, data, status, code, param = bad_kinds[len([r for r in requests if r.kind != "good"]) % len(bad_kinds)]
            if files is None:  # a valid file with a bad field
                files = {"file": ("clip.wav", _wav(audio_of("en/LDC93S1.wav")), "audio/wav")}
            requests.append(Req(i, kind, files, {"model": "whisper-1", **data}, expect_status=status,
                                expect_code=code, expect_param=param))
            continue
        if i in medium_slots:
            c = en_medium if i == min(medium_slots) else zh_medium
        else:
            # two English for each Mandarin request
            c = shorts[len(EN_SHORT) + (good // 3) % len(ZH_SHORT)] if good % 3 == 2 else shorts[good % len(EN_SHORT)]
        fmt = FORMATS[i % len(FORMATS)]
        # a distinct input: 2 ms more leading silence than any other request
        samples = np.concatenate([np.zeros(32 * (i + 1), dtype=np.float32), audio[c.file]])
        files = {"file": (Path(c.file).name.rsplit(".", 1)[0] + ".wav", _wav(samples), "audio/wav")}
        good += 1
        requests.append(Req(i, "good", files, {"model": "whisper-1", "language": c.language, "response_format": fmt},
                            clip=c, fmt=fmt))
    return requests, all_clips


async def _send_all(url: str, requests: list[Req]) -> tuple[list[dict], dict]:
    limits = httpx.Limits(max_connections=N_REQUESTS + 10, max_keepalive_connections=N_REQUESTS + 10)
    gauge = re.compile(r"^gateway_triton_waiting (\S+)$", re.M)
    active = re.compile(r"^gateway_triton_active (\S+)$", re.M)
    stats = {"max_waiting": 0.0, "max_active": 0.0}
    async with httpx.AsyncClient(base_url=url, timeout=TOTAL_TIMEOUT_S, limits=limits) as client:
        start = asyncio.Event()

        async def one(req: Req) -> dict:
            await start.wait()
            t0 = time.perf_counter()
            try:
                r = await client.post(URL, files=req.files, data=req.data)
                return {"req": req, "response": r, "status": r.status_code, "latency": time.perf_counter() - t0}
            except httpx.HTTPError as exc:  # counted as lost
                return {"req": req, "response": None, "status": -1, "error": repr(exc),
                        "latency": time.perf_counter() - t0}

        async def watch(done: asyncio.Event) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=5) as metrics_client:
                while not done.is_set():
                    try:
                        text = (await metrics_client.get("/metrics")).text
                        for key, pattern in (("max_waiting", gauge), ("max_active", active)):
                            m = pattern.search(text)
                            if m:
                                stats[key] = max(stats[key], float(m.group(1)))
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.25)

        tasks = [asyncio.create_task(one(r)) for r in requests]
        done = asyncio.Event()
        watcher = asyncio.create_task(watch(done))
        await asyncio.sleep(0.2)  # every task is parked on the event: they all go at once
        t_start = time.perf_counter()
        start.set()
        finished, pending = await asyncio.wait(tasks, timeout=TOTAL_TIMEOUT_S)
        stats["wall_s"] = time.perf_counter() - t_start
        done.set()
        await watcher
        for t in pending:
            t.cancel()
        stats["hung"] = len(pending)
        return [t.result() for t in finished], stats


def test_200_concurrent_mixed_requests(triton, shared_audio, tmp_path):
    requests, all_clips = _build_requests(tmp_path)
    good = [r for r in requests if r.kind == "good"]
    assert len(requests) == N_REQUESTS and len(good) >= 0.85 * N_REQUESTS
    assert len({r.files["file"][1] for r in good}) == len(good), "good inputs must all differ"

    # one client sends the whole burst: its per-client limit (64 by default) is raised to the gateway's
    with run_gateway(triton.grpc_url, tmp_path, GATEWAY_MAX_IN_FLIGHT="256", GATEWAY_MAX_TRITON_CONCURRENCY="16",
                     GATEWAY_MAX_REQUESTS_PER_CLIENT="256", GATEWAY_TRITON_TIMEOUT_S=str(int(TOTAL_TIMEOUT_S))) as url:
        results, stats = asyncio.run(_send_all(url, requests))

    statuses = Counter(r["status"] for r in results)
    audio_s = sum(r["req"].clip.duration for r in results if r["req"].kind == "good" and r["status"] == 200)
    lat = sorted(r["latency"] for r in results if r["req"].kind == "good" and r["status"] == 200)
    print(f"\n[load] sent={len(requests)} answered={len(results)} hung={stats['hung']} wall={stats['wall_s']:.1f} s "
          f"statuses={dict(sorted(statuses.items()))} good={len(good)} bad={len(requests) - len(good)}")
    print(f"[load] held in the gateway waiting for Triton: max {stats['max_waiting']:.0f}; outstanding to Triton: max "
          f"{stats['max_active']:.0f}; audio {audio_s:.0f} s ({audio_s / stats['wall_s']:.1f}x real time); good latency "
          f"p50 {lat[len(lat) // 2]:.1f} s max {lat[-1]:.1f} s" if lat else "[load] no good answers")

    assert stats["hung"] == 0 and len(results) == N_REQUESTS, f"{stats['hung']} requests never answered"
    lost = [r for r in results if r["status"] == -1]
    assert not lost, f"transport failures: {[r['error'] for r in lost[:5]]}"
    assert not [r for r in results if r["status"] >= 500], \
        f"5xx: {[(r['status'], r['response'].text[:200]) for r in results if r['status'] >= 500][:5]}"
    assert statuses.get(429, 0) == 0, "the burst was refused instead of held"

    problems = []
    for r in sorted(results, key=lambda r: r["req"].index):
        req, resp = r["req"], r["response"]
        if req.kind != "good":
            if resp.status_code != req.expect_status:
                problems.append(f"#{req.index} {req.kind}: {resp.status_code} (want {req.expect_status}) {resp.text[:200]}")
                continue
            error = resp.json().get("error")
            if not (isinstance(error, dict) and set(error) == {"message", "type", "param", "code"} and error["message"]):
                problems.append(f"#{req.index} {req.kind}: not an OpenAI error body: {resp.text[:200]}")
            elif req.expect_code and error["code"] != req.expect_code:
                problems.append(f"#{req.index} {req.kind}: code {error['code']!r}, want {req.expect_code!r}")
            elif req.expect_param and error["param"] != req.expect_param:
                problems.append(f"#{req.index} {req.kind}: param {error['param']!r}, want {req.expect_param!r}")
            continue
        if resp.status_code != 200:
            problems.append(f"#{req.index} {req.clip.file}: {resp.status_code} {resp.text[:200]}")
            continue
        text = _text_of(resp, req.fmt)
        ok, why = matches_own_clip(req.clip, text, all_clips)
        if not ok:
            problems.append(f"#{req.index} {req.clip.file} ({req.fmt}): {why}")
        if req.fmt == "verbose_json":
            body = resp.json()
            if not body["segments"] or abs(body["duration"] - req.clip.duration) > 1.0:
                problems.append(f"#{req.index} {req.clip.file}: verbose_json duration {body['duration']} / segments "
                                f"{len(body['segments'])}")
    print(f"[load] problems: {len(problems)}")
    assert not problems, "\n".join(problems[:20])
