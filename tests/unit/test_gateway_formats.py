"""Output formats and Chinese conversion: pure functions, exact strings."""

from __future__ import annotations

import pytest

from client import formats as subtitles
from gateway import chinese, formats
from gateway.results import Segment, Transcription, Word

RESULT = Transcription(
    text="Hello there. General Kenobi.",
    language="en",
    duration=3661.5,
    segments=(
        Segment(0, 0.0, 1.2344, " Hello there.", -0.2, 0.01, 1.1, 0.0, (1, 2),
                (Word(" Hello", 0.0, 0.5, 0.9), Word(" there.", 0.5, 1.2344, 0.8))),
        Segment(1, 3600.0, 3661.4996, " General  Kenobi.", -0.3, 0.02, 1.2, 0.2),
        Segment(2, 3661.5, 3661.5, "   "),  # empty cue: left out of srt/vtt
    ),
)


def test_timestamps():
    assert subtitles.timestamp(0) == "00:00:00,000"
    assert subtitles.timestamp(1.2344) == "00:00:01,234"
    assert subtitles.timestamp(59.9996) == "00:01:00,000"
    assert subtitles.timestamp(3661.5, ".") == "01:01:01.500"
    assert subtitles.timestamp(360000.0) == "100:00:00,000"
    assert subtitles.timestamp(-0.1) == "00:00:00,000"


def test_srt_exact():
    assert formats.to_srt(RESULT) == (
        "1\n00:00:00,000 --> 00:00:01,234\nHello there.\n\n"
        "2\n01:00:00,000 --> 01:01:01,500\nGeneral Kenobi.\n"
    )


def test_vtt_exact():
    assert formats.to_vtt(RESULT) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.234\nHello there.\n\n"
        "01:00:00.000 --> 01:01:01.500\nGeneral Kenobi.\n"
    )


def test_text_and_json():
    assert formats.to_text(RESULT) == "Hello there. General Kenobi.\n"
    assert formats.to_json(RESULT) == {"text": "Hello there. General Kenobi.",
                                       "usage": {"type": "duration", "seconds": 3662}}


def test_verbose_json_shape():
    body = formats.to_verbose_json(RESULT, words=True)
    assert body["task"] == "transcribe" and body["language"] == "english" and body["duration"] == 3661.5
    assert body["segments"][0] == {
        "id": 0, "seek": 0, "start": 0.0, "end": 1.234, "text": " Hello there.", "tokens": [1, 2],
        "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.1, "no_speech_prob": 0.01,
    }
    assert body["segments"][1]["seek"] == 360000
    assert body["words"] == [{"word": " Hello", "start": 0.0, "end": 0.5},
                             {"word": " there.", "start": 0.5, "end": 1.234}]
    assert "words" not in formats.to_verbose_json(RESULT)


def test_render_dispatch():
    assert formats.render(RESULT, "text") == formats.to_text(RESULT)
    with pytest.raises(ValueError):
        formats.render(RESULT, "docx")


ZH = Transcription(
    text="广州市房地产中介协会分析", language="zh", duration=4.0,
    segments=(Segment(0, 0.0, 4.0, "广州市房地产中介协会分析", words=(Word("软件", 0.0, 1.0),)),),
)


def test_chinese_default_is_taiwan_traditional():
    out = chinese.convert(ZH, chinese.resolve(None, "s2twp"))
    assert out.text == "廣州市房地產中介協會分析"
    assert out.segments[0].text == "廣州市房地產中介協會分析"
    assert out.words[0].word == "軟體"  # Taiwan phrasing, not just characters


@pytest.mark.parametrize(("choice", "expected"), [
    ("s2t", "軟件"), ("s2tw", "軟件"), ("s2hk", "軟件"), ("simplified", "软件"), ("none", "软件"),
    ("traditional", "軟體"), ("zh-Hans", "软件"),
])
def test_chinese_choices(choice, expected):
    assert chinese.convert(ZH, chinese.resolve(choice, "s2twp")).words[0].word == expected


def test_simplified_converts_traditional_output_back():
    traditional = ZH.map_text(chinese.converter("s2t"))
    assert chinese.convert(traditional, "t2s").text == ZH.text


def test_other_languages_are_untouched():
    assert chinese.convert(RESULT, "s2twp") is RESULT


def test_unknown_script_is_rejected():
    with pytest.raises(ValueError, match="unknown Chinese script"):
        chinese.resolve("klingon", "s2twp")
