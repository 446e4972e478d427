"""Response bodies for each ``response_format``: pure functions with exact output."""

from __future__ import annotations

import math
from typing import Any

from client import formats as subtitles
from gateway.languages import name as language_name
from gateway.results import Segment, Transcription

FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json", "diarized_json": "application/json",
               "text": "text/plain; charset=utf-8", "srt": "application/x-subrip; charset=utf-8",
               "vtt": "text/vtt; charset=utf-8"}


def to_srt(result: Transcription) -> str:
    return subtitles.to_srt(result.segments)


def to_vtt(result: Transcription) -> str:
    return subtitles.to_vtt(result.segments)


def to_text(result: Transcription) -> str:
    return result.text + "\n"


def to_json(result: Transcription) -> dict[str, Any]:
    return {"text": result.text, "usage": {"type": "duration", "seconds": math.ceil(result.duration)}}


def segment_json(s: Segment) -> dict[str, Any]:
    body = {
        "id": s.id, "seek": int(round(s.start * 100)), "start": round(s.start, 3), "end": round(s.end, 3),
        "text": s.text, "tokens": list(s.tokens), "temperature": s.temperature,
        "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
        "no_speech_prob": s.no_speech_prob,
    }
    if s.speaker:
        body["speaker"] = s.speaker
    return body


def to_diarized_json(result: Transcription) -> dict[str, Any]:
    """OpenAI's ``diarized_json``: the text, and segments with their speaker (``A``, ``B``... or a known name)."""
    return {
        "task": "transcribe",
        "duration": round(result.duration, 3),
        "text": result.text,
        "segments": [{"type": "transcript.text.segment", "id": f"seg_{s.id}", "start": round(s.start, 3),
                      "end": round(s.end, 3), "text": s.text.strip(), "speaker": s.speaker or "A"}
                     for s in result.segments if s.text.strip()],
        "usage": {"type": "duration", "seconds": math.ceil(result.duration)},
    }


def to_verbose_json(result: Transcription, *, words: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": result.task,
        "language": language_name(result.language),
        "duration": round(result.duration, 3),
        "text": result.text,
        "segments": [segment_json(s) for s in result.segments],
    }
    if words:
        body["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)}
                         for w in result.words]
    body["usage"] = {"type": "duration", "seconds": math.ceil(result.duration)}
    return body


def render(result: Transcription, response_format: str, *, words: bool = False) -> str | dict[str, Any]:
    """The body for ``response_format``: a dict for the JSON formats, a string otherwise."""
    if response_format == "json":
        return to_json(result)
    if response_format == "verbose_json":
        return to_verbose_json(result, words=words)
    if response_format == "diarized_json":
        return to_diarized_json(result)
    if response_format == "text":
        return to_text(result)
    if response_format == "srt":
        return to_srt(result)
    if response_format == "vtt":
        return to_vtt(result)
    raise ValueError(f"unknown response_format {response_format!r}")
