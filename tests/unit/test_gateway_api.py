"""The HTTP API with Triton faked through FastAPI dependency overrides (no server, no model)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from client.audio import encode_wav
from gateway.config import Settings
from gateway.errors import ModelNotFound
from gateway.main import create_app
from gateway.results import Options, Segment, Transcription, Word


def wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return encode_wav((0.25 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate)


class FakeTriton:
    """Answers like the real model: Simplified Chinese for ``zh``, English otherwise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Options]] = []
        self.called = asyncio.Event()  # set by the first call
        self.gate: asyncio.Event | None = None
        self.ready = True

    async def transcribe(self, model: str, audio: np.ndarray, options: Options) -> Transcription:
        self.calls.append((model, audio.size, options))
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if model not in ("whisper", "whisper-tiny-en"):
            raise ModelNotFound(f"The model '{model}' does not exist or is not ready", param="model")
        duration = audio.size / 16000
        if options.language == "zh":
            words = (Word("软件", 0.0, 0.4, 0.9), Word("很好", 0.4, 0.8, 0.9)) if options.word_timestamps else None
            segments = (Segment(0, 0.0, 0.5, "软件"), Segment(1, 0.5, duration, "很好", words=words))
            return Transcription("软件很好", "zh", duration, segments, options.task, model)
        segments = (Segment(0, 0.0, 0.5, " Hello"), Segment(1, 0.5, duration, " world."))
        return Transcription("Hello world.", "en", duration, segments, options.task, model)

    async def ready_models(self) -> list[str]:
        return ["whisper", "whisper-tiny-en"] if self.ready else []

    async def server_ready(self) -> bool:
        return self.ready

    async def close(self) -> None:
        pass


def make_client(triton=None, **settings) -> tuple[TestClient, FakeTriton]:
    fake = triton or FakeTriton()
    app = create_app(Settings(_env_file=None, **settings), triton=fake)  # no gRPC channel in unit tests
    return TestClient(app), fake


@pytest.fixture
def api():
    client, fake = make_client()
    with client:
        yield client, fake


URL = "/v1/audio/transcriptions"


def post(client: TestClient, data: dict | None = None, content: bytes | None = None, url: str = URL, **kw):
    return client.post(url, files={"file": ("a.wav", wav() if content is None else content)}, data=data or {}, **kw)


def test_json_and_options_reach_triton(api):
    client, fake = api
    r = post(client, {"model": "whisper-1", "language": "English", "prompt": "Hi", "temperature": "0.2",
                      "beam_size": "3"})
    assert r.status_code == 200 and r.json() == {"text": "Hello world.", "usage": {"type": "duration", "seconds": 1}}
    model, samples, options = fake.calls[-1]
    assert model == "whisper" and samples == 16000
    assert options == Options(language="en", task="transcribe", prompt="Hi", word_timestamps=False,
                              beam_size=3, temperature=pytest.approx(0.2))


@pytest.mark.parametrize(("fmt", "media", "body"), [
    ("text", "text/plain", "Hello world.\n"),
    ("srt", "application/x-subrip", "1\n00:00:00,000 --> 00:00:00,500\nHello\n\n2\n00:00:00,500 --> 00:00:01,000\nworld.\n"),
    ("vtt", "text/vtt", "WEBVTT\n\n00:00:00.000 --> 00:00:00.500\nHello\n\n00:00:00.500 --> 00:00:01.000\nworld.\n"),
])
def test_text_formats(api, fmt, media, body):
    r = post(api[0], {"response_format": fmt})
    assert r.status_code == 200 and r.headers["content-type"].startswith(media) and r.text == body


def test_verbose_json_words_request_word_timestamps(api):
    client, fake = api
    r = client.post(URL, files={"file": ("a.wav", wav())},
                    data={"response_format": "verbose_json", "language": "zh",
                          "timestamp_granularities[]": ["word", "segment"]})
    body = r.json()
    assert fake.calls[-1][2].word_timestamps is True
    assert body["task"] == "transcribe" and body["language"] == "chinese"
    assert body["text"] == "軟體很好" and [s["text"] for s in body["segments"]] == ["軟體", "很好"]
    assert [w["word"] for w in body["words"]] == ["軟體", "很好"]


def test_segment_granularity_only_skips_word_timestamps(api):
    client, fake = api
    post(client, {"response_format": "verbose_json", "timestamp_granularities[]": "segment"})
    assert fake.calls[-1][2].word_timestamps is False


@pytest.mark.parametrize(("data", "text"), [
    ({"language": "zh"}, "軟體很好"),
    ({"language": "zh", "chinese_script": "s2hk"}, "軟件很好"),
    ({"language": "zh", "chinese_script": "simplified"}, "软件很好"),
    ({"language": "zh-CN"}, "软件很好"),
])
def test_chinese_script(api, data, text):
    assert post(api[0], data).json()["text"] == text


def test_chinese_default_is_configurable():
    client, _ = make_client(chinese_default="none")
    with client:
        assert post(client, {"language": "zh"}).json()["text"] == "软件很好"


def test_translation_sends_translate(api):
    client, fake = api
    r = post(client, {"model": "whisper-1"}, url="/v1/audio/translations")
    assert r.status_code == 200 and fake.calls[-1][2].task == "translate"


def test_stream_sse(api):
    r = post(api[0], {"stream": "true"})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"] == "Hello world."


def error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    if code:
        assert body["code"] == code
    return body


def test_bad_inputs(api):
    client, _ = api
    assert error(client.post(URL, data={"model": "whisper-1"}), 400)["param"] == "file"
    error(post(client, content=b""), 400, "empty_file")
    error(post(client, content=b"not audio " * 100), 415, "unsupported_media")
    error(post(client, {"model": "nope"}), 404, "model_not_found")
    assert error(post(client, {"response_format": "docx"}), 400)["param"] == "response_format"
    assert error(post(client, {"temperature": "7"}), 400)["param"] == "temperature"
    assert error(post(client, {"chinese_script": "klingon"}), 400)["param"] == "chinese_script"
    error(client.get("/no/such/route"), 404)


def test_user_input_never_gives_500(api):
    client, _ = api
    for data in ({"stream": "maybe"}, {"timestamp_granularities[]": "char"}, {"beam_size": "-1"},
                 {"language": "\u0000"}, {"prompt": "x" * 10000}):
        assert post(client, data).status_code < 500, data
    assert client.post(URL, content=b"garbage", headers={"content-type": "multipart/form-data"}).status_code == 400
    assert client.post(URL, json={"file": "x"}).status_code == 400


def test_upload_limit_declared_length():
    client, fake = make_client(max_upload_mb=1)
    with client:
        error(post(client, content=b"\0" * (2 * 1024 * 1024)), 413, "request_too_large")
        r = client.post("/transcribe/binary", content=b"\0" * (2 * 1024 * 1024))
        assert r.status_code == 413 and r.json()["success"] is False
    assert fake.calls == []


async def test_upload_limit_chunked_body_stops_reading():
    import httpx

    client, fake = make_client(max_upload_mb=1)
    sent = 0

    async def body():
        nonlocal sent
        for _ in range(50):
            sent += 1
            yield b"\0" * (256 * 1024)

    async def scenario():
        transport = httpx.ASGITransport(app=client.app)  # pulls the body lazily, as a server would
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.post("/transcribe/binary", content=body())

    r = await scenario()
    assert "content-length" not in r.request.headers
    error(r, 413, "request_too_large")
    assert fake.calls == [] and sent <= 6  # stopped at the chunk that passed 1 MiB


def test_audio_duration_limit():
    client, fake = make_client(max_audio_seconds=0.5)
    with client:
        error(post(client), 400, "audio_too_long")
    assert fake.calls == []


def test_auth():
    client, _ = make_client(api_key="sekret", open_metrics=False)
    with client:
        assert error(post(client), 401, "invalid_api_key")["type"] == "authentication_error"
        error(post(client, headers={"Authorization": "Bearer nope"}), 401, "invalid_api_key")
        assert post(client, headers={"Authorization": "Bearer sekret"}).status_code == 200
        assert client.get("/health").status_code == 200  # open by default
        assert client.get("/metrics").status_code == 401  # closed by setting
        assert client.get("/metrics", headers={"Authorization": "Bearer sekret"}).status_code == 200
        assert client.get("/").status_code == 200  # the page itself; it sends the key it is given
        legacy = client.get("/models")
        assert legacy.status_code == 401 and legacy.json()["success"] is False


def test_token_from_environment(monkeypatch):
    monkeypatch.setenv("ACCESS_TOKEN", "alias-token")
    assert Settings(_env_file=None).api_key.get_secret_value() == "alias-token"
    monkeypatch.setenv("API_KEY", "")
    monkeypatch.delenv("ACCESS_TOKEN")
    assert Settings(_env_file=None).api_key is None


def test_in_flight_limit_gives_429():
    client, fake = make_client(max_in_flight=1, retry_after_s=7)

    async def scenario():
        import httpx

        fake.gate = asyncio.Event()
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            files = {"file": ("a.wav", wav())}
            first = asyncio.create_task(http.post(URL, files=files))
            await asyncio.wait_for(fake.called.wait(), 10)
            second = await http.post(URL, files={"file": ("a.wav", wav())})
            fake.gate.set()
            return (await first), second

    with client:
        first, second = asyncio.run(scenario())
    assert first.status_code == 200
    error(second, 429, "rate_limit_exceeded")
    assert second.headers["retry-after"] == "7"


def test_models_and_health(api):
    client, fake = api
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["whisper", "whisper-tiny-en", "whisper-1"]
    assert client.get("/v1/models/whisper-1").json()["id"] == "whisper-1"
    error(client.get("/v1/models/other"), 404, "model_not_found")
    assert client.get("/health").json()["status"] == "ok"
    fake.ready = False
    assert client.get("/health").status_code == 503
    assert client.get("/stt/health").status_code == 503


def test_legacy_routes(api):
    client, fake = api
    body = client.post("/transcribe/file", files={"file": ("a.wav", wav())},
                       data={"model": "large-v3", "timestamps": "true"}).json()
    assert body["success"] is True and body["text"] == "Hello world." and body["language"] == "en"
    assert body["process_time"] >= 0 and [s["text"] for s in body["segments"]] == ["Hello", "world."]
    assert fake.calls[-1][0] == "whisper"  # the old model names run on the default model
    body = client.post("/transcribe/binary?model=whisper-tiny-en&ext=wav", content=wav()).json()
    assert body["success"] is True and "segments" not in body and fake.calls[-1][0] == "whisper-tiny-en"
    failed = client.post("/transcribe/file", files={"file": ("a.mp3", b"text")})
    assert failed.status_code == 415 and failed.json()["success"] is False and failed.json()["error"]["message"]
    assert client.get("/models").json() == {"success": True, "models": ["whisper", "whisper-tiny-en"],
                                            "default": "whisper"}
    body = client.post("/stt/transcribe/", files={"file": ("a.wav", wav())},
                       data={"language": "zh", "beam_size": "2"}).json()
    assert body["text"] == "軟體很好" and fake.calls[-1][2].beam_size == 2
    assert client.get("/stt/health").json()["status"] == "ok"


def test_metrics_count_routes(api):
    client, _ = api
    post(client)
    text = client.get("/metrics").text
    assert 'gateway_requests_total{method="POST",route="/v1/audio/transcriptions",status="200"}' in text
    assert 'gateway_audio_seconds_total{model="whisper",task="transcribe"}' in text


def test_web_page_is_self_contained(api):
    client, _ = api
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/app.css"):
        assert client.get(asset).status_code == 200
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/app.css").text):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


@pytest.mark.parametrize("name", ["../../etc/passwd", "%2e%2e%2fwhisper", "whisper\x00", "\u202ewhisper", "ｗｈｉｓｐｅｒ",
                                  "w" * 129, "-whisper", "whisper/x", "..", "whisper\r\nX-Evil: 1"])
def test_hostile_model_names_are_404_before_decoding_or_triton(api, name):
    client, fake = api
    body = error(post(client, {"model": name}), 404, "model_not_found")
    assert body["param"] == "model" and body["message"].isprintable() and "\u202e" not in body["message"]
    r = client.post("/transcribe/binary", params={"model": name}, content=wav())
    assert r.status_code == 404 and r.json()["success"] is False
    assert fake.calls == []


def test_valid_model_names_still_reach_triton(api):
    client, fake = api
    for name in ("whisper-tiny-en", " whisper ", "whisper-1"):
        assert post(client, {"model": name}).status_code == 200, name
    r = post(client, {"model": "no-such.model_v2"})  # well-formed but unknown: Triton's 404
    error(r, 404, "model_not_found")
    assert [c[0] for c in fake.calls] == ["whisper-tiny-en", "whisper", "whisper", "no-such.model_v2"]


def test_unknown_language_is_refused_before_triton_and_escaped(api):
    client, fake = api
    body = error(post(client, {"language": "xx"}), 400, "unsupported_language")
    assert body["param"] == "language" and "'xx'" in body["message"]
    body = error(post(client, {"language": "e\x00n\u202e" + "x" * 100}), 400, "unsupported_language")
    assert body["message"].isprintable() and "\\x00" in body["message"] and "\\u202e" in body["message"]
    assert fake.calls == []
    assert post(client, {"language": "Haitian Creole"}).status_code == 200
    assert fake.calls[-1][2].language == "ht"


def test_error_messages_escape_control_and_bidi_characters():
    from gateway.errors import MAX_MESSAGE_CHARS, error_body, safe_message

    assert safe_message("plain 'text', 日本語 é") == "plain 'text', 日本語 é"
    assert safe_message("a\x00b\nc\u202ed\u2028") == "a\\x00b\\nc\\u202ed\\u2028"
    assert len(error_body("x" * 5000, "invalid_request_error")["error"]["message"]) == MAX_MESSAGE_CHARS + 3


def test_huge_or_numerous_headers_get_431():
    client, fake = make_client()
    with client:
        error(post(client, headers={"X-Big": "a" * 40_000}), 431, "request_header_fields_too_large")
        error(post(client, headers={f"X-H{i}": "v" for i in range(120)}), 431, "request_header_fields_too_large")
        r = client.post("/transcribe/binary", content=wav(), headers={"X-Big": "a" * 40_000})
        assert r.status_code == 431 and r.json()["success"] is False
        assert post(client, headers={f"X-H{i}": "v" * 100 for i in range(50)}).status_code == 200
    assert len(fake.calls) == 1
