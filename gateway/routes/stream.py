"""``/v1/stream`` (WebSocket): realtime transcription with LocalAgreement-2; ``GET /live``: the page.

Protocol. The client sends a JSON start message::

    {"type": "start", "language": "en" | "", "task": "transcribe" | "translate",
     "chinese": "s2twp" | "t2s" | "none" | ..., "sample_rate": 16000,
     "format": "pcm_s16le" | "pcm_f32le" | "webm" | "ogg", "model": "whisper"}

then binary audio frames (raw 16 kHz mono PCM, or MediaRecorder webm/ogg opus chunks), then
``{"type": "stop"}``. The server sends ``partial`` (tentative text), ``final`` (newly committed words
with start/end in seconds on the stream's timeline), ``error`` and, after stop, ``done`` (the whole
committed text); then it closes with 1000. Protocol errors close with 1003 (unusable data) or 1008
(policy: bad start message, audio before start, audio that falls ``GATEWAY_STREAM_IDLE_S`` behind real
time); a frame over ``GATEWAY_STREAM_MAX_FRAME_KIB`` closes with 1009; a full gateway, or a client with
``GATEWAY_MAX_STREAMS_PER_CLIENT`` streams open, is refused with 1013 (try again later).

Every step (``GATEWAY_STREAM_STEP_S`` of new audio) the stream's buffer is sent to Triton's model with
word timestamps and the committed text as prompt. All streams call the same model, so Triton's dynamic
batcher runs steps of different streams together; at most ``GATEWAY_STREAM_TRITON_CONCURRENCY`` steps of
all streams are outstanding at once, so streams cannot take Triton from uploads (a stream whose turn comes
late decodes all its new audio in one step). A stream costs no more than a live one: its steps are at
least ``GATEWAY_STREAM_STEP_S`` apart in wall time too, audio that gets more than
``GATEWAY_STREAM_MAX_AHEAD_S`` ahead of real time closes the stream with 1008 (files go to the upload
routes), and no frame is read while the buffer is at its cap (``GATEWAY_STREAM_MAX_BUFFER_S`` plus one
step) until a step has trimmed it: the buffer never grows past the cap. Settings
(gateway/config.py): ``GATEWAY_MAX_STREAMS`` (16), ``GATEWAY_STREAM_STEP_S`` (1.0),
``GATEWAY_STREAM_BEAM_SIZE`` (1; 0 = the model's default), ``GATEWAY_STREAM_TRIM_S`` (15),
``GATEWAY_STREAM_MAX_BUFFER_S`` (30), ``GATEWAY_STREAM_IDLE_S`` (30), ``GATEWAY_STREAM_MAX_AHEAD_S`` (10).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from starlette.websockets import WebSocketState

from gateway.errors import ModelNotFound
from gateway.limits import ClientCounter, client_key, presented_token
from gateway.stream_audio import SAMPLE_RATE, FrameError, WebmDecoder, pcm_to_float
from gateway.streaming import LocalAgreement, TimedWord, join_words, words_from_segments

log = logging.getLogger("gateway.stream")
router = APIRouter(tags=["stream"])
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

FORMATS = ("pcm_s16le", "pcm_f32le", "webm", "ogg")
CONTAINER = {"webm": "matroska", "ogg": "ogg"}
CHINESE = {"zh", "yue"}

# Close codes (RFC 6455).
NORMAL, UNSUPPORTED_DATA, POLICY, TOO_BIG, INTERNAL, TRY_AGAIN_LATER = 1000, 1003, 1008, 1009, 1011, 1013


@dataclass(frozen=True)
class StreamConfig:
    max_streams: int = 16
    step_s: float = 1.0
    beam_size: int = 1
    trim_s: float = 15.0
    max_buffer_s: float = 30.0
    idle_s: float = 30.0
    max_ahead_s: float = 10.0
    max_frame_bytes: int = 1 << 20
    min_first_s: float = 1.0  # audio needed before the first step

    @property
    def cap_samples(self) -> int:
        """The buffer no frame is read beyond: the hard cap plus one step, so that a step at the cap trims."""
        return int((self.max_buffer_s + self.step_s) * SAMPLE_RATE)

    @classmethod
    def from_settings(cls, settings: Any) -> "StreamConfig":
        """From the gateway's ``Settings`` (``GATEWAY_MAX_STREAMS``, ``GATEWAY_STREAM_*``)."""
        if settings is None:
            return cls()
        return cls(
            max_streams=settings.max_streams,
            step_s=settings.stream_step_s,
            beam_size=settings.stream_beam_size,
            trim_s=settings.stream_trim_s,
            max_buffer_s=max(settings.stream_trim_s, settings.stream_max_buffer_s),
            idle_s=settings.stream_idle_s,
            max_ahead_s=settings.stream_max_ahead_s,
            max_frame_bytes=settings.stream_max_frame_kib * 1024,
        )


class ProtocolError(Exception):
    def __init__(self, message: str, code: int = POLICY) -> None:
        super().__init__(message)
        self.message, self.code = message, code


# -- Triton ------------------------------------------------------------------------------------
# ``Transcriber``: async (model, audio, language, task, prompt, beam_size) -> (segments as dicts, language)
Transcriber = Callable[..., Any]
_own_clients: dict[tuple[str, int], Any] = {}


def _gateway_transcriber(triton: Any, steps: asyncio.Semaphore) -> Transcriber:
    """Use the gateway's shared ``TritonClient`` (gateway/triton.py) when the app has one; ``steps`` bounds
    the steps of all streams outstanding at once."""
    from gateway.results import Options

    async def call(model: str, audio: np.ndarray, language: str, task: str, prompt: str, beam_size: int):
        async with steps:
            result = await triton.transcribe(model, audio, Options(language=language, task=task, prompt=prompt,
                                                                   word_timestamps=True, beam_size=beam_size))
        segments = [{"start": s.start, "end": s.end, "text": s.text,
                     "words": [{"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
                               for w in (s.words or ())]} for s in result.segments]
        return segments, result.language

    return call


def _own_transcriber(url: str) -> Transcriber:
    """A small ``tritonclient.grpc.aio`` helper, one client per URL and event loop, shared by streams."""
    import tritonclient.grpc.aio as aio

    from client.core import OUTPUTS, build_inputs, parse_result

    key = (url, id(asyncio.get_running_loop()))
    if key not in _own_clients:
        _own_clients[key] = aio.InferenceServerClient(url)
    client = _own_clients[key]

    async def call(model: str, audio: np.ndarray, language: str, task: str, prompt: str, beam_size: int):
        result = await client.infer(model, build_inputs(aio, audio, language, task, prompt, True, beam_size, 0.0),
                                    outputs=[aio.InferRequestedOutput(n) for n in OUTPUTS], client_timeout=120.0)
        parsed = parse_result(result)
        return parsed.segments, parsed.language

    return call


def _transcriber(ws: WebSocket) -> Transcriber:
    state = ws.app.state
    override = getattr(state, "stream_transcriber", None)  # tests may install a fake
    if override is not None:
        return override
    triton = getattr(state, "triton", None)
    if triton is not None and hasattr(triton, "transcribe"):
        steps = getattr(state, "stream_steps", None) or asyncio.Semaphore(1 << 30)
        return _gateway_transcriber(triton, steps)
    settings = getattr(state, "settings", None)
    url = getattr(settings, "triton_url", None) or "localhost:8001"
    return _own_transcriber(url)


def _settings_value(ws: WebSocket, name: str, default: Any) -> Any:
    return getattr(getattr(ws.app.state, "settings", None), name, default)


def _chinese_converter(choice: str | None, default: str) -> Callable[[str], str]:
    from gateway import chinese

    return chinese.converter(chinese.resolve(choice, default))


def _authorized(ws: WebSocket) -> bool:
    api_key = _settings_value(ws, "api_key", None)
    if api_key is None:
        return True
    import secrets

    expected = api_key.get_secret_value()
    given = presented_token(ws.scope)
    return bool(given) and secrets.compare_digest(given.encode(), expected.encode())


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


class StreamSession:
    def __init__(self, ws: WebSocket, start: StartMessage, config: StreamConfig, transcribe: Transcriber,
                 convert: Callable[[str], str]) -> None:
        self.ws, self.start, self.config, self.transcribe, self.convert = ws, start, config, transcribe, convert
        self.agreement = LocalAgreement(trim_after_s=config.trim_s, max_buffer_s=config.max_buffer_s)
        self._audio = np.zeros(0, dtype=np.float32)  # the buffer: samples from agreement.buffer_start on ...
        self._arrived: list[np.ndarray] = []  # ... and what arrived since it was last read (joined then)
        self.buffered = 0  # samples in the buffer, those arrived included
        self.received = 0  # samples received over the whole stream
        self.processed_to = 0  # ``received`` at the last step
        self.stopped = False
        self.language = start.language
        self.steps = 0
        self.started = time.monotonic()
        self._last_step = self.started
        self.waited = 0.0  # seconds spent waiting for the client's next message
        self.held_s = 0.0  # seconds the gateway held back reading (the buffer at its cap)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()  # set when a step has shrunk the buffer
        self.decoder: WebmDecoder | None = None
        if start.format in CONTAINER:
            loop = asyncio.get_running_loop()
            self.decoder = WebmDecoder(lambda: loop.call_soon_threadsafe(self._wake.set), CONTAINER[start.format],
                                       max_pending=config.cap_samples)

    # -- audio in ---------------------------------------------------------------------------
    @property
    def audio(self) -> np.ndarray:
        """The buffer as one array (frames are joined when it is read, not one by one as they arrive)."""
        if self._arrived:
            self._audio = np.concatenate([self._audio, *self._arrived])
            self._arrived = []
        return self._audio

    def _append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._arrived.append(samples)
            self.buffered += samples.size
            self.received += samples.size

    def _pull_decoded(self) -> None:
        if self.decoder is not None:
            self._append(self.decoder.drain())  # FrameError if the container was garbage

    def _ahead_s(self) -> float:
        """How far the audio received is ahead of real time since the stream started."""
        return self.received / SAMPLE_RATE - (time.monotonic() - self.started)

    async def _room_in_buffer(self) -> None:
        """Hold back reading while the buffer is at its cap, until a step trims it (the rest of the audio
        waits in the client's socket meanwhile)."""
        self._pull_decoded()
        while self.buffered >= self.config.cap_samples:
            t0 = time.monotonic()
            self._room.clear()
            self._wake.set()
            await self._room.wait()
            self.held_s += time.monotonic() - t0
            self._pull_decoded()

    def _check_real_time(self) -> None:
        """A live stream never runs ahead of real time; past ``max_ahead_s`` the client is closed (1008)."""
        ahead = self._ahead_s()
        if ahead > self.config.max_ahead_s:
            raise ProtocolError(f"audio arrives faster than real time ({ahead:.1f} s ahead; the limit is "
                                f"{self.config.max_ahead_s:g} s): stream live audio, or upload files to "
                                f"/v1/audio/transcriptions", POLICY)

    async def _next_message(self) -> dict:
        """The client's next message. Waiting counts against the stream: its audio may fall at most
        ``idle_s`` behind the time spent waiting for it (a client that sends nothing, or a few bytes a
        minute, is closed); the time the gateway held back reading does not count."""
        timeout = self.config.idle_s + self.received / SAMPLE_RATE - self.waited
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(max(timeout, 0.0)):  # not wait_for: see _wait_for_work
                return await self.ws.receive()
        except TimeoutError:
            raise ProtocolError(f"the stream's audio fell {self.config.idle_s:.0f} s behind real time "
                                f"({self.received / SAMPLE_RATE:.1f} s of audio in {self.waited + timeout:.0f} s)",
                                POLICY) from None
        finally:
            self.waited += time.monotonic() - t0

    async def receive_loop(self) -> str:
        """Read frames until stop (returns "stop") or the client leaves (returns "disconnect")."""
        while True:
            await self._room_in_buffer()
            message = await self._next_message()
            if message["type"] == "websocket.disconnect":
                return "disconnect"
            data = message.get("bytes")
            if data is not None:
                if len(data) > self.config.max_frame_bytes:
                    raise ProtocolError(f"a frame of {len(data)} bytes; the limit is {self.config.max_frame_bytes}",
                                        TOO_BIG)
                if self.decoder is not None:
                    self.decoder.feed(data)
                    self._pull_decoded()
                else:
                    self._append(pcm_to_float(data, self.start.format))
                    self._wake.set()
                self._check_real_time()
                continue
            try:
                control = json.loads(message.get("text") or "")
            except ValueError:
                raise ProtocolError("text frames must be JSON control messages") from None
            kind = control.get("type") if isinstance(control, dict) else None
            if kind == "stop":
                self.stopped = True
                self._wake.set()
                return "stop"
            if kind == "start":
                raise ProtocolError("the stream is already started")
            raise ProtocolError(f"unknown message type {kind!r}; expected binary audio or {{\"type\": \"stop\"}}")

    # -- steps ------------------------------------------------------------------------------
    async def _send(self, event: dict) -> None:
        await self.ws.send_text(json.dumps(event, ensure_ascii=False))

    def _words_out(self, words: list[TimedWord]) -> list[dict]:
        chinese = self.language in CHINESE
        return [{**w.as_dict(), "word": self.convert(w.word) if chinese else w.word} for w in words]

    def _text_out(self, words: list[TimedWord]) -> str:
        text = join_words(words)
        return self.convert(text) if self.language in CHINESE else text

    async def _infer(self) -> tuple[list[TimedWord], list[float], float]:
        """Transcribe the current buffer; words and segment ends on the stream timeline."""
        audio = self.audio
        offset = self.agreement.buffer_start
        buffer_end = offset + audio.size / SAMPLE_RATE
        self.processed_to = self.received
        segments, language = await self.transcribe(self.start.model, audio, self.language, self.start.task,
                                                   self.agreement.prompt, self.config.beam_size)
        self.steps += 1
        if not self.language and language and audio.size >= 2 * SAMPLE_RATE:
            self.language = language  # lock the detected language once it has 2 s of evidence
        self._detected = language
        words, ends = words_from_segments(segments, offset)
        return words, ends, buffer_end

    def _trim(self, trim_to: float | None) -> None:
        if trim_to is None:
            return
        # ``agreement.buffer_start`` is already ``trim_to``; the buffer held audio from the old start.
        drop = int(round((trim_to - self._old_start) * SAMPLE_RATE))
        self._audio = self.audio[max(0, drop):]
        self.buffered = self._audio.size

    async def step(self) -> None:
        self._last_step = time.monotonic()
        self._old_start = self.agreement.buffer_start
        t0 = time.perf_counter()
        words, ends, buffer_end = await self._infer()
        compute = time.perf_counter() - t0
        result = self.agreement.update(words, buffer_end, ends)
        self._trim(result.trim_to)
        self._room.set()
        audio_end = round(self.received / SAMPLE_RATE, 3)
        if result.committed:
            await self._send({"type": "final", "words": self._words_out(result.committed),
                              "text": self._text_out(result.committed), "audio_end": audio_end})
        await self._send({"type": "partial", "text": self._text_out(result.tentative),
                          "words": self._words_out(result.tentative), "audio_end": audio_end,
                          "processed_to": round(buffer_end, 3), "buffer_s": round(self.audio.size / SAMPLE_RATE, 2),
                          "compute_s": round(compute, 3)})

    async def _wait_for_work(self) -> None:
        """Until a step is due: ``step_s`` of new audio (``min_first_s`` for the first), and as long in wall
        time since the last step began (since the start, for the first): a stream faster than real time gets
        no more steps than a live one."""
        first = self.steps == 0
        need = int(max(self.config.step_s, self.config.min_first_s if first else 0) * SAMPLE_RATE)
        while not self.stopped and self.received - self.processed_to < need:
            self._wake.clear()
            self._pull_decoded()
            if self.stopped or self.received - self.processed_to >= need:
                break
            await self._wake.wait()
        due = (self.started + self.config.min_first_s) if first else (self._last_step + self.config.step_s)
        while not self.stopped and time.monotonic() < due:
            self._wake.clear()
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that comes as
                # the event is set, and the closed stream's worker would go on to its next step
                async with asyncio.timeout(due - time.monotonic()):
                    await self._wake.wait()
            except TimeoutError:
                break
        self._pull_decoded()

    async def work_loop(self) -> None:
        """Step until stop, then a last pass that commits everything, then ``done``."""
        while not self.stopped:
            await self._wait_for_work()
            if self.stopped:
                break
            await self.step()
        if self.decoder is not None:
            await asyncio.to_thread(self.decoder.close)
            self._pull_decoded()
        final: list[TimedWord] = []
        if self.received > self.processed_to and self.audio.size >= SAMPLE_RATE // 4:
            self._old_start = self.agreement.buffer_start
            words, _, _ = await self._infer()
            final = self.agreement.flush_final(words)
        else:
            final = self.agreement.finish()
        if final:
            await self._send({"type": "final", "words": self._words_out(final), "text": self._text_out(final),
                              "audio_end": round(self.received / SAMPLE_RATE, 3)})
        await self._send({"type": "done", "text": self._text_out(self.agreement.committed),
                          "language": self.language or getattr(self, "_detected", ""),
                          "duration": round(self.received / SAMPLE_RATE, 3), "steps": self.steps})

    def close(self) -> None:
        self._room.set()
        if self.decoder is not None:
            self.decoder.close(wait_s=0)  # the daemon thread sees end of input and exits


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


async def _cancel(*tasks: asyncio.Task) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    state = ws.app.state
    config = getattr(state, "stream_config", None) or StreamConfig.from_settings(getattr(state, "settings", None))
    await ws.accept()
    if not _authorized(ws):
        await _close(ws, POLICY, "unauthorized", "Missing or incorrect API key (Authorization: Bearer, or ?api_key=)")
        return
    active = getattr(state, "streams_active", 0)
    if active >= config.max_streams:
        await _close(ws, TRY_AGAIN_LATER, f"too many streams (limit {config.max_streams}); try again later",
                     f"too many streams (limit {config.max_streams}); try again later")
        return
    clients: ClientCounter | None = getattr(state, "stream_clients", None)
    client = client_key(ws.scope, _settings_value(ws, "client_key", "ip"))
    if clients is not None and not clients.try_acquire(client):
        reason = f"too many streams from this client (limit {clients.limit}); try again later"
        await _close(ws, TRY_AGAIN_LATER, reason, reason)
        return
    state.streams_active = active + 1
    session: StreamSession | None = None
    try:
        try:
            message = await asyncio.wait_for(ws.receive(), timeout=config.idle_s)
        except asyncio.TimeoutError:
            await _close(ws, POLICY, "no start message", "no start message")
            return
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is None:
            await _close(ws, POLICY, "audio before start", "audio before the start message; send {\"type\": \"start\", ...} first")
            return
        try:
            raw = json.loads(message["text"])
            if not isinstance(raw, dict):
                raise ValueError
            start = StartMessage.parse(raw, ws.app.state.settings.resolve_model)
            convert = _chinese_converter(start.chinese, _settings_value(ws, "chinese_default", "s2twp"))
        except ValueError as exc:
            await _close(ws, POLICY, "bad start message", f"bad start message: {exc or 'not a JSON object'}")
            return
        except ProtocolError as exc:
            await _close(ws, exc.code, "bad start message", exc.message)
            return
        session = StreamSession(ws, start, config, _transcriber(ws), convert)
        receiver = asyncio.create_task(session.receive_loop())
        worker = asyncio.create_task(session.work_loop())
        try:
            await asyncio.wait({receiver, worker}, return_when=asyncio.FIRST_COMPLETED)
            if receiver.done() and not receiver.cancelled() and receiver.exception() is None:
                if receiver.result() == "disconnect":
                    return  # finally: the worker is cancelled
                await worker  # stop: the last pass and ``done``
                await _close(ws, NORMAL, "done")
                return
            failed = receiver if receiver.done() else worker
            exc = failed.exception()
            if isinstance(exc, FrameError):
                await _close(ws, UNSUPPORTED_DATA, "bad audio frame", f"bad audio frame: {exc}")
            elif isinstance(exc, ProtocolError):
                await _close(ws, exc.code, "protocol error", exc.message)
            elif isinstance(exc, WebSocketDisconnect) or exc is None:
                return
            else:
                log.warning("stream failed: %r", exc)
                message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                await _close(ws, INTERNAL, "transcription failed", f"transcription failed: {message}")
        except FrameError as exc:  # from ``await worker`` after stop
            await _close(ws, UNSUPPORTED_DATA, "bad audio frame", f"bad audio frame: {exc}")
        except (WebSocketDisconnect, RuntimeError):
            return
        except Exception as exc:
            log.warning("stream failed: %r", exc)
            await _close(ws, INTERNAL, "transcription failed", f"transcription failed: {getattr(exc, 'message', None) or exc}")
        finally:
            await _cancel(receiver, worker)
    finally:
        if session is not None:
            session.close()
        state.streams_active = getattr(state, "streams_active", 1) - 1
        if clients is not None:
            clients.release(client)


@router.get("/live", include_in_schema=False)
async def live_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "live.html", media_type="text/html; charset=utf-8")
