"""``/v1/stream`` on the live stack: real tritonserver, the real gateway under uvicorn, real speech."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from client import WhisperTritonClient
from client.stream import stream_file, stream_many, to_pcm16
from tests.conftest import model_metric, read_metrics
from tests.utils.helpers import audio_of, clip, wer
from tests.streaming_gateway import stream_gateway

pytestmark = pytest.mark.integration

MAX_STREAMS = 6


@pytest.fixture(scope="module")
def ws_url(triton, tmp_path_factory):
    # every stream of these tests comes from 127.0.0.1: one client may hold them all here
    with stream_gateway(triton.grpc_url, tmp_path_factory.mktemp("stream-gateway"),
                        GATEWAY_MAX_STREAMS=str(MAX_STREAMS), GATEWAY_MAX_STREAMS_PER_CLIENT=str(MAX_STREAMS)) as url:
        yield url.replace("http://", "ws://") + "/v1/stream"


def check_words(result):
    """Committed words come in stream order, each inside the audio, and the done text is their join."""
    assert result.error is None, result.error
    assert result.close_code == 1000, (result.close_code, result.close_reason)
    ends = [w["end"] for w in result.words]
    assert ends == sorted(ends)
    assert all(0.0 <= w["start"] <= w["end"] <= result.audio_s + 0.5 for w in result.words)
    assert result.text == result.final_text


async def test_stream_matches_offline_wer(ws_url, triton, shared_audio):
    file = "en/jfk.flac"
    audio = audio_of(file)
    reference = clip(file)["reference_text"]
    with WhisperTritonClient(triton.grpc_url) as c:
        offline = c.transcribe(audio, language="en").text
    result = await stream_file(ws_url, audio, speed=4.0, language="en")
    check_words(result)
    assert sum(1 for e in result.events if e["type"] == "partial") >= 2  # it really streamed, step by step
    streamed, batch = wer(reference, result.text), wer(reference, offline)
    # Streaming decodes are greedy (GATEWAY_STREAM_BEAM_SIZE 1) on cut-off buffers: base hears JFK's "ask not"
    # as "asked not" on buffers ending 4.5-6.5 s (measured, any floor or kernels), and the stream may commit
    # it: two words of 22 more than the offline beam-5 result at most.
    assert streamed <= batch + 0.1, (result.text, offline)


async def test_concurrent_streams_own_words_and_batched(ws_url, triton, shared_audio):
    files = ["en/jfk.flac", "en/1272-128104-0000.flac", "en/1089-134686-0002.wav", "en/1995-1837-0001.wav"]
    audios = [audio_of(f) for f in files]
    # Silence in front makes the four streams end together, so their last turns' decodes reach Triton at
    # once: 4 requests on 2 instances, of which at least two share an execution. (Steps along the way meet
    # only by chance: at most two partials are outstanding, one per instance.)
    longest = max(len(a) for a in audios)
    audios = [np.concatenate([np.zeros(longest - len(a), np.float32), a]) for a in audios]
    before = read_metrics(triton.metrics_url)
    results = await stream_many(ws_url, audios, speed=2.0, language="en")
    after = read_metrics(triton.metrics_url)
    for file, result in zip(files, results):
        check_words(result)
        # A stream that got another's words would blow its WER far past this.
        assert wer(clip(file)["reference_text"], result.text) <= 0.3, (file, result.text)
    requests = model_metric(after, "nv_inference_request_success", "whisper") - model_metric(before, "nv_inference_request_success", "whisper")
    executions = model_metric(after, "nv_inference_exec_count", "whisper") - model_metric(before, "nv_inference_exec_count", "whisper")
    assert requests >= 8
    assert executions < requests, f"{int(requests)} stream steps ran as {int(executions)} executions: not batched"


async def bad_stream(ws_url, start: dict | None, frames: list) -> tuple[list[dict], int | None]:
    """Send ``start`` (or nothing) and ``frames``; return the events and the close code."""
    events = []
    async with connect(ws_url) as ws:
        try:
            if start is not None:
                await ws.send(json.dumps(start))
            for frame in frames:
                await ws.send(frame)
            async for raw in ws:
                events.append(json.loads(raw))
        except ConnectionClosed:
            pass
        try:
            await asyncio.wait_for(ws.wait_closed(), 10)
        except asyncio.TimeoutError:
            pass
        return events, ws.close_code


async def test_bad_frames_get_error_and_clean_close_others_unaffected(ws_url, shared_audio):
    pcm = {"type": "start", "language": "en", "sample_rate": 16000, "format": "pcm_s16le"}
    webm = {**pcm, "format": "webm"}
    cases = {
        "garbage webm": (webm, [bytes(range(256)) * 40]),
        "odd-length pcm": (pcm, [b"\x00\x01\x02"]),
        "wrong sample rate": ({**pcm, "sample_rate": 44100}, []),
        "audio before start": (None, [to_pcm16(np.zeros(1600, dtype=np.float32))]),
        "not json": (None, ["hello"]),
    }
    file = "en/arctic_a0024.wav"
    good = asyncio.create_task(stream_file(ws_url, audio_of(file), speed=2.0, language="en"))
    outcomes = await asyncio.gather(*(bad_stream(ws_url, start, frames) for start, frames in cases.values()))
    for name, (events, code) in zip(cases, outcomes):
        assert [e["type"] for e in events] == ["error"], (name, events)
        assert events[0]["message"], name
        assert code in (1003, 1008), (name, code)
    result = await good
    check_words(result)
    assert wer(clip(file)["reference_text"], result.text) <= 0.3, result.text


async def test_bad_model_name_is_refused_like_on_the_http_routes(ws_url):
    """The start message's model goes through Settings.resolve_model: a path is no model name."""
    start = {"type": "start", "language": "en", "sample_rate": 16000, "format": "pcm_s16le", "model": "../../etc/passwd"}
    events, code = await bad_stream(ws_url, start, [])
    assert [e["type"] for e in events] == ["error"] and "does not exist" in events[0]["message"], events
    assert code == 1008


async def test_stream_limit_and_disconnect_frees_slots(ws_url, shared_audio):
    start = {"type": "start", "language": "en", "sample_rate": 16000, "format": "pcm_s16le"}
    audio = to_pcm16(audio_of("en/jfk.flac")[: 3 * 16000])
    # Fill every slot with a live stream, then drop them all mid-stream, twice: no slot may leak.
    for _ in range(2):
        sockets = [await connect(ws_url) for _ in range(MAX_STREAMS)]
        for ws in sockets:
            await ws.send(json.dumps(start))
            await ws.send(audio)
        await asyncio.sleep(0.5)
        async with connect(ws_url) as extra:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(extra.recv(), 10)
                await asyncio.wait_for(extra.recv(), 10)
            assert extra.close_code == 1013
            assert "too many streams" in extra.close_reason
        for ws in sockets:
            ws.transport.abort()  # vanish without a close handshake
        await asyncio.sleep(1.0)
    result = await stream_file(ws_url, audio_of("en/LDC93S1.wav"), speed=0, language="en")
    check_words(result)
