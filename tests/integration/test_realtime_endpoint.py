"""``/v1/realtime`` on the live stack with the official ``openai`` SDK's realtime client: real tritonserver,
the real gateway under uvicorn, real recordings appended in 100 ms chunks at real-time pace."""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np
import pytest
from openai import AsyncOpenAI

from tests.helpers import audio_of, clip, wer
from tests.integration.conftest import TOKEN, run_gateway

pytestmark = pytest.mark.integration

TINY = "whisper-tiny-en"  # the protocol does not depend on the model; tiny keeps the tests short
RATE = 24000


@pytest.fixture(scope="module")
def realtime_url(triton, tmp_path_factory):
    # capacity admission off (GATEWAY_STREAM_FINAL_CAPACITY): these tests send faster than real time on a shared
    # machine and test the protocol; tests/unit/test_streaming.py tests admission
    with run_gateway(triton.grpc_url, tmp_path_factory.mktemp("realtime-gateway"), API_KEY=TOKEN,
                     GATEWAY_STREAM_FINAL_CAPACITY="1000") as url:
        yield url


def client_for(url: str, key: str = TOKEN) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=f"{url}/v1", websocket_base_url=url.replace("http://", "ws://") + "/v1")


def pcm24k(audio: np.ndarray) -> np.ndarray:
    """16 kHz float32 -> 24 kHz int16, as a Realtime client sends it."""
    n = int(round(audio.size * RATE / 16000))
    resampled = np.interp(np.arange(n) * 16000 / RATE, np.arange(audio.size), audio)
    return (np.clip(resampled, -1, 1) * 32767).astype("<i2")


def session_update(turn_detection: dict | None, model: str = TINY) -> dict:
    return {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": RATE},
        "transcription": {"model": model, "language": "en"},
        "turn_detection": turn_detection}}}


async def append_real_time(conn, pcm: np.ndarray, chunk_ms: int = 100) -> float:
    """Append ``pcm`` in ``chunk_ms`` pieces, each once it has been "recorded"; returns the start time."""
    step = RATE * chunk_ms // 1000
    t0 = time.monotonic()
    for i in range(0, pcm.size, step):
        piece = pcm[i:i + step]
        delay = t0 + (i + piece.size) / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await conn.input_audio_buffer.append(audio=base64.b64encode(piece.tobytes()).decode())
    return t0


async def events_until(conn, done, timeout: float = 60) -> list:
    """(arrival time, event) of every server event until ``done(events)`` holds (checked on every event,
    and every 0.2 s: the condition may also wait on the client's sender)."""
    seen: list = []
    deadline = time.monotonic() + timeout
    while not done([e for _, e in seen]):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {[(e.type, getattr(e, 'item_id', '')) for _, e in seen]}")
        try:
            event = await asyncio.wait_for(conn.recv(), 0.2)  # the SDK's recv is safe to cancel
        except TimeoutError:
            continue
        seen.append((time.monotonic(), event))
    return seen


async def test_sdk_server_vad_session_transcribes_each_turn(realtime_url, shared_audio):
    files = ["en/jfk.flac", "en/1995-1837-0001.wav"]  # short turns, then 8.7 s of running speech
    gap = np.zeros(16000, dtype=np.float32)  # 1 s pause after each recording: the turn ends there
    audio = np.concatenate([part for f in files for part in (audio_of(f), gap)])
    reference = " ".join(clip(f)["reference_text"] for f in files)
    async with client_for(realtime_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.session.update(session=session_update(
            {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}))
        updated = await conn.recv()
        assert updated.type == "session.updated"
        sender = asyncio.create_task(append_real_time(conn, pcm24k(audio)))

        def all_completed(events) -> bool:
            committed = {e.item_id for e in events if e.type == "input_audio_buffer.committed"}
            completed = {e.item_id for e in events if e.type.endswith("input_audio_transcription.completed")}
            return sender.done() and bool(committed) and committed == completed

        events = await events_until(conn, all_completed)
        t0 = await sender
    kinds = [e.type for _, e in events]
    assert "error" not in kinds, [e for _, e in events if e.type == "error"]
    started = [e for _, e in events if e.type == "input_audio_buffer.speech_started"]
    stopped = [e for _, e in events if e.type == "input_audio_buffer.speech_stopped"]
    committed = [e for _, e in events if e.type == "input_audio_buffer.committed"]
    created_items = [e for _, e in events if e.type == "conversation.item.created"]
    completed = [e for _, e in events if e.type.endswith("input_audio_transcription.completed")]
    assert len(started) == len(stopped) == len(committed) == len(created_items) == len(completed) >= 2
    assert [e.item_id for e in started] == [e.item_id for e in committed] == [e.item.id for e in created_items]
    assert committed[1].previous_item_id == committed[0].item_id
    assert all(e.audio_end_ms > s.audio_start_ms for s, e in zip(started, stopped))
    assert started[0].audio_start_ms == pytest.approx(300, abs=300)  # JFK starts speaking about 0.3 s in
    text = " ".join(e.transcript for e in completed)
    assert wer(reference, text) <= 0.1, text
    assert any(e.type.endswith("input_audio_transcription.delta") for _, e in events), "no partial deltas"
    # each turn completes soon after its speech ended (the pause is 0.5 s of it)
    ends = {e.item_id: t0 + e.audio_end_ms / 1000 for e in stopped}
    lags = [t - ends[e.item_id] for t, e in events if e.type.endswith("transcription.completed")]
    print(f"\n[realtime] {len(completed)} turns, completed {', '.join(f'{lag:.2f}' for lag in lags)} s after "
          f"speech end: {text!r}")
    assert max(lags) < 10.0, lags  # a sanity bound: the benchmark measures latency


async def test_sdk_manual_commits_and_bad_events_keep_the_session(realtime_url, shared_audio):
    file = "en/LDC93S1.wav"
    pcm = pcm24k(audio_of(file))
    async with client_for(realtime_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session=session_update(None))
        assert (await conn.recv()).type == "session.updated"
        bad = [{"type": "no.such.event"},
               {"type": "input_audio_buffer.append", "audio": "not base64 !!"},
               {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\1\2\3").decode()},
               {"type": "input_audio_buffer.commit"},  # nothing appended yet
               {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                   "format": {"type": "audio/pcm", "rate": 44100}}}}},
               # 700 KB of base64: over half the 1 MiB message limit (an error event; past 1 MiB: 1009)
               {"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(525_000)).decode()}]
        for event in bad:
            await conn.send(event)
        errors = [await conn.recv() for _ in bad]
        assert [e.type for e in errors] == ["error"] * len(bad), errors
        assert [e.error.code for e in errors] == ["invalid_value", "invalid_value", "invalid_value",
                                                  "input_audio_buffer_commit_empty", "invalid_value",
                                                  "event_too_large"]
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm.tobytes()).decode())
        await conn.input_audio_buffer.commit()
        events = await events_until(conn, lambda es: any(e.type.endswith("transcription.completed") for e in es))
    kinds = [e.type for _, e in events]
    assert kinds[:2] == ["input_audio_buffer.committed", "conversation.item.created"], kinds
    assert "input_audio_buffer.speech_started" not in kinds  # no server VAD: the client commits
    transcript = events[-1][1].transcript
    assert wer(clip(file)["reference_text"], transcript) <= 0.2, transcript


async def test_sdk_without_the_token_is_refused(realtime_url):
    from websockets.exceptions import ConnectionClosed

    async with client_for(realtime_url, key="wrong-key").realtime.connect(
            extra_query={"intent": "transcription"}) as conn:
        refused = await conn.recv()
        assert refused.type == "error" and refused.error.code == "invalid_api_key"
        with pytest.raises(ConnectionClosed) as closed:
            await conn.recv()
        assert closed.value.rcvd.code == 1008
