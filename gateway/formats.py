"""Response bodies for each ``response_format``: pure functions with exact output."""

from __future__ import annotations

import math
from typing import Any, get_args

from fastapi.responses import JSONResponse, Response

from client import formats as subtitles
from gateway import protocol
from gateway.languages import name as language_name
from gateway.results import Segment, Transcription

FORMATS = get_args(protocol.ResponseFormat)
MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json", "diarized_json": "application/json",
               "text": "text/plain; charset=utf-8", "srt": "application/x-subrip; charset=utf-8",
               "vtt": "text/vtt; charset=utf-8"}


def to_srt(result: Transcription) -> str:
    return subtitles.to_srt(result.segments)


def to_vtt(result: Transcription) -> str:
    return subtitles.to_vtt(result.segments)


def to_text(result: Transcription) -> str:
    return result.text + "\n"


def _usage(result: Transcription) -> protocol.Usage:
    return protocol.Usage(seconds=math.ceil(result.duration))


def to_json(result: Transcription) -> dict[str, Any]:
    return protocol.TranscriptionJson(text=result.text, usage=_usage(result)).model_dump()


def _segment(s: Segment) -> protocol.TranscriptionSegment:
    return protocol.TranscriptionSegment(
        id=s.id, seek=int(round(s.start * 100)), start=round(s.start, 3), end=round(s.end, 3), text=s.text,
        tokens=list(s.tokens), temperature=s.temperature, avg_logprob=s.avg_logprob,
        compression_ratio=s.compression_ratio, no_speech_prob=s.no_speech_prob, speaker=s.speaker or None)


def segment_json(s: Segment) -> dict[str, Any]:
    return _segment(s).model_dump(exclude_none=True)


def to_diarized_json(result: Transcription) -> dict[str, Any]:
    """OpenAI's ``diarized_json``: the text, and segments with their speaker (``A``, ``B``... or a known name)."""
    return protocol.TranscriptionDiarizedJson(
        duration=round(result.duration, 3), text=result.text, usage=_usage(result),
        segments=[protocol.DiarizedSegment(id=f"seg_{s.id}", start=round(s.start, 3), end=round(s.end, 3),
                                           text=s.text.strip(), speaker=s.speaker or "A")
                  for s in result.segments if s.text.strip()],
    ).model_dump()


def to_verbose_json(result: Transcription, *, words: bool = False) -> dict[str, Any]:
    body = protocol.TranscriptionVerboseJson(
        task=result.task, language=language_name(result.language), duration=round(result.duration, 3),
        text=result.text, segments=[_segment(s) for s in result.segments], usage=_usage(result),
        words=[protocol.TranscriptionWord(word=w.word, start=round(w.start, 3), end=round(w.end, 3))
               for w in result.words] if words else None,
    )
    return body.model_dump(exclude_none=True)


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


def response(result: Transcription, response_format: str, *, words: bool = False) -> Response:
    """The HTTP response for ``response_format``, with its media type."""
    body = render(result, response_format, words=words)
    if isinstance(body, dict):
        return JSONResponse(body)
    return Response(body, media_type=MEDIA_TYPES[response_format])


# What /docs shows for a transcription: every response_format's body.
TRANSCRIPTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The transcription in the requested response_format (text/event-stream with stream=true)",
          "model": protocol.TranscriptionJson | protocol.TranscriptionVerboseJson | protocol.TranscriptionDiarizedJson,
          "content": {media: {"schema": {"type": "string"}}
                      for media in ("text/plain", "application/x-subrip", "text/vtt", "text/event-stream")}},
    **protocol.ERROR_RESPONSES,
}
