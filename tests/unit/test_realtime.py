"""``/v1/realtime`` with Triton faked: the protocol adapter (events in and out, errors, auth, admission)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from starlette.websockets import WebSocketDisconnect

from tests.unit.test_gateway_api import make_client

URL = "/v1/realtime?intent=transcription"
MANUAL = {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
    "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"model": "whisper-1", "language": "en"},
    "turn_detection": None}}}}


def pcm(seconds: float, rate: int = 24000) -> str:
    t = np.arange(int(seconds * rate)) / rate
    return base64.b64encode((0.3 * np.sin(2 * np.pi * 300 * t) * 32767).astype("<i2").tobytes()).decode()


def until(ws, kind: str, limit: int = 50) -> list[dict]:
    """Events up to and including the first of ``kind``."""
    seen = []
    for _ in range(limit):
        seen.append(ws.receive_json())
        if seen[-1]["type"] == kind:
            return seen
    raise AssertionError(f"no {kind} in {[e['type'] for e in seen]}")


def test_manual_commit_session_transcribes_each_commit():
    client, fake = make_client()
    with client, client.websocket_connect(URL) as ws:
        created = ws.receive_json()
        assert created["type"] == "session.created" and created["session"]["type"] == "transcription"
        assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        ws.send_json(MANUAL)
        updated = ws.receive_json()
        assert updated["type"] == "session.updated"
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "en"
        for _ in range(10):  # 1 s in 100 ms appends
            ws.send_json({"type": "input_audio_buffer.append", "audio": pcm(0.1)})
        ws.send_json({"type": "input_audio_buffer.commit"})
        events = until(ws, "conversation.item.input_audio_transcription.completed")
        kinds = [e["type"] for e in events]
        assert kinds[:2] == ["input_audio_buffer.committed", "conversation.item.created"]
        item = events[0]["item_id"]
        assert events[1]["item"]["id"] == item and events[1]["item"]["role"] == "user"
        completed = events[-1]
        assert completed["item_id"] == item and completed["content_index"] == 0
        assert completed["transcript"] == "Hello world." and completed["usage"]["seconds"] == pytest.approx(1.0, abs=0.01)
        assert all(e["event_id"].startswith("event_") for e in events)
    finals = [(size, options) for _, size, options in fake.calls if options.beam_size == 1 and not options.word_timestamps]
    assert finals and abs(finals[-1][0] - 16000) < 100  # 24 kHz resampled to 16 kHz: one second
    assert finals[-1][1].language == "en" and finals[-1][1].vad_filter is False


def test_beta_transcription_session_update_and_16khz_extension():
    client, fake = make_client()
    with client, client.websocket_connect(URL) as ws:
        ws.receive_json()
        ws.send_json({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "input_audio_transcription": {"model": "whisper-tiny-en", "prompt": "Hi"},
            "turn_detection": None}})
        updated = ws.receive_json()
        assert updated["type"] == "transcription_session.updated"
        assert updated["session"]["input_audio_format"] == "pcm16" and updated["session"]["turn_detection"] is None
        assert updated["session"]["input_audio_transcription"]["model"] == "whisper-tiny-en"
        ws.send_json({**MANUAL, "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 16000}}}}})
        assert ws.receive_json()["session"]["audio"]["input"]["format"]["rate"] == 16000
        ws.send_json({"type": "input_audio_buffer.append", "audio": pcm(0.5, 16000)})
        ws.send_json({"type": "input_audio_buffer.commit"})
        until(ws, "conversation.item.input_audio_transcription.completed")
    model, size, options = fake.calls[-1]
    assert model == "whisper-tiny-en" and size == 8000 and options.prompt == "Hi"


@pytest.mark.parametrize("event, code, param", [
    ({"type": "response.create"}, "invalid_value", "type"),
    ({"type": "no.such.event"}, "invalid_value", "type"),
    ({"type": "input_audio_buffer.append", "audio": "%%% not base64"}, "invalid_value", None),
    ({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0\0\0").decode()}, "invalid_value", None),
    ({"type": "input_audio_buffer.append"}, "invalid_value", "audio"),
    ({"type": "input_audio_buffer.commit"}, "input_audio_buffer_commit_empty", None),
    ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 44100}}}}}, "invalid_value", "session.audio.input.format.rate"),
    ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcmu"}}}}}, "invalid_value", "session.audio.input.format.type"),
    ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "turn_detection": {"type": "semantic_vad"}}}}}, "invalid_value", None),
    ({"type": "session.update", "session": {"type": "realtime"}}, "invalid_value", "session.type"),
    ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "../../etc/passwd"}}}}}, "model_not_found", "model"),
    ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"language": "klingon"}}}}}, "unsupported_language", "language"),
])
def test_bad_events_get_an_error_event_and_the_session_goes_on(event, code, param):
    client, _ = make_client()
    with client, client.websocket_connect(URL) as ws:
        ws.receive_json()
        ws.send_json({**event, "event_id": "evt_42"})
        error = ws.receive_json()
        assert error["type"] == "error", error
        assert error["error"]["code"] == code and error["error"]["event_id"] == "evt_42", error
        assert error["error"]["message"] and error["error"]["type"] == "invalid_request_error" or code == "model_not_found"
        if param is not None:
            assert error["error"]["param"] == param, error
        ws.send_json(MANUAL)  # the session goes on, unchanged by the bad event
        assert ws.receive_json()["type"] == "session.updated"
        ws.send_json({"type": "input_audio_buffer.append", "audio": pcm(0.5)})
        ws.send_json({"type": "input_audio_buffer.commit"})
        assert until(ws, "conversation.item.input_audio_transcription.completed")[-1]["transcript"] == "Hello world."


def test_not_json_binary_and_oversized_events_are_errors_too():
    client, _ = make_client(stream_max_frame_kib=4)
    with client, client.websocket_connect(URL) as ws:
        ws.receive_json()
        ws.send_text("hello")
        assert ws.receive_json()["error"]["code"] == "invalid_json"
        ws.send_bytes(b"\0\0")
        assert ws.receive_json()["error"]["code"] == "invalid_event"
        ws.send_json({"type": "input_audio_buffer.append", "audio": pcm(1.0)})  # 64 KB of base64
        assert ws.receive_json()["error"]["code"] == "event_too_large"
        ws.send_json(MANUAL)
        assert ws.receive_json()["type"] == "session.updated"


def test_auth_bearer_and_subprotocol_and_refusal_without_token():
    client, _ = make_client(api_key="sekrit")
    with client:
        with client.websocket_connect(URL) as ws:
            refused = ws.receive_json()
            assert refused["type"] == "error" and refused["error"]["code"] == "invalid_api_key"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1008
        with client.websocket_connect(URL, headers={"Authorization": "Bearer wrong"}) as ws:
            assert ws.receive_json()["error"]["code"] == "invalid_api_key"
        with client.websocket_connect(URL, headers={"Authorization": "Bearer sekrit"}) as ws:
            assert ws.receive_json()["type"] == "session.created"
        with client.websocket_connect(URL, subprotocols=["realtime", "openai-insecure-api-key.sekrit"]) as ws:
            assert ws.accepted_subprotocol == "realtime"
            assert ws.receive_json()["type"] == "session.created"


def test_other_intents_and_a_full_gateway_are_refused_at_the_start():
    client, _ = make_client(max_streams=1)
    with client:
        with client.websocket_connect("/v1/realtime?model=gpt-realtime") as ws:
            assert ws.receive_json()["type"] == "session.created"  # no intent: a transcription session
            with client.websocket_connect("/v1/realtime?intent=conversation") as other:
                assert other.receive_json()["error"]["code"] == "unsupported_intent"
            with client.websocket_connect(URL) as other:
                refused = other.receive_json()
                assert refused["error"]["code"] == "too_many_sessions" and "limit 1" in refused["error"]["message"]
                with pytest.raises(WebSocketDisconnect) as closed:
                    other.receive_json()
                assert closed.value.code == 1013
        with client.websocket_connect(URL) as ws:  # the slot was given back
            assert ws.receive_json()["type"] == "session.created"


# -- ingest: nothing dropped, nothing unbounded (gateway/streaming/ingest.py) ----------------------
def test_realtime_audio_far_ahead_of_real_time_is_paced_not_dropped():
    import time

    client, fake = make_client(stream_max_ahead_s=1.0)
    with client, client.websocket_connect(URL) as ws:
        ws.receive_json()
        ws.send_json(MANUAL)
        ws.receive_json()
        t0 = time.monotonic()
        for _ in range(6):  # 3 s of audio at once
            ws.send_json({"type": "input_audio_buffer.append", "audio": pcm(0.5)})
        ws.send_json({"type": "input_audio_buffer.commit"})
        events = until(ws, "conversation.item.input_audio_transcription.completed")
        elapsed = time.monotonic() - t0
    assert "error" not in [e["type"] for e in events]
    assert elapsed >= 1.5, f"3 s of audio read in {elapsed:.2f} s: not paced"
    assert abs(fake.calls[-1][1] - 3 * 16000) < 100  # all of it, in one commit


def test_stream_faster_than_real_time_is_closed_with_1008():
    client, _ = make_client(stream_max_ahead_s=3.0)
    start = {"type": "start", "language": "en", "sample_rate": 16000, "format": "pcm_s16le"}
    frame = (np.zeros(16000, dtype="<i2") + 100).tobytes()  # 1 s each, all at once
    with client, client.websocket_connect("/v1/stream") as ws:
        ws.send_json(start)
        for _ in range(6):
            ws.send_bytes(frame)
        error = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert error["type"] == "error" and "faster than real time" in error["message"]
    assert closed.value.code == 1008


def test_stream_whose_audio_falls_behind_real_time_is_closed():
    import time

    client, _ = make_client(stream_idle_s=0.5)
    start = {"type": "start", "language": "en", "sample_rate": 16000, "format": "pcm_s16le"}
    with client, client.websocket_connect("/v1/stream") as ws:
        ws.send_json(start)
        t0 = time.monotonic()
        for _ in range(30):  # one sample every 0.1 s: far behind real time, never idle for 0.5 s
            ws.send_bytes(b"\0\0")
            time.sleep(0.1)
            if time.monotonic() - t0 > 1.5:
                break
        error = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert "behind real time" in error["message"] and closed.value.code == 1008
