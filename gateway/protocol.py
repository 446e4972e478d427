"""The HTTP contract: pydantic models of every body the gateway answers with, named and shaped as OpenAI's
API names them (``CreateTranscriptionResponseJson``, ``...VerboseJson``, ``...DiarizedJson``, ``Model``,
``ListModelsResponse``, ``ErrorResponse``), plus the legacy routes' and the system routes' shapes.

``gateway.formats`` builds the transcription bodies from these models, the routes declare them so the
OpenAPI page (``/docs``) documents every response, and ``gateway.errors`` builds every error body from
``ErrorResponse``. The durable jobs' own shapes are in ``gateway.jobs.api``; the Triton contract is
``whisper_triton.protocol``.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, Field

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json", "diarized_json"]
Granularity = Literal["segment", "word"]


# ------------------------------------------------------------------ transcriptions
class Usage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: int = Field(description="Seconds of input audio, rounded up")


class TranscriptionJson(BaseModel):
    """``response_format=json``."""

    text: str
    usage: Usage


class TranscriptionWord(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionSegment(BaseModel):
    id: int
    seek: int = Field(description="The segment's start in 10 ms frames")
    start: float
    end: float
    text: str
    tokens: list[int] = Field(description="The segment's text tokens (Whisper's vocabulary)")
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    speaker: Optional[str] = Field(None, description="Only with diarize=true")


class TranscriptionVerboseJson(BaseModel):
    """``response_format=verbose_json``."""

    task: Literal["transcribe", "translate"]
    language: str = Field(description="The language's English name, as OpenAI reports it")
    duration: float
    text: str
    segments: list[TranscriptionSegment]
    words: Optional[list[TranscriptionWord]] = Field(None, description="Only with timestamp_granularities[]=word")
    usage: Usage


class DiarizedSegment(BaseModel):
    type: Literal["transcript.text.segment"] = "transcript.text.segment"
    id: str
    start: float
    end: float
    text: str
    speaker: str = Field(description="A, B, ... or a known speaker's name")


class TranscriptionDiarizedJson(BaseModel):
    """``response_format=diarized_json``."""

    task: Literal["transcribe"] = "transcribe"
    duration: float
    text: str
    segments: list[DiarizedSegment]
    usage: Usage


class TranscriptTextDelta(BaseModel):
    """A ``stream=true`` event: one segment's text, as soon as its piece is transcribed."""

    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str
    segment_id: str
    start: float
    end: float


class TranscriptTextDone(BaseModel):
    """The last ``stream=true`` event: the whole text."""

    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
    language: str
    duration: float


# ------------------------------------------------------------------ models
class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "triton"


class ListModelsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


# ------------------------------------------------------------------ errors
class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error, server_error, ...")
    param: Optional[str]
    code: Optional[str]


class ErrorResponse(BaseModel):
    """Every error, OpenAI's shape; the legacy routes add ``"success": false``."""

    error: ErrorDetail


class StreamError(ErrorResponse):
    """A ``stream=true`` failure after the first event."""

    type: Literal["error"] = "error"


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in ((400, "Invalid request"), (401, "Missing or wrong API key"), (404, "No such model"),
                         (413, "Request too large"), (415, "Unsupported media"), (429, "Busy: retry later"),
                         (503, "Triton unavailable"))
}


# ------------------------------------------------------------------ legacy routes
class LegacySegment(BaseModel):
    id: int
    start: float
    end: float
    text: str
    speaker: Optional[str] = None


class LegacyTranscription(BaseModel):
    """``/transcribe/file``, ``/transcribe/binary``, ``/stt/transcribe/``."""

    success: Literal[True] = True
    text: str
    process_time: float
    language: str
    duration: float
    model: str
    segments: Optional[list[LegacySegment]] = Field(None, description="With timestamps=true or diarize=true")
    speakers: Optional[list[str]] = Field(None, description="With diarize=true")


class LegacyModels(BaseModel):
    success: Literal[True] = True
    models: list[str]
    default: str


# ------------------------------------------------------------------ system
class TritonState(BaseModel):
    url: str
    ready: bool
    problem: Optional[str] = Field(None, description="What the watchdog found wrong, while it is wrong")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    gateway: Literal["ok"] = "ok"
    triton: TritonState
    default_model: str
    models: list[str]
