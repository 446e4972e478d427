"""The OpenAI-compatible API through the official ``openai`` SDK and a real SSE client (live stack)."""

from __future__ import annotations

import json
import math
import re

import httpx
import numpy as np
import opencc
import pytest
from httpx_sse import connect_sse
from openai import OpenAI

from client.audio import encode_wav

from tests.conftest import model_metric, read_metrics
from tests.utils.helpers import audio_of, cer, clip, wer

pytestmark = pytest.mark.integration

JFK = "en/jfk.flac"
ZH = "zh/BAC009S0724W0121.wav"
TWO_SEGMENTS = "en/1089-134686-0000.wav"  # 10 s; two segments with either model
TINY = "whisper-tiny-en"
FORMATS = ["json", "text", "srt", "vtt", "verbose_json"]
SRT_TIME = r"(\d{2,}):(\d{2}):(\d{2}),(\d{3})"
VTT_TIME = r"(\d{2,}):(\d{2}):(\d{2})\.(\d{3})"

_s2t = opencc.OpenCC("s2t")
_t2s = opencc.OpenCC("t2s")


@pytest.fixture(scope="module")
def client(gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway}/v1", api_key="x", timeout=120, max_retries=0)


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_srt(body: str) -> list[tuple[float, float, str]]:
    """Strict SRT: numbered from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, text, one blank line between cues."""
    assert body.endswith("\n") and not body.endswith("\n\n\n"), repr(body[-10:])
    cues = []
    for n, block in enumerate(body.strip("\n").split("\n\n"), start=1):
        lines = block.split("\n")
        assert len(lines) >= 3, block
        assert lines[0] == str(n), block
        m = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
        assert m, lines[1]
        start, end = _seconds(*m.groups()[:4]), _seconds(*m.groups()[4:])
        assert 0 <= start <= end, lines[1]
        assert all(line.strip() for line in lines[2:]), block
        cues.append((start, end, " ".join(lines[2:])))
    assert cues
    return cues


def parse_vtt(body: str) -> list[tuple[float, float, str]]:
    """Strict WebVTT: ``WEBVTT`` header, blank line, cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` + text."""
    assert body.startswith("WEBVTT\n\n"), body[:20]
    cues = []
    for block in body[len("WEBVTT\n\n"):].strip("\n").split("\n\n"):
        lines = block.split("\n")
        assert len(lines) >= 2, block
        m = re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", lines[0])
        assert m, lines[0]
        start, end = _seconds(*m.groups()[:4]), _seconds(*m.groups()[4:])
        assert 0 <= start <= end, lines[0]
        assert all(line.strip() for line in lines[1:]), block
        cues.append((start, end, " ".join(lines[1:])))
    assert cues
    return cues


def check_cues(cues: list[tuple[float, float, str]], reference: str, duration: float) -> None:
    starts = [c[0] for c in cues]
    assert starts == sorted(starts)
    assert cues[-1][1] <= duration + 0.5
    assert wer(reference, " ".join(c[2] for c in cues)) <= 0.15


def check_format(response_format: str, result: object, reference: str, duration: float, task: str) -> None:
    if response_format == "json":
        assert wer(reference, result.text) <= 0.15, result.text
    elif response_format == "text":
        assert isinstance(result, str) and result.endswith("\n")
        assert wer(reference, result) <= 0.15, result
    elif response_format == "srt":
        check_cues(parse_srt(result), reference, duration)
    elif response_format == "vtt":
        check_cues(parse_vtt(result), reference, duration)
    else:
        assert result.task == task if hasattr(result, "task") else True
        assert result.language == "english"
        assert result.duration == pytest.approx(duration, abs=0.05)
        assert wer(reference, result.text) <= 0.15, result.text
        segments = result.segments
        assert segments and [s.id for s in segments] == list(range(len(segments)))
        assert all(0 <= s.start < s.end <= duration + 0.5 for s in segments)
        assert wer(reference, " ".join(s.text for s in segments)) <= 0.15


@pytest.mark.parametrize("response_format", FORMATS)
def test_transcriptions_every_format(client, shared_audio, response_format):
    row = clip(JFK)
    with open(row["path"], "rb") as fh:
        result = client.audio.transcriptions.create(model=TINY, file=fh, response_format=response_format)
    check_format(response_format, result, row["reference_text"], row["duration_seconds"], "transcribe")


@pytest.mark.parametrize("response_format", FORMATS)
def test_translations_every_format(client, shared_audio, response_format):
    # English speech "translated" to English is its transcript: the reference still applies.
    row = clip(JFK)
    with open(row["path"], "rb") as fh:
        result = client.audio.translations.create(model="whisper-1", file=fh, response_format=response_format)
    check_format(response_format, result, row["reference_text"], row["duration_seconds"], "translate")


def test_translation_of_mandarin_is_english(client, shared_audio):
    with open(clip("zh/funasr_asr_example_zh.wav")["path"], "rb") as fh:
        result = client.audio.translations.create(model="whisper-1", file=fh, response_format="verbose_json")
    letters = [ch for ch in result.text if ch.isalpha()]
    assert letters and sum(ch.isascii() for ch in letters) / len(letters) > 0.9, result.text
    assert "welcome" in result.text.lower(), result.text
    assert result.language == "chinese"


def test_verbose_json_words_and_segments(client, shared_audio):
    row = clip(JFK)
    with open(row["path"], "rb") as fh:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="verbose_json",
            timestamp_granularities=["word", "segment"], language="en")
    assert wer(row["reference_text"], result.text) <= 0.1, result.text
    words = result.words
    assert words and len(words) >= 15
    assert wer(row["reference_text"], " ".join(w.word for w in words)) <= 0.1
    assert all(0 <= w.start <= w.end <= row["duration_seconds"] + 0.5 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert result.segments and result.segments[0].start <= words[0].start + 0.01
    assert isinstance(result.segments[0].avg_logprob, float)
    assert all(s.tokens and all(isinstance(t, int) for t in s.tokens) for s in result.segments)  # the text tokens


def simplified_only(text: str) -> list[str]:
    """Characters that OpenCC's s2t would change: Simplified-only forms."""
    return [ch for ch in text if _s2t.convert(ch) != ch]


def test_mandarin_is_traditional_by_default(client, shared_audio):
    row = clip(ZH)
    with open(row["path"], "rb") as fh:
        result = client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json")
    assert result.language == "chinese"
    assert cer(row["reference_text"], result.text) <= 0.4, result.text
    assert not simplified_only(result.text), (result.text, simplified_only(result.text))
    assert _t2s.convert(result.text) != result.text  # really converted: it has Traditional forms
    for segment in result.segments:
        assert not simplified_only(segment.text), segment.text


def test_mandarin_simplified_on_request(client, shared_audio):
    row = clip(ZH)
    with open(row["path"], "rb") as fh:
        result = client.audio.transcriptions.create(model="whisper-1", file=fh,
                                                    extra_body={"chinese_script": "simplified"})
    assert cer(row["reference_text"], result.text) <= 0.4, result.text
    assert _t2s.convert(result.text) == result.text, result.text  # no Traditional-only forms
    assert simplified_only(result.text), result.text  # and some Simplified-only ones


def test_mandarin_words_are_converted_too(client, shared_audio):
    with open(clip(ZH)["path"], "rb") as fh:
        result = client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json",
                                                    timestamp_granularities=["word"], language="zh")
    assert result.words
    assert not simplified_only("".join(w.word for w in result.words))


def test_stream_sse_events(gateway, shared_audio):
    row = clip(TWO_SEGMENTS)
    with httpx.Client(timeout=120) as http, open(row["path"], "rb") as fh:
        with connect_sse(http, "POST", f"{gateway}/v1/audio/transcriptions",
                         files={"file": ("speech.wav", fh, "audio/wav")},
                         data={"model": TINY, "stream": "true"}) as source:
            assert source.response.status_code == 200
            assert source.response.headers["content-type"].startswith("text/event-stream")
            events = [json.loads(sse.data) for sse in source.iter_sse()]
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    assert len(deltas) >= 2, events
    assert events[-1]["type"] == "transcript.text.done"
    assert "".join(e["delta"] for e in deltas) == events[-1]["text"]
    assert wer(row["reference_text"], events[-1]["text"]) <= 0.2, events[-1]["text"]


def test_stream_through_sdk(client, shared_audio):
    row = clip(TWO_SEGMENTS)
    with open(row["path"], "rb") as fh:
        stream = client.audio.transcriptions.create(model=TINY, file=fh, stream=True)
        events = list(stream)
    assert [e.type for e in events][-1] == "transcript.text.done"
    assert sum(e.type == "transcript.text.delta" for e in events) >= 2
    assert wer(row["reference_text"], events[-1].text) <= 0.2


LONG_FILES = ["en/1089-134686-0000.wav", "en/121-127105-0000.flac", "en/1320-122612-0008.flac", "en/3570-5694-0005.flac",
              "en/2300-131720-0008.flac", "en/8555-284447-0000.flac", "en/7021-79730-0001.flac"]


def test_stream_of_a_long_upload_comes_in_pieces_on_the_file_timeline(gateway, triton, shared_audio):
    """Over a minute of speech with stream=true: Triton gets it in pieces of about 30 s (so the first
    text can be sent before the rest is transcribed), and the streamed text is still the whole file's."""
    gap = np.zeros(16000, dtype=np.float32)
    audio = np.concatenate([part for f in LONG_FILES for part in (audio_of(f), gap)])
    duration = len(audio) / 16000
    assert duration > 60
    before = model_metric(read_metrics(triton.metrics_url), "nv_inference_request_success", TINY)
    with httpx.Client(timeout=300) as http:
        with connect_sse(http, "POST", f"{gateway}/v1/audio/transcriptions",
                         files={"file": ("long.wav", encode_wav(audio), "audio/wav")},
                         data={"model": TINY, "stream": "true"}) as source:
            assert source.response.status_code == 200
            events = [json.loads(sse.data) for sse in source.iter_sse()]
    pieces = model_metric(read_metrics(triton.metrics_url), "nv_inference_request_success", TINY) - before
    assert pieces == math.ceil((duration - 5) / 30), pieces  # 30 s pieces; the last may run 5 s over
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    done = events[-1]
    assert done["type"] == "transcript.text.done" and done["duration"] == pytest.approx(duration, abs=0.01)
    assert "".join(e["delta"] for e in deltas) == done["text"]
    starts = [e["start"] for e in deltas]
    assert starts == sorted(starts) and starts[0] < 2.0 and deltas[-1]["end"] > duration - 4.0
    assert any(25 < t < 35 for t in starts), starts  # the second piece's text, moved onto the file's timeline
    assert wer(" ".join(clip(f)["reference_text"] for f in LONG_FILES), done["text"]) <= 0.15, done["text"]


def test_video_transcribes_like_its_audio(client, shared_audio):
    texts = {}
    for file in ("video/jfk.mp4", JFK):
        with open(clip(file)["path"], "rb") as fh:
            texts[file] = client.audio.transcriptions.create(model=TINY, file=fh, response_format="verbose_json")
    video, audio = texts["video/jfk.mp4"], texts[JFK]
    assert wer(audio.text, video.text) <= 0.05, (audio.text, video.text)
    assert video.duration == pytest.approx(audio.duration, abs=0.1)
    assert wer(clip(JFK)["reference_text"], video.text) <= 0.15


def test_mp3_and_wav_formats(client, shared_audio):
    for file in ("formats/jfk.mp3", "en/LDC93S1.wav"):
        row = clip(file)
        with open(row["path"], "rb") as fh:
            result = client.audio.transcriptions.create(model=TINY, file=fh)
        assert wer(row["reference_text"], result.text) <= 0.2, (file, result.text)


def test_models_list(client, gateway):
    ids = {m.id for m in client.models.list()}
    assert {"whisper", "whisper-tiny-en", "whisper-1"} <= ids
    assert client.models.retrieve("whisper-1").id == "whisper-1"
    r = httpx.get(f"{gateway}/v1/models/no-such-model")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_health_and_metrics(gateway, shared_audio):
    health = httpx.get(f"{gateway}/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and "whisper" in health.json()["models"]
    with open(clip("en/LDC93S1.wav")["path"], "rb") as fh:
        assert httpx.post(f"{gateway}/v1/audio/transcriptions", files={"file": fh},
                          data={"model": TINY}, timeout=120).status_code == 200
    text = httpx.get(f"{gateway}/metrics").text
    assert re.search(r'gateway_requests_total\{method="POST",route="/v1/audio/transcriptions",status="200"\} [1-9]', text)
    assert re.search(r'gateway_audio_seconds_total\{model="whisper-tiny-en",task="transcribe"\} [1-9]', text)
    assert "gateway_request_duration_seconds_bucket" in text and "gateway_requests_in_flight" in text
    assert "gateway_triton_errors_total" in text


def test_a_long_upload_goes_to_triton_in_pieces_and_comes_back_as_one_transcript(triton, tmp_path, shared_audio):
    """Past GATEWAY_TRITON_PIECE_SECONDS (here 60 s) an upload is sent in pieces cut at pauses; the answer is
    one transcript on the file's timeline, as good as the whole file's, from several Triton requests."""
    from tests.integration.conftest import run_gateway

    row = clip("long/en_concat.wav")  # 190 s
    with open(row["path"], "rb") as fh:
        data = fh.read()
    with run_gateway(triton.grpc_url, tmp_path, GATEWAY_TRITON_PIECE_SECONDS="60") as url:
        body = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("long.wav", data)},
                          data={"response_format": "verbose_json", "language": "en"}, timeout=600).json()
        calls = read_metrics(f"{url}/metrics")['gateway_triton_request_duration_seconds_count{model="whisper"}']
    assert calls >= 3, f"{calls} Triton calls for 190 s in pieces of 60 s"
    assert wer(row["reference_text"], body["text"]) <= 0.12, body["text"]
    starts = [s["start"] for s in body["segments"]]
    assert starts == sorted(starts) and [s["id"] for s in body["segments"]] == list(range(len(starts)))
    assert body["segments"][-1]["end"] <= body["duration"] + 0.01 and body["duration"] == pytest.approx(190.42, abs=0.1)
