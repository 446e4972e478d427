"""OpenAI Realtime transcription events, as pydantic models: what ``/v1/realtime`` reads and writes.

Client events: ``session.update`` with a transcription session (the GA shape: ``session.type:
"transcription"``, ``audio.input.format|transcription|turn_detection``), the beta
``transcription_session.update`` (``input_audio_format``, ``input_audio_transcription``,
``turn_detection``), and ``input_audio_buffer.append|commit|clear``. Unknown fields are ignored, as
OpenAI adds fields; a field this server cannot honour (another audio format, ``semantic_vad``) fails
validation and the client gets an ``error`` event.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- client events -------------------------------------------------------------------------------
class PcmFormat(_In):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[24000, 16000] = 24000  # 16000: this server's extension (no resampling)


class TranscriptionConfig(_In):
    model: str | None = None  # whisper-1 (the default model) or a model name here
    language: str | None = None
    prompt: str | None = None
    chinese_script: str | None = None  # this server's extension, as on the REST routes (s2twp, t2s, none, ...)


class ServerVadConfig(_In):
    type: Literal["server_vad"]
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=5000)
    silence_duration_ms: int = Field(500, ge=100, le=10000)


class AudioInput(_In):
    format: PcmFormat | None = None
    transcription: TranscriptionConfig | None = None
    turn_detection: ServerVadConfig | None = None  # null: the client commits
    noise_reduction: Any = None  # accepted, not applied


class SessionAudio(_In):
    input: AudioInput | None = None


class TranscriptionSession(_In):
    type: Literal["transcription"]
    audio: SessionAudio | None = None
    include: list[str] | None = None


class SessionUpdate(_In):
    type: Literal["session.update"]
    event_id: str | None = None
    session: TranscriptionSession


class BetaSession(_In):
    input_audio_format: Literal["pcm16"] | None = None
    input_audio_transcription: TranscriptionConfig | None = None
    turn_detection: ServerVadConfig | None = None
    input_audio_noise_reduction: Any = None
    include: list[str] | None = None


class BetaSessionUpdate(_In):
    type: Literal["transcription_session.update"]
    event_id: str | None = None
    session: BetaSession


class Append(_In):
    type: Literal["input_audio_buffer.append"]
    event_id: str | None = None
    audio: str  # base64 of 16-bit little-endian mono PCM


class Commit(_In):
    type: Literal["input_audio_buffer.commit"]
    event_id: str | None = None


class Clear(_In):
    type: Literal["input_audio_buffer.clear"]
    event_id: str | None = None


ClientEvent = Annotated[Union[SessionUpdate, BetaSessionUpdate, Append, Commit, Clear], Field(discriminator="type")]
CLIENT_EVENTS = TypeAdapter(ClientEvent)
CLIENT_EVENT_TYPES = ("session.update", "transcription_session.update", "input_audio_buffer.append",
                      "input_audio_buffer.commit", "input_audio_buffer.clear")


# -- server events -------------------------------------------------------------------------------
def event_id() -> str:
    return f"event_{secrets.token_hex(10)}"


class ServerEvent(BaseModel):
    event_id: str = Field(default_factory=event_id)


class ErrorDetail(BaseModel):
    type: str = "invalid_request_error"
    code: str | None = None
    message: str
    param: str | None = None
    event_id: str | None = None  # the client event that caused it


class ErrorEvent(ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorDetail


class SessionEvent(ServerEvent):
    type: Literal["session.created", "session.updated", "transcription_session.created",
                  "transcription_session.updated"]
    session: dict[str, Any]


class SpeechStarted(ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class SpeechStopped(ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class BufferCommitted(ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class BufferCleared(ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class InputAudioContent(BaseModel):
    type: Literal["input_audio"] = "input_audio"
    transcript: str | None = None


class Item(BaseModel):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["message"] = "message"
    status: Literal["completed"] = "completed"
    role: Literal["user"] = "user"
    content: list[InputAudioContent] = Field(default_factory=lambda: [InputAudioContent()])


class ItemCreated(ServerEvent):
    type: Literal["conversation.item.created"] = "conversation.item.created"
    previous_item_id: str | None = None
    item: Item


class TranscriptionDelta(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = \
        "conversation.item.input_audio_transcription.delta"
    item_id: str
    content_index: int = 0
    delta: str


class DurationUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionCompleted(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = \
        "conversation.item.input_audio_transcription.completed"
    item_id: str
    content_index: int = 0
    transcript: str
    usage: DurationUsage


class TranscriptionFailed(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = \
        "conversation.item.input_audio_transcription.failed"
    item_id: str
    content_index: int = 0
    error: ErrorDetail
