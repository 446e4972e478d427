"""The WhisperLive peer's client (benchmarks/whisperlive.py) against a scripted stand-in for its server:
the dict it returns, its latencies on the audio timeline, the transcript and the end of a session."""

from __future__ import annotations

import asyncio
import json

import numpy as np
from websockets.asyncio.server import serve

from benchmarks.whisperlive import RATE, whisperlive_session


def seg(start: float, end: float, text: str, completed: bool) -> dict:
    return {"start": f"{start:.3f}", "end": f"{end:.3f}", "text": text, "completed": completed}


# (audio seconds received before the message goes out, the segments it carries)
SCRIPT = [
    (0.6, [seg(0.0, 0.5, " hello", False)]),
    (1.6, [seg(0.0, 0.5, " hello", True), seg(1.0, 1.5, " world", False)]),
    (1.8, [seg(0.0, 0.5, " hello", True), seg(1.0, 1.5, " world", True)]),
]


def speech() -> np.ndarray:
    """0.5 s of sound, 0.5 s of silence, 0.5 s of sound, 0.3 s of silence."""
    tone = 0.1 * np.sin(np.arange(RATE // 2) / 5).astype(np.float32)
    return np.concatenate([tone, np.zeros(RATE // 2), tone, np.zeros(int(0.3 * RATE))]).astype(np.float32)


async def scripted(ws, log: dict) -> None:
    options = json.loads(await ws.recv())
    log["options"] = options
    if log.get("full"):
        await ws.send(json.dumps({"uid": options["uid"], "status": "WAIT", "message": 2.5}))
        return
    await ws.send(json.dumps({"uid": options["uid"], "message": "SERVER_READY", "backend": "faster_whisper"}))
    received, pending = 0, list(SCRIPT)
    async for frame in ws:
        if frame == b"END_OF_AUDIO":
            log["end_of_audio"] = True
            break
        received += len(frame) // 4
        while pending and received / RATE >= pending[0][0] - 1e-6:
            await ws.send(json.dumps({"uid": options["uid"], "segments": pending.pop(0)[1]}))


async def run(full: bool = False) -> tuple[dict, dict]:
    log: dict = {"full": full}
    async with serve(lambda ws: scripted(ws, log), "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        result = await asyncio.wait_for(whisperlive_session(f"ws://127.0.0.1:{port}", speech()), 20)
        await asyncio.sleep(0.2)
    return result, log


async def test_session_reports_segments_on_the_audio_timeline():
    result, log = await run()
    assert log["options"]["language"] == "en" and log["options"]["use_vad"] is True
    assert log.get("end_of_audio")
    assert result["refused"] is None and result["errors"] == [] and result["closed"] is None
    assert result["text"] == "hello world"
    assert result["turns"] == 2
    # hello ends at 0.5 s and is completed once 1.6 s were sent; world ends at 1.5 s, completed at 1.8 s
    hello, world = result["turn_latency"]
    assert 1.0 <= hello < 1.4 and 0.2 <= world < 0.6
    # each first shows up 0.6 s after its start
    assert all(0.5 <= d < 0.9 for d in result["first_delta"])


async def test_a_full_server_is_a_refusal():
    result, _ = await run(full=True)
    assert result["refused"] == "WAIT 2.5"
    assert result["turns"] == 0 and result["text"] == ""
