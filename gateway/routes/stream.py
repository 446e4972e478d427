"""``/v1/stream`` (WebSocket): live transcription in this gateway's own protocol; ``GET /live``: the page.

A thin adapter on the streaming core (``gateway/streaming``), kept for its existing clients and the CLI
(``python -m client stream``); new clients speak OpenAI's Realtime protocol at ``/v1/realtime``.

Protocol. The client sends a JSON start message::

    {"type": "start", "language": "en" | "", "task": "transcribe" | "translate",
     "chinese": "s2twp" | "t2s" | "none" | ..., "sample_rate": 16000,
     "format": "pcm_s16le" | "pcm_f32le" | "webm" | "ogg", "model": "whisper"}

then binary audio frames (raw 16 kHz mono PCM, or MediaRecorder webm/ogg opus chunks), then
``{"type": "stop"}``. Server VAD cuts the speech into turns. The server sends ``partial`` (the hypothesis
of the turn being spoken; empty after each turn), ``final`` (a turn's words with start/end in seconds on
the stream's timeline, once the turn has ended and been decoded whole), ``error`` and, after stop,
``done`` (the whole committed text); then it closes with 1000. Protocol errors close with 1003 (unusable
data) or 1008 (policy: bad start message, audio before start, nothing sent for ``GATEWAY_STREAM_IDLE_S``);
a frame over ``GATEWAY_STREAM_MAX_FRAME_KIB`` closes with 1009; a full gateway refuses with 1013 (try
again later). Settings: the ``GATEWAY_STREAM_*`` rows of gateway/config.py (shared with ``/v1/realtime``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from starlette.websockets import WebSocketState

from gateway import service
from gateway.aio import cancel_and_wait
from gateway.config import Settings
from gateway.deps import check_token, websocket_credentials
from gateway.errors import APIError, ModelNotFound
from gateway.limits import client_key
from gateway.stream_audio import SAMPLE_RATE, FrameError, WebmDecoder, pcm_to_float
from gateway.streaming import ingest
from gateway.streaming import session as core
from gateway.streaming.serving import triton_decoder
from gateway.streaming.turns import ServerVad

log = logging.getLogger("gateway.stream")
router = APIRouter(tags=["stream"])
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

FORMATS = ("pcm_s16le", "pcm_f32le", "webm", "ogg")
CONTAINER = {"webm": "matroska", "ogg": "ogg"}

# Close codes (RFC 6455).
NORMAL, UNSUPPORTED_DATA, POLICY, TOO_BIG, INTERNAL, TRY_AGAIN_LATER = 1000, 1003, 1008, 1009, 1011, 1013


class ProtocolError(Exception):
    def __init__(self, message: str, code: int = POLICY) -> None:
        super().__init__(message)
        self.message, self.code = message, code


# -- one stream --------------------------------------------------------------------------------
@dataclass
class StartMessage:
    language: str
    task: str
    chinese: str | None
    format: str
    model: str

    @classmethod
    def parse(cls, raw: dict, resolve_model: Callable[[str | None], str]) -> "StartMessage":
        """``resolve_model`` is ``Settings.resolve_model``: the HTTP routes' aliases and name check."""
        if raw.get("type") != "start":
            raise ProtocolError("the first message must be a JSON start message: {\"type\": \"start\", ...}")
        language = str(raw.get("language") or "").strip().lower()
        if language in ("auto", "detect"):
            language = ""
        if len(language) > 8 or not all(c.isalpha() or c == "-" for c in language):
            raise ProtocolError(f"invalid language {raw.get('language')!r}")
        task = str(raw.get("task") or "transcribe")
        if task not in ("transcribe", "translate"):
            raise ProtocolError("task must be 'transcribe' or 'translate'")
        fmt = str(raw.get("format") or "pcm_s16le").lower()
        if fmt not in FORMATS:
            raise ProtocolError(f"format must be one of {', '.join(FORMATS)}")
        rate = raw.get("sample_rate", SAMPLE_RATE)
        if fmt.startswith("pcm") and (not isinstance(rate, (int, float)) or isinstance(rate, bool) or int(rate) != SAMPLE_RATE):
            raise ProtocolError(f"sample_rate must be {SAMPLE_RATE} for raw PCM (got {rate!r}); resample on the client")
        try:
            model = resolve_model(str(raw.get("model") or ""))
        except ModelNotFound as exc:
            raise ProtocolError(exc.message) from None
        chinese = raw.get("chinese")
        return cls(language, task, None if chinese is None else str(chinese), fmt, model)


class Stream:
    """One ``/v1/stream`` connection around a ``StreamSession`` (the streaming core, server VAD on)."""

    def __init__(self, ws: WebSocket, start: StartMessage, settings: Settings, session: core.StreamSession) -> None:
        self.ws, self.start, self.settings, self.session = ws, start, settings, session
        self.words: list[dict] = []  # every committed word, on the stream's timeline
        self.language = start.language
        self.ingest = ingest.Ingest(ws, session, settings, paced=False)
        # MediaRecorder chunks: decoded on the decoder's thread, taken before each read and at the end
        self.decoder = (WebmDecoder(None, CONTAINER[start.format], max_pending=int(settings.stream_max_buffer_s * SAMPLE_RATE))
                        if start.format in CONTAINER else None)

    # -- audio in ---------------------------------------------------------------------------
    async def _pull_decoded(self) -> None:
        if self.decoder is not None:
            await self.session.append(self.decoder.drain())  # FrameError if the container was garbage

    async def receive_loop(self) -> str:
        """Read frames until stop (returns "stop") or the client leaves (returns "disconnect")."""
        while True:
            await self._pull_decoded()
            try:
                message = await self.ingest.next()
            except ingest.IngestError as exc:
                raise ProtocolError(exc.message, TOO_BIG if isinstance(exc, ingest.TooBig) else POLICY) from None
            if message["type"] == "websocket.disconnect":
                return "disconnect"
            data = message.get("bytes")
            if data is not None:
                if self.decoder is not None:
                    self.decoder.feed(data)
                else:
                    await self.session.append(pcm_to_float(data, self.start.format))
                try:
                    self.ingest.check_ahead()
                except ingest.TooFast as exc:
                    raise ProtocolError(exc.message, POLICY) from None
                continue
            try:
                control = json.loads(message.get("text") or "")
            except ValueError:
                raise ProtocolError("text frames must be JSON control messages") from None
            kind = control.get("type") if isinstance(control, dict) else None
            if kind == "stop":
                return "stop"
            if kind == "start":
                raise ProtocolError("the stream is already started")
            raise ProtocolError(f"unknown message type {kind!r}; expected binary audio or {{\"type\": \"stop\"}}")

    async def finish(self) -> None:
        """After stop: the rest of the audio, the open turn committed, every turn decoded."""
        if self.decoder is not None:
            await asyncio.to_thread(self.decoder.close)
            await self._pull_decoded()
        await self.session.finish()

    # -- events out -------------------------------------------------------------------------
    async def _send(self, event: dict) -> None:
        await self.ws.send_text(json.dumps(event, ensure_ascii=False))

    async def send_loop(self) -> None:
        """Core events -> ``partial`` / ``final``; returns at the ``None`` the route puts after finish."""
        while (event := await self.session.events.get()) is not None:
            audio_end = round(self.session.received / SAMPLE_RATE, 3)
            if isinstance(event, core.Delta):
                await self._send({"type": "partial", "text": event.text, "words": [], "audio_end": audio_end,
                                  "processed_to": round(event.audio_end_s, 3),
                                  "buffer_s": round(self.session.backlog_s, 2), "compute_s": round(event.compute_s, 3)})
            elif isinstance(event, core.Completed):
                self.language = self.language or event.result.language
                words = [{"word": w.word, "start": round(w.start + event.start_s, 3),
                          "end": round(w.end + event.start_s, 3)} for w in event.result.words if w.word.strip()]
                if words:
                    self.words.extend(words)
                    await self._send({"type": "final", "words": words, "text": _joined(words), "audio_end": audio_end})
                await self._send({"type": "partial", "text": "", "words": [], "audio_end": audio_end,
                                  "processed_to": round(event.end_s, 3), "buffer_s": round(self.session.backlog_s, 2),
                                  "compute_s": round(event.compute_s, 3)})
            elif isinstance(event, core.Failed):
                raise event.error

    async def done(self) -> None:
        await self._send({"type": "done", "text": _joined(self.words), "language": self.language,
                          "duration": round(self.session.received / SAMPLE_RATE, 3), "steps": self.session.decodes})

    async def close(self) -> None:
        if self.decoder is not None:
            self.decoder.close(wait_s=0)  # the daemon thread sees end of input and exits
        await self.session.close()


def _joined(words: list[dict]) -> str:
    return "".join(w["word"] for w in words).strip()


# -- routes ------------------------------------------------------------------------------------
async def _close(ws: WebSocket, code: int, reason: str, error: str | None = None) -> None:
    if ws.client_state != WebSocketState.CONNECTED or ws.application_state != WebSocketState.CONNECTED:
        return
    try:
        if error:
            await ws.send_text(json.dumps({"type": "error", "message": error}, ensure_ascii=False))
        await ws.close(code, reason[:120])
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass


async def _start_message(ws: WebSocket, settings: Settings) -> StartMessage | None:
    """The client's start message, or None (the client was told why and the socket closed)."""
    try:
        async with asyncio.timeout(settings.stream_idle_s):
            message = await ws.receive()
    except TimeoutError:
        await _close(ws, POLICY, "no start message", "no start message")
        return None
    if message["type"] == "websocket.disconnect":
        return None
    if message.get("text") is None:
        await _close(ws, POLICY, "audio before start", "audio before the start message; send {\"type\": \"start\", ...} first")
        return None
    try:
        raw = json.loads(message["text"])
        if not isinstance(raw, dict):
            raise ValueError
        return StartMessage.parse(raw, settings.resolve_model)
    except ValueError as exc:
        await _close(ws, POLICY, "bad start message", f"bad start message: {exc or 'not a JSON object'}")
    except ProtocolError as exc:
        await _close(ws, exc.code, "bad start message", exc.message)
    return None


def _session(ws: WebSocket, settings: Settings, start: StartMessage, ticket: int) -> core.StreamSession:
    """The core session for a start message: words on every turn, the server VAD's defaults."""
    options = service.options_for(language=start.language, task=start.task, word_timestamps=True)
    decoding = core.Decoding(start.model, options, service.conversion_for(settings, start.chinese, start.language))
    admission = ws.app.state.stream_admission
    turn = ServerVad(settings.stream_vad_threshold, settings.stream_prefix_padding_ms, settings.stream_silence_ms)
    config = replace(core.StreamConfig.from_settings(settings), vad_lead_s=settings.stream_vad_lead_s)
    return core.StreamSession(triton_decoder(ws.app.state.triton, admission, ticket), decoding, config, turn,
                              observe=partial(admission.observe, ticket), vad_limiter=admission.vad_limiter)


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    settings: Settings = ws.app.state.settings
    await ws.accept()
    try:
        check_token(settings, websocket_credentials(ws))
    except APIError:
        await _close(ws, POLICY, "unauthorized", "Missing or incorrect API key (Authorization: Bearer, or ?api_key=)")
        return
    admission = ws.app.state.stream_admission
    ticket, refusal = admission.try_enter(client_key(ws.scope, settings.client_key))
    if ticket is None:
        await _close(ws, TRY_AGAIN_LATER, refusal, refusal)
        return
    connection: Stream | None = None
    try:
        start = await _start_message(ws, settings)
        if start is None:
            return
        try:
            connection = Stream(ws, start, settings, _session(ws, settings, start, ticket))
        except APIError as exc:
            await _close(ws, POLICY, "bad start message", f"bad start message: {exc.message}")
            return
        connection.session.start()
        receiver = asyncio.create_task(connection.receive_loop())
        sender = asyncio.create_task(connection.send_loop())
        try:
            await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            if receiver.done() and not receiver.cancelled() and receiver.exception() is None:
                if receiver.result() == "disconnect":
                    return  # finally: the decodes in flight are cancelled
                await connection.finish()  # stop: the open turn committed, every turn decoded
                connection.session.events.put_nowait(None)
                await sender
                await connection.done()
                await _close(ws, NORMAL, "done")
                return
            failed = receiver if receiver.done() else sender
            await _fail(ws, failed.exception())
        except Exception as exc:  # from finish() or the sender after stop
            await _fail(ws, exc)
        finally:
            await cancel_and_wait(receiver, sender)
    finally:
        admission.leave(ticket)  # first: a cancelled close() below must not leak the slot
        if connection is not None:
            await connection.close()


async def _fail(ws: WebSocket, exc: BaseException | None) -> None:
    if isinstance(exc, FrameError):
        await _close(ws, UNSUPPORTED_DATA, "bad audio frame", f"bad audio frame: {exc}")
    elif isinstance(exc, ProtocolError):
        await _close(ws, exc.code, "protocol error", exc.message)
    elif exc is None or isinstance(exc, (WebSocketDisconnect, RuntimeError, OSError)):
        return
    else:
        if not isinstance(exc, APIError):
            log.warning("stream failed: %r", exc)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        await _close(ws, INTERNAL, "transcription failed", f"transcription failed: {message}")


@router.get("/live", include_in_schema=False)
async def live_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "live.html", media_type="text/html; charset=utf-8")
