"""``/v1/realtime?intent=transcription`` (WebSocket): OpenAI's Realtime API for transcription sessions.

A thin adapter: client events (``gateway.streaming.events``) become calls on one ``StreamSession`` (the
streaming core), the core's events become server events. What is served and what is refused is listed
in the README ("Realtime transcription"). Auth: ``Authorization: Bearer`` or the
``openai-insecure-api-key.<key>`` subprotocol, checked like every other route. A session that cannot
be served (no token, full gateway, the server behind) gets an ``error`` event and is closed at once;
a bad client event gets an ``error`` event and the session goes on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from dataclasses import dataclass, replace
from functools import partial

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette.websockets import WebSocketState

from gateway import service
from gateway.aio import cancel_and_wait
from gateway.config import Settings
from gateway.deps import check_token, websocket_credentials
from gateway.errors import APIError, ModelNotFound
from gateway.limits import client_key
from gateway.stream_audio import FrameError, Resampler, pcm16_samples
from gateway.streaming import events as ev
from gateway.streaming import ingest
from gateway.streaming import session as core
from gateway.streaming.serving import Admission, triton_decoder
from gateway.streaming.turns import ServerVad

log = logging.getLogger("gateway.realtime")
router = APIRouter(tags=["realtime"])

POLICY, TRY_AGAIN_LATER, INTERNAL = 1008, 1013, 1011


@dataclass(frozen=True)
class Config:
    """A session's settings as the client sees them (the model as it was asked for)."""

    model: str = "whisper-1"
    language: str = ""
    prompt: str = ""
    chinese_script: str = ""  # "" = the server's default (GATEWAY_CHINESE_DEFAULT)
    rate: int = 24000
    turn: ServerVad | None = ServerVad()

    def ga(self, session_id: str) -> dict:
        return {"type": "transcription", "id": session_id, "object": "realtime.transcription_session",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": self.rate},
                                    "transcription": {"model": self.model, "language": self.language or None,
                                                      "prompt": self.prompt},
                                    "turn_detection": _turn(self.turn), "noise_reduction": None}},
                "include": None}

    def beta(self, session_id: str) -> dict:
        return {"id": session_id, "object": "realtime.transcription_session",
                "input_audio_format": "pcm16" if self.rate == 24000 else "pcm16_16000",
                "input_audio_transcription": {"model": self.model, "language": self.language or None,
                                              "prompt": self.prompt},
                "turn_detection": _turn(self.turn), "input_audio_noise_reduction": None, "include": None}


def _turn(turn: ServerVad | None) -> dict | None:
    if turn is None:
        return None
    return {"type": "server_vad", "threshold": turn.threshold, "prefix_padding_ms": turn.prefix_padding_ms,
            "silence_duration_ms": turn.silence_duration_ms}


def _merged(config: Config, transcription: ev.TranscriptionConfig | None, turn_set: bool,
            turn: ev.ServerVadConfig | None, rate: int | None) -> Config:
    """``config`` with the fields an update carries (absent fields stay; a null turn_detection is manual)."""
    if transcription is not None:
        fields = transcription.model_fields_set
        config = replace(config, **{name: getattr(transcription, name) or ""
                                    for name in ("model", "language", "prompt", "chinese_script") if name in fields})
    if turn_set:
        config = replace(config, turn=None if turn is None else ServerVad(
            turn.threshold, turn.prefix_padding_ms, turn.silence_duration_ms))
    if rate is not None:
        config = replace(config, rate=rate)
    return config


def _decoding(settings: Settings, config: Config) -> core.Decoding:
    """The core's decoding for a config: the model checked and the language normalised as on the REST routes."""
    name = settings.resolve_model(config.model)
    if name == settings.diarization_model:
        raise ModelNotFound(f"The model '{name}' is not a transcription model", param="model")
    options = service.options_for(language=config.language, prompt=config.prompt)
    return core.Decoding(name, options, service.conversion_for(settings, config.chinese_script or None, config.language))


class Connection:
    """One ``/v1/realtime`` connection: the protocol state around one ``StreamSession``."""

    def __init__(self, ws: WebSocket, settings: Settings, admission: Admission, ticket: int) -> None:
        self.ws, self.settings, self.admission = ws, settings, admission
        self.id = core.new_id("sess")
        self.config = Config(turn=ServerVad(settings.stream_vad_threshold, settings.stream_prefix_padding_ms,
                                            settings.stream_silence_ms))
        self.resampler = Resampler(self.config.rate)
        stream_config = core.StreamConfig.from_settings(settings)
        self.session = core.StreamSession(triton_decoder(ws.app.state.triton, admission, ticket),
                                          _decoding(settings, self.config), stream_config, self.config.turn,
                                          observe=partial(admission.observe, ticket), vad_limiter=admission.vad_limiter)
        # events up to half the server's message limit are read; a larger one gets an error event (past the
        # limit itself the server closes with 1009)
        self.ingest = ingest.Ingest(ws, self.session, settings, paced=True,
                                    max_bytes=settings.stream_max_frame_kib * 1024 // 2)

    async def send(self, event: ev.ServerEvent) -> None:
        await self.ws.send_text(event.model_dump_json())

    async def error(self, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                    param: str | None = None, event_id: str | None = None) -> None:
        await self.send(ev.ErrorEvent(error=ev.ErrorDetail(type=type, code=code, message=message, param=param,
                                                           event_id=event_id)))

    # -- client -> core -----------------------------------------------------------------------
    async def receive_loop(self) -> None:
        while True:
            try:
                message = await self.ingest.next()
            except ingest.Idle as exc:
                await self.error(f"{exc.message}; closing the session", code="session_idle")
                await _close(self.ws, POLICY, "idle")
                return
            except ingest.TooBig as exc:
                await self.error(f"{exc.message}: append audio in smaller pieces", code="event_too_large")
                continue
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self.error("binary frames are not part of the protocol: send JSON events "
                                 "(audio as base64 in input_audio_buffer.append)", code="invalid_event")
                continue
            await self.handle(text)

    async def handle(self, text: str) -> None:
        try:
            raw = json.loads(text)
        except ValueError:
            await self.error("the event is not JSON", code="invalid_json")
            return
        client_event = raw.get("event_id") if isinstance(raw, dict) else None
        client_event = client_event if isinstance(client_event, str) else None
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind not in ev.CLIENT_EVENT_TYPES:
            await self.error(f"Invalid value: {ascii(kind)[:80]}. This server serves transcription sessions; supported "
                             f"values are: {', '.join(ev.CLIENT_EVENT_TYPES)}", code="invalid_value", param="type",
                             event_id=client_event)
            return
        try:
            event = ev.CLIENT_EVENTS.validate_python(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"] if not str(part).startswith(kind))
            await self.error(f"Invalid '{where}': {first['msg']}", code="invalid_value", param=where or None,
                             event_id=client_event)
            return
        try:
            await self._dispatch(event)
        except APIError as exc:
            await self.error(exc.message, type=exc.type, code=exc.code, param=exc.param, event_id=client_event)
        except (FrameError, binascii.Error, ValueError) as exc:
            await self.error(str(exc), code="invalid_value", event_id=client_event)

    async def _dispatch(self, event) -> None:
        if isinstance(event, ev.Append):
            samples = await anyio.to_thread.run_sync(self._samples, event.audio)
            await self.session.append(samples)
        elif isinstance(event, ev.Commit):
            try:
                await self.session.commit()
            except core.EmptyBuffer as exc:
                raise APIError(f"Error committing input audio buffer: {exc}", code="input_audio_buffer_commit_empty") from None
        elif isinstance(event, ev.Clear):
            self.session.clear()
        elif isinstance(event, ev.SessionUpdate):
            audio_in = event.session.audio.input if event.session.audio else None
            fields = audio_in.model_fields_set if audio_in else set()
            config = _merged(self.config, audio_in.transcription if audio_in else None, "turn_detection" in fields,
                             audio_in.turn_detection if audio_in else None,
                             audio_in.format.rate if audio_in and audio_in.format else None)
            self._apply(config)
            await self.send(ev.SessionEvent(type="session.updated", session=self.config.ga(self.id)))
        elif isinstance(event, ev.BetaSessionUpdate):
            beta = event.session
            config = _merged(self.config, beta.input_audio_transcription, "turn_detection" in beta.model_fields_set,
                             beta.turn_detection, 24000 if beta.input_audio_format else None)
            self._apply(config)
            await self.send(ev.SessionEvent(type="transcription_session.updated", session=self.config.beta(self.id)))

    def _apply(self, config: Config) -> None:
        decoding = _decoding(self.settings, config)  # refused (an error event) before anything changes
        if config.rate != self.config.rate:
            self.resampler = Resampler(config.rate)
        self.session.set_decoding(decoding)
        self.session.set_turn_detection(config.turn)
        self.config = config

    def _samples(self, audio: str) -> np.ndarray:
        try:
            data = base64.b64decode(audio, validate=True)
        except binascii.Error:
            raise ValueError("input_audio_buffer.append: 'audio' is not valid base64") from None
        return self.resampler(pcm16_samples(data))

    # -- core -> client -----------------------------------------------------------------------
    async def send_loop(self) -> None:
        while True:
            event = await self.session.events.get()
            for out in self._translate(event):
                await self.send(out)

    def _translate(self, event: core.Event) -> list[ev.ServerEvent]:
        if isinstance(event, core.SpeechStarted):
            return [ev.SpeechStarted(audio_start_ms=round(event.start_s * 1000), item_id=event.item_id)]
        if isinstance(event, core.SpeechStopped):
            return [ev.SpeechStopped(audio_end_ms=round(event.end_s * 1000), item_id=event.item_id)]
        if isinstance(event, core.Committed):
            return [ev.BufferCommitted(item_id=event.item_id, previous_item_id=event.previous_item_id),
                    ev.ItemCreated(previous_item_id=event.previous_item_id, item=ev.Item(id=event.item_id))]
        if isinstance(event, core.Delta):
            return [ev.TranscriptionDelta(item_id=event.item_id, delta=event.delta)] if event.delta else []
        if isinstance(event, core.Completed):
            return [ev.TranscriptionCompleted(item_id=event.item_id, transcript=event.result.text,
                                              usage=ev.DurationUsage(seconds=round(event.end_s - event.start_s, 3)))]
        if isinstance(event, core.Failed):
            exc = event.error
            detail = (ev.ErrorDetail(type=exc.type, code=exc.code, message=exc.message, param=exc.param)
                      if isinstance(exc, APIError) else
                      ev.ErrorDetail(type="server_error", code="transcription_failed", message="Transcription failed"))
            return [ev.TranscriptionFailed(item_id=event.item_id, error=detail)]
        if isinstance(event, core.Cleared):
            return [ev.BufferCleared()]
        return []


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.client_state == WebSocketState.CONNECTED and ws.application_state == WebSocketState.CONNECTED:
        try:
            await ws.close(code, reason[:120])
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass


async def _refuse(ws: WebSocket, code: int, error: ev.ErrorDetail) -> None:
    try:
        await ws.send_text(ev.ErrorEvent(error=error).model_dump_json())
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
    await _close(ws, code, error.message)


def admission_of(ws: WebSocket) -> Admission:
    return ws.app.state.stream_admission


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    settings: Settings = ws.app.state.settings
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
    try:
        check_token(settings, websocket_credentials(ws))
    except APIError as exc:
        await _refuse(ws, POLICY, ev.ErrorDetail(type=exc.type, code=exc.code, message=exc.message))
        return
    intent = ws.query_params.get("intent", "transcription")
    if intent != "transcription":
        await _refuse(ws, POLICY, ev.ErrorDetail(code="unsupported_intent", param="intent", message=(
            f"intent {ascii(intent)[:40]} is not served here: only transcription sessions (?intent=transcription)")))
        return
    admission = admission_of(ws)
    ticket, refusal = admission.try_enter(client_key(ws.scope, settings.client_key))
    if ticket is None:
        await _refuse(ws, TRY_AGAIN_LATER, ev.ErrorDetail(type="rate_limit_error", code="too_many_sessions",
                                                          message=refusal))
        return
    connection: Connection | None = None
    try:
        connection = Connection(ws, settings, admission, ticket)
        connection.session.start()
        await connection.send(ev.SessionEvent(type="session.created", session=connection.config.ga(connection.id)))
        receiver = asyncio.create_task(connection.receive_loop())
        sender = asyncio.create_task(connection.send_loop())
        try:
            await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            for task in (receiver, sender):
                if task.done() and not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if not isinstance(exc, (WebSocketDisconnect, RuntimeError, OSError)):
                        log.warning("realtime session failed: %r", exc)
                        await _refuse(ws, INTERNAL, ev.ErrorDetail(type="server_error", code="internal_error",
                                                                   message="internal error"))
        finally:
            await cancel_and_wait(receiver, sender)
    finally:
        admission.leave(ticket)  # first: a cancelled close() below must not leak the slot
        if connection is not None:
            await connection.session.close()
