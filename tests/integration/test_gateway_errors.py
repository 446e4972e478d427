"""Bad inputs, auth and a down Triton: each with its status and OpenAI error body (live stack)."""

from __future__ import annotations

import os

import httpx
import pytest
from openai import AuthenticationError, OpenAI

from tests.utils.helpers import clip, wer
from tests.integration.conftest import TOKEN, UPLOAD_LIMIT_MB

pytestmark = pytest.mark.integration

URL = "/v1/audio/transcriptions"


def error_of(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def test_corrupt_bytes(http):
    error = error_of(http.post(URL, files={"file": ("a.wav", os.urandom(4096))}), 415, "unsupported_media")
    assert error["param"] == "file"


def test_text_renamed_mp3(http):
    text = b"Just some text that someone renamed to .mp3\n" * 40
    error_of(http.post(URL, files={"file": ("notes.mp3", text, "audio/mpeg")}), 415, "unsupported_media")


def test_empty_file(http):
    error = error_of(http.post(URL, files={"file": ("empty.wav", b"")}), 400, "empty_file")
    assert "empty" in error["message"]


def test_silent_upload_is_400(http):
    """Two seconds of digital silence: nothing to transcribe, refused before it costs Triton a decode."""
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(2 * 32000))
    error = error_of(http.post(URL, files={"file": ("silence.wav", buf.getvalue())}), 400, "silent_audio")
    assert error["param"] == "file" and "silent" in error["message"]


def test_truncated_header_only_wav(http, shared_audio):
    header_only = clip("en/LDC93S1.wav")["path"].read_bytes()[:44]  # a wav with zero samples
    r = http.post(URL, files={"file": ("short.wav", header_only)})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("empty_audio", "invalid_audio")


def test_oversize_upload_is_refused_before_reading(gateway):
    chunk = b"\0" * (1024 * 1024)
    total_chunks = UPLOAD_LIMIT_MB * 20
    sent = 0

    def body():
        nonlocal sent
        for _ in range(total_chunks):
            sent += 1
            yield chunk

    with httpx.Client(timeout=60) as client:
        r = client.post(f"{gateway}{URL}", content=body(),
                        headers={"Content-Type": "multipart/form-data; boundary=x",
                                 "Content-Length": str(total_chunks * len(chunk))})
    error_of(r, 413, "request_too_large")
    assert sent < total_chunks // 2, f"the client had to send {sent} of {total_chunks} MiB"


def test_unknown_model(http, shared_audio):
    with open(clip("en/LDC93S1.wav")["path"], "rb") as fh:
        error = error_of(http.post(URL, files={"file": fh}, data={"model": "no-such-model"}), 404, "model_not_found")
    assert error["param"] == "model"


def test_missing_file_field(http):
    error = error_of(http.post(URL, data={"model": "whisper-1"}), 400)
    assert error["param"] == "file" and "file" in error["message"]


def test_bad_response_format(http, shared_audio):
    with open(clip("en/LDC93S1.wav")["path"], "rb") as fh:
        error = error_of(http.post(URL, files={"file": fh}, data={"response_format": "docx"}), 400)
    assert error["param"] == "response_format"


def test_unknown_language_is_refused_with_its_name(http, shared_audio):
    with open(clip("en/LDC93S1.wav")["path"], "rb") as fh:
        error = error_of(http.post(URL, files={"file": fh}, data={"language": "xx", "model": "whisper-1"}), 400)
    assert "xx" in error["message"]


def test_wrong_token(gateway_with_token, shared_audio):
    row = clip("en/LDC93S1.wav")
    with httpx.Client(base_url=gateway_with_token, timeout=120) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with open(row["path"], "rb") as fh:
                error = error_of(http.post(URL, files={"file": fh}, headers=headers), 401, "invalid_api_key")
            assert error["type"] == "authentication_error"
        assert http.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.post("/transcribe/file", files={"file": ("a.wav", b"x")}).json()["success"] is False
        assert http.get("/health").status_code == 200  # left open by default
        assert http.get("/metrics").status_code == 200
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{gateway_with_token}/v1", api_key="wrong", max_retries=0).models.list()
    good = OpenAI(base_url=f"{gateway_with_token}/v1", api_key=TOKEN, max_retries=0, timeout=120)
    with open(row["path"], "rb") as fh:
        text = good.audio.transcriptions.create(model="whisper-tiny-en", file=fh).text
    assert wer(row["reference_text"], text) <= 0.2


def test_triton_down_gives_503(gateway_without_triton, shared_audio):
    with httpx.Client(base_url=gateway_without_triton, timeout=60) as http:
        health = http.get("/health")
        assert health.status_code == 503 and health.json()["triton"]["ready"] is False
        with open(clip("en/LDC93S1.wav")["path"], "rb") as fh:
            error_of(http.post(URL, files={"file": fh}), 503, "service_unavailable")
        error_of(http.get("/v1/models"), 503)
