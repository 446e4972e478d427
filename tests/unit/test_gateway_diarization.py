"""Diarization in the gateway without Triton: speakers merged into segments (split at a change of
speaker), the request's fields checked, the formats, and the routes with a faked Triton."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from gateway import diarization, formats
from gateway.errors import InvalidRequest
from gateway.results import Options, Segment, Transcription, Word
from gateway.triton import SpeakerWindows
from whisper_triton.speaker.clustering import Turn

from tests.unit.test_gateway_api import FakeTriton, make_client, wav

WORDS = (Word(" Hi", 0.0, 0.4), Word(" there.", 0.4, 1.0), Word(" Hello", 1.2, 1.6), Word(" back.", 1.6, 2.0))
RESULT = Transcription("Hi there. Hello back.", "en", 3.0,
                       (Segment(0, 0.0, 2.0, " Hi there. Hello back.", tokens=(1, 2), words=WORDS),
                        Segment(1, 2.2, 3.0, " Bye.")))
TWO = diarization.Speakers([Turn(0.0, 1.1, 0), Turn(1.1, 2.1, 1), Turn(2.1, 3.0, 0)], ["A", "B"])


def test_a_segment_is_split_where_the_speaker_changes():
    out = diarization.assign(RESULT, TWO)
    assert [(s.id, s.start, s.end, s.text, s.speaker) for s in out.segments] == [
        (0, 0.0, 1.0, " Hi there.", "A"), (1, 1.2, 2.0, " Hello back.", "B"), (2, 2.2, 3.0, " Bye.", "A")]
    assert out.segments[0].tokens == () and out.speakers == ["A", "B"]


def test_a_stray_word_stays_with_its_neighbours():
    turns = diarization.Speakers([Turn(0.0, 0.9, 0), Turn(0.9, 1.3, 1), Turn(1.3, 3.0, 0)], ["alice", "B"])
    out = diarization.assign(RESULT, turns)
    assert [(s.text, s.speaker) for s in out.segments] == [(" Hi there. Hello back.", "alice"), (" Bye.", "alice")]
    assert out.segments[0].tokens == (1, 2)  # not split: the segment is kept whole


def test_without_word_times_the_split_is_estimated_from_the_text():
    plain = Transcription("Hi there. Hello back.", "en", 3.0, (Segment(0, 0.0, 2.0, " Hi there. Hello back.", tokens=(1,)),))
    out = diarization.assign(plain, TWO)
    assert [(s.text, s.speaker, s.words) for s in out.segments] == [(" Hi there.", "A", None), (" Hello back.", "B", None)]
    assert out.segments[0].start == 0.0 and out.segments[1].end == 2.0
    assert out.segments[0].end == out.segments[1].start == pytest.approx(2.0 * 8 / 18)  # 8 of 18 letters
    # a turn covering less than MIN_PIECE_S of a segment does not split it
    short = diarization.Speakers([Turn(0.0, 1.7, 0), Turn(1.7, 2.0, 1)], ["A", "B"])
    assert [(s.text, s.speaker) for s in diarization.assign(plain, short).segments] == [(" Hi there. Hello back.", "A")]
    chinese = Transcription("你好再見", "zh", 2.0, (Segment(0, 0.0, 2.0, "你好再見"),))
    split = diarization.assign(chinese, diarization.Speakers([Turn(0.0, 1.0, 0), Turn(1.0, 2.0, 1)], ["A", "B"]))
    assert [(s.text, s.speaker) for s in split.segments] == [("你好", "A"), ("再見", "B")]


def test_words_outside_every_turn_take_the_nearest():
    out = diarization.assign(RESULT, diarization.Speakers([Turn(5.0, 6.0, 0)], ["A"]))
    assert {s.speaker for s in out.segments} == {"A"}
    assert diarization.assign(RESULT, diarization.Speakers([], [])).segments[0].speaker is None


def data_url(payload: bytes = b"RIFF") -> str:
    return "data:audio/wav;base64," + base64.b64encode(payload).decode()


def test_request_options():
    options, clips = diarization.request_options(names=[" ann "], references=[data_url(b"abc")], min_speakers=None,
                                                 max_speakers=3, limit_speakers=8, limit_references=4)
    assert options == diarization.DiarizeOptions(1, 3, ("ann",)) and clips == {"ann": b"abc"}
    bad = [
        (dict(names=["a"], references=[]), "one reference clip per name"),
        (dict(names=["a", "a"], references=[data_url()] * 2), "distinct"),
        (dict(names=["a\nb"], references=[data_url()]), "printable"),
        (dict(names=list("abcde"), references=[data_url()] * 5), "At most 4"),
        (dict(names=["a"], references=["http://example.com/a.wav"]), "data URL"),
        (dict(names=["a"], references=["data:audio/wav;base64,@@@"]), "not valid base64"),
        (dict(min_speakers=3, max_speakers=2), "min_speakers <= max_speakers"),
        (dict(max_speakers=9), "<= 8"),
    ]
    for fields, message in bad:
        kwargs = dict(names=None, references=None, min_speakers=None, max_speakers=None, limit_speakers=8,
                      limit_references=4) | fields
        with pytest.raises(InvalidRequest, match=message):
            diarization.request_options(**kwargs)


DIARIZED = diarization.assign(RESULT, TWO)


def test_diarized_json_shape():
    assert formats.render(DIARIZED, "diarized_json") == {
        "task": "transcribe", "duration": 3.0, "text": "Hi there. Hello back.",
        "segments": [
            {"type": "transcript.text.segment", "id": "seg_0", "start": 0.0, "end": 1.0, "text": "Hi there.", "speaker": "A"},
            {"type": "transcript.text.segment", "id": "seg_1", "start": 1.2, "end": 2.0, "text": "Hello back.", "speaker": "B"},
            {"type": "transcript.text.segment", "id": "seg_2", "start": 2.2, "end": 3.0, "text": "Bye.", "speaker": "A"}],
        "usage": {"type": "duration", "seconds": 3}}


def test_speakers_in_srt_and_vtt():
    named = diarization.assign(RESULT, diarization.Speakers(TWO.turns, ["A", "Dr <Who>"]))
    assert formats.to_srt(named) == ("1\n00:00:00,000 --> 00:00:01,000\nSpeaker A: Hi there.\n\n"
                                     "2\n00:00:01,200 --> 00:00:02,000\nDr <Who>: Hello back.\n\n"
                                     "3\n00:00:02,200 --> 00:00:03,000\nSpeaker A: Bye.\n")
    assert formats.to_vtt(named) == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n<v Speaker A>Hi there.\n\n"
                                     "00:00:01.200 --> 00:00:02.000\n<v Dr &lt;Who&gt;>Hello back.\n\n"
                                     "00:00:02.200 --> 00:00:03.000\n<v Speaker A>Bye.\n")
    assert formats.to_verbose_json(named)["segments"][1]["speaker"] == "Dr <Who>"
    assert "speaker" not in formats.to_verbose_json(RESULT)["segments"][0]


class SpeakerTriton(FakeTriton):
    """A fake Triton that also answers the speaker model: two speakers, half the audio each."""

    def __init__(self) -> None:
        super().__init__()
        self.speaker_calls: list[tuple[str, int]] = []

    async def transcribe(self, model, audio, options: Options):
        self.calls.append((model, audio.size, options))
        return Transcription("Hi there. Hello back.", "en", 3.0, RESULT.segments, options.task, model)

    async def speaker_windows(self, model: str, audio: np.ndarray) -> SpeakerWindows:
        self.speaker_calls.append((model, audio.size))
        a, b = np.eye(4)[0], np.eye(4)[1]
        if audio.size < 48000:  # a reference clip: the first speaker's voice
            return SpeakerWindows(np.array([a, a]), np.array([[0, 1], [1, 2]]), np.zeros(2, np.int32))
        return SpeakerWindows(embeddings=np.array([a] * 4 + [b] * 4), spans=np.array(
            [[i * 0.25, (i + 1) * 0.25 + 0.0] for i in range(4)] + [[1.1 + i * 0.25, 1.35 + i * 0.25] for i in range(4)]),
            regions=np.zeros(8, np.int32))


@pytest.fixture
def api():
    fake = SpeakerTriton()
    client, _ = make_client(triton=fake)
    with client:
        yield client, fake


URL = "/v1/audio/transcriptions"


def test_diarized_json_route_calls_both_models(api):
    client, fake = api
    r = client.post(URL, files={"file": ("a.wav", wav(3.0))}, data={"response_format": "diarized_json"})
    assert r.status_code == 200, r.text
    assert [s["speaker"] for s in r.json()["segments"]] == ["A", "B", "B"]
    assert fake.calls[-1][2].word_timestamps is False  # not forced: word times cost as much again as the text
    assert fake.speaker_calls == [("speaker", 48000)]


def test_references_are_sent_to_the_speaker_model(api):
    client, fake = api
    r = client.post(URL, files={"file": ("a.wav", wav(3.0))},
                    data={"response_format": "diarized_json", "known_speaker_names[]": ["ann"],
                          "known_speaker_references[]": [data_url(wav(2.0))]})
    assert r.status_code == 200, r.text
    assert [size for _, size in fake.speaker_calls] == [48000, 32000]
    # the first speaker is ann; the other keeps the first free letter, as OpenAI labels unknown speakers
    assert [s["speaker"] for s in r.json()["segments"]] == ["ann", "A", "A"]


@pytest.mark.parametrize(("url", "data", "param"), [
    ("/v1/audio/translations", {"response_format": "diarized_json"}, "response_format"),
    (URL, {"response_format": "diarized_json", "stream": "true"}, "stream"),
    (URL, {"diarize": "true", "known_speaker_names[]": ["a"]}, "known_speaker_names[]"),
    (URL, {"diarize": "true", "known_speaker_names[]": ["a"], "known_speaker_references[]": ["data:,x"]},
     "known_speaker_references[]"),
    (URL, {"diarize": "true", "min_speakers": "3", "max_speakers": "2"}, "max_speakers"),
])
def test_bad_diarization_requests_are_400(api, url, data, param):
    r = api[0].post(url, files={"file": ("a.wav", wav())}, data=data)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_reference_without_speech_is_400(api):
    client, fake = api

    async def silent(model, audio):
        return SpeakerWindows(np.zeros((0, 4)), np.zeros((0, 2)), np.zeros(0, np.int32))
    fake.speaker_windows = silent
    r = client.post(URL, files={"file": ("a.wav", wav())},
                    data={"diarize": "true", "known_speaker_names[]": ["a"], "known_speaker_references[]": [data_url(wav())]})
    assert r.status_code == 400 and "no speech" in r.json()["error"]["message"]


def test_legacy_diarize(api):
    client, _ = api
    body = client.post("/transcribe/file", files={"file": ("a.wav", wav(3.0))}, data={"diarize": "true"}).json()
    assert body["speakers"] == ["A", "B"] and [s["speaker"] for s in body["segments"]] == ["A", "B", "B"]
    plain = client.post("/transcribe/file", files={"file": ("a.wav", wav(3.0))}).json()
    assert "speakers" not in plain and "segments" not in plain


def test_the_speaker_model_is_no_transcription_model(api):
    client, fake = api

    async def ready():
        return ["speaker", "whisper", "whisper-tiny-en"]
    fake.ready_models = ready
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["whisper", "whisper-tiny-en", "whisper-1"]
    assert client.get("/models").json()["models"] == ["whisper", "whisper-tiny-en"]
    r = client.post(URL, files={"file": ("a.wav", wav())}, data={"model": "speaker"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_a_failed_transcription_cancels_the_speaker_call(api):
    client, fake = api
    import asyncio as aio
    cancelled = []

    async def slow(model, audio):
        try:
            await aio.sleep(30)
        except aio.CancelledError:
            cancelled.append(model)
            raise

    async def busy(model, audio, options):
        from gateway.errors import TooManyRequests
        raise TooManyRequests("The model is busy (queue full); retry shortly", headers={"Retry-After": "2"})
    fake.speaker_windows, fake.transcribe = slow, busy
    r = client.post(URL, files={"file": ("a.wav", wav())}, data={"response_format": "diarized_json"})
    assert r.status_code == 429 and cancelled == ["speaker"]
