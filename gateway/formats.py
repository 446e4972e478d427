"""Response bodies for each ``response_format``: pure functions with exact output."""

from __future__ import annotations

import math
from typing import Any

from gateway.languages import name as language_name
from gateway.results import Segment, Transcription

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json",
               "text": "text/plain; charset=utf-8", "srt": "application/x-subrip; charset=utf-8",
               "vtt": "text/vtt; charset=utf-8"}


def timestamp(seconds: float, separator: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SRT) or with ``.`` (VTT); hours grow past 99 when needed."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cues(segments: tuple[Segment, ...]) -> list[tuple[float, float, str]]:
    cues = []
    for s in segments:
        text = " ".join(s.text.split())
        if text:
            cues.append((s.start, max(s.end, s.start), text))
    return cues


def to_srt(result: Transcription) -> str:
    blocks = [f"{i}\n{timestamp(start)} --> {timestamp(end)}\n{text}\n"
              for i, (start, end, text) in enumerate(_cues(result.segments), start=1)]
    return "\n".join(blocks)


def to_vtt(result: Transcription) -> str:
    blocks = [f"{timestamp(start, '.')} --> {timestamp(end, '.')}\n{text}\n"
              for start, end, text in _cues(result.segments)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_text(result: Transcription) -> str:
    return result.text + "\n"


def to_json(result: Transcription) -> dict[str, Any]:
    return {"text": result.text, "usage": {"type": "duration", "seconds": math.ceil(result.duration)}}


def segment_json(s: Segment) -> dict[str, Any]:
    return {
        "id": s.id, "seek": int(round(s.start * 100)), "start": round(s.start, 3), "end": round(s.end, 3),
        "text": s.text, "tokens": list(s.tokens), "temperature": s.temperature,
        "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
        "no_speech_prob": s.no_speech_prob,
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
    if response_format == "text":
        return to_text(result)
    if response_format == "srt":
        return to_srt(result)
    if response_format == "vtt":
        return to_vtt(result)
    raise ValueError(f"unknown response_format {response_format!r}")
