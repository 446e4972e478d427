"""Every legacy route with the earlier servers' field names and response shapes (live stack)."""

from __future__ import annotations

import opencc
import pytest

from tests.utils.helpers import cer, clip, wer

pytestmark = pytest.mark.integration

JFK = "en/jfk.flac"
ZH = "zh/BAC009S0002W0123.wav"
_s2t = opencc.OpenCC("s2t")


def test_transcribe_file_with_timestamps(http, shared_audio):
    row = clip(JFK)
    with open(row["path"], "rb") as fh:
        r = http.post("/transcribe/file", files={"file": ("jfk.flac", fh)},
                      data={"model": "large-v3", "timestamps": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert {"text", "process_time", "language", "segments"} <= body.keys()
    assert wer(row["reference_text"], body["text"]) <= 0.1, body["text"]
    assert body["language"] == "en" and body["process_time"] > 0
    segments = body["segments"]
    assert segments and all({"start", "end", "text"} <= s.keys() for s in segments)
    assert all(0 <= s["start"] < s["end"] <= row["duration_seconds"] + 0.5 for s in segments)
    assert wer(row["reference_text"], " ".join(s["text"] for s in segments)) <= 0.1


def test_transcribe_file_without_timestamps_is_traditional(http, shared_audio):
    row = clip(ZH)
    with open(row["path"], "rb") as fh:
        r = http.post("/transcribe/file", files={"file": ("a.wav", fh)}, data={"model": "turbo"})
    body = r.json()
    assert r.status_code == 200 and body["success"] is True, body
    assert "segments" not in body
    assert body["language"] == "zh"
    assert cer(row["reference_text"], body["text"]) <= 0.4, body["text"]
    assert all(_s2t.convert(ch) == ch for ch in body["text"]), body["text"]


def test_transcribe_binary(http, shared_audio):
    row = clip("en/LDC93S1.wav")
    r = http.post("/transcribe/binary", params={"model": "whisper-tiny-en", "ext": "wav"},
                  content=row["path"].read_bytes(), headers={"Content-Type": "application/octet-stream"})
    body = r.json()
    assert r.status_code == 200 and body["success"] is True, body
    assert wer(row["reference_text"], body["text"]) <= 0.2, body["text"]
    assert body["process_time"] > 0 and body["language"] == "en"


def test_transcribe_binary_failure_shape(http):
    r = http.post("/transcribe/binary?model=large-v3&ext=mp3", content=b"this is not audio at all" * 20)
    assert r.status_code == 415
    body = r.json()
    assert body["success"] is False
    assert body["error"]["code"] == "unsupported_media" and body["error"]["message"]


def test_legacy_models(http):
    body = http.get("/models").json()
    assert body["success"] is True
    assert {"whisper", "whisper-tiny-en"} <= set(body["models"])
    assert body["default"] == "whisper"


def test_stt_transcribe(http, shared_audio):
    row = clip(JFK)
    with open(row["path"], "rb") as fh:
        r = http.post("/stt/transcribe/", files={"file": ("jfk.flac", fh)},
                      data={"language": "en", "beam_size": "1"})
    body = r.json()
    assert r.status_code == 200, body
    assert wer(row["reference_text"], body["text"]) <= 0.1, body["text"]
    assert body["language"] == "en" and body["segments"]


def test_stt_health(http):
    r = http.get("/stt/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
