"""The streaming core: one live session, fed 16 kHz float32, that turns speech into transcribed turns.

Audio goes in with ``append`` (in order; the caller awaits each). Server VAD (``turns.TurnDetector`` over
Silero probabilities computed off the event loop) opens and closes turns; without it (``turn=None``) the
client commits. Every turn is decoded once, whole, when it is committed (``Completed``): the cost of a
turn does not grow with the session. While a turn is open, its audio so far is decoded every
``partial_s`` of new audio for a hypothesis (``Delta``: the words two hypotheses in a row agree on); a
partial is skipped when the decoder is busy (finals never are). A session's turns are decoded in order,
each with the end of the previous turns' text as its prompt.

With ``config.vad_lead_s``, the VAD hears audio no faster than real time plus that lead (until
``finish``): a client far ahead of real time is not heard, at one core's cost, before it is refused.

Nothing is dropped: while the audio waiting to be decoded exceeds ``max_backlog_s``, ``room()`` blocks
and the adapter stops reading from its client (who is paced by its socket), until a decode catches up.
Events leave through ``events`` (an ``asyncio.Queue``), in order; the protocol adapters
(``gateway/routes/realtime.py``, ``gateway/routes/stream.py``) translate them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import anyio
import anyio.to_thread
import numpy as np

from gateway.streaming.config import Decoding, StreamConfig  # noqa: F401 (re-exported)
from gateway.streaming.hypotheses import new_id, stable_prefix, tokens
from gateway.streaming.outcomes import (  # noqa: F401 (re-exported: the adapters read them as session.*)
    Cleared, Committed, Completed, Decoder, Delta, EmptyBuffer, Event, Failed, SpeechStarted, SpeechStopped)
from gateway.streaming.turns import SAMPLE_RATE, Boundary, ServerVad, TurnDetector
from gateway.streaming.vad import FRAME, SpeechProbability

MIN_COMMIT = SAMPLE_RATE // 10  # OpenAI refuses to commit less than 100 ms


@dataclass
class _Turn:
    item_id: str
    start: int
    end: int
    audio: np.ndarray
    committed_at: float


class StreamSession:
    """One live session. ``turn`` is the server VAD, or None for client commits. ``vad`` makes the speech
    probability function (tests pass a fake; the default is Silero); ``observe`` is told how long each turn
    took from its commit to its transcript (admission control watches it); ``vad_limiter`` bounds the VAD
    calls running at once."""

    def __init__(self, decode: Decoder, decoding: Decoding, config: StreamConfig = StreamConfig(),
                 turn: ServerVad | None = ServerVad(), vad: Callable[[], Callable[[np.ndarray], np.ndarray]] | None = None,
                 observe: Callable[[float], None] | None = None, vad_limiter: anyio.CapacityLimiter | None = None) -> None:
        self.decode, self.decoding, self.config = decode, decoding, config
        self._observe = observe or (lambda lag_s: None)  # seconds from a commit to its transcript
        self._vad_limiter = vad_limiter  # VAD calls of all sessions one at a time
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.received = 0  # samples appended over the whole session
        self.decodes = 0
        self._chunks: list[np.ndarray] = []
        self._base = 0  # session sample of the first kept sample
        self._kept = 0  # samples kept
        self._frames = 0  # VAD frames seen
        self._vad_factory = vad
        self._vad = None
        self._vad_fresh = False
        self._detector: TurnDetector | None = None
        self._open: tuple[str, int] | None = None  # (item, first sample) of the turn being spoken
        self._last_item: str | None = None
        self._pending: deque[_Turn] = deque()
        self._partial_at = 0
        # when the last partial was decoded; the first waits partial_s from the start too, so a client that
        # is refused within its first second (one far ahead of real time) has cost no decode
        self._partial_wall = time.monotonic()
        self._hypothesis: list[str] = []
        self._emitted = 0
        self._history = ""
        self._closing = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._worker: asyncio.Task | None = None
        self._listener: asyncio.Task | None = None
        self._unheard: list[np.ndarray] = []  # appended, not yet heard by the VAD
        self._heard_to = 0  # session samples the VAD has heard
        self._ignore_before = 0  # the client cleared the buffer here: no speech before it
        self._hear = asyncio.Event()
        self._heard = asyncio.Event()
        self._heard.set()
        self._started = time.monotonic()  # the session's wall clock, for the VAD's lead
        self._paced = config.vad_lead_s is not None  # until finish: the rest is heard at once
        self.set_turn_detection(turn)

    # -- configuration ---------------------------------------------------------------------------
    @property
    def turn(self) -> ServerVad | None:
        return self._detector.vad if self._detector is not None else None

    def set_turn_detection(self, turn: ServerVad | None) -> None:
        """Switch between server VAD and client commits; the audio not yet committed stays."""
        if turn is None:
            self._detector = None
            self._unheard = []  # what the VAD had not heard yet is the client's to commit now
            self._heard.set()
            return
        if self._detector is not None:
            self._detector.vad = turn
            return
        # the VAD starts hearing here: frame 0 is the next sample appended
        self._detector = TurnDetector(turn, self.config.max_turn_s, origin=self.received)
        self._detector.reset(self.received)
        self._frames, self._heard_to, self._unheard = 0, self.received, []
        self._vad_fresh = True  # the VAD starts afresh (reset on its own task, not under a call in flight)
        if self._open is not None:  # a manual buffer in progress: it goes on as the VAD's turn
            self._detector.in_turn, self._detector.turn_start = True, self._open[1]

    def set_decoding(self, decoding: Decoding) -> None:
        self.decoding = decoding

    # -- audio in --------------------------------------------------------------------------------
    async def room(self) -> None:
        """Returns once the session can take more audio (its decode backlog is under the cap)."""
        await self._room.wait()

    @property
    def backlog_s(self) -> float:
        """Audio waiting to be decoded: committed turns and the open one."""
        pending = sum(t.end - t.start for t in self._pending)
        open_turn = self.received - self._open[1] if self._open else 0
        unheard = self.received - self._heard_to if self._detector is not None and not self._open else 0
        return (pending + open_turn + unheard) / SAMPLE_RATE

    async def append(self, samples: np.ndarray) -> None:
        """Take ``samples`` (the VAD hears them on its own task: a client is never held up by it)."""
        if not samples.size:
            return
        self._chunks.append(samples)
        self._kept += samples.size
        start = self.received
        self.received += samples.size
        if self._detector is not None:
            self._unheard.append(samples)
            self._heard.clear()
            self._hear.set()
        else:
            if self._open is None:
                self._open = (new_id("item"), start)
                self._drop_before(start)
            if self.received - self._open[1] >= self.config.max_turn_s * SAMPLE_RATE:
                self._commit(self.received)  # a manual buffer at Whisper's window: committed, not dropped
        self._check_room()
        self._wake.set()

    async def heard(self) -> None:
        """Returns once the VAD has heard everything appended so far."""
        await self._heard.wait()

    async def _listen(self) -> None:
        """The VAD: everything appended since its last call in one call off the loop (one call per append
        when it keeps up, fewer and longer ones when it does not), its turn boundaries applied in order."""
        while True:
            await self._hear.wait()
            self._hear.clear()
            while self._unheard and self._detector is not None:
                audio = self._hearable()
                if audio is None:  # ahead of the lead: wait for the clock (or finish)
                    await self._until_hearable()
                    continue
                if self._vad is None or self._vad_fresh:
                    self._vad = await anyio.to_thread.run_sync(self._vad_factory or SpeechProbability)
                    self._vad_fresh = False
                probs = await anyio.to_thread.run_sync(self._vad, audio, limiter=self._vad_limiter)
                self._heard_to += audio.size
                detector = self._detector
                if detector is None:
                    break
                first, self._frames = self._frames, self._frames + len(probs)
                cleared = (self._ignore_before - detector.origin) // FRAME - first  # frames before a clear
                if cleared > 0:
                    probs = probs.copy()
                    probs[:cleared] = 0.0
                for boundary in detector.feed(probs, first):
                    self._boundary(boundary)
                if self._open is None:
                    self._drop_before(detector.keep_from(self._heard_to))
                self._check_room()
                self._wake.set()
            if not self._unheard:
                self._heard.set()

    def _hearable(self) -> np.ndarray | None:
        """The unheard audio the VAD may hear now (all of it, unless paced), taken off ``_unheard``."""
        audio = np.concatenate(self._unheard) if len(self._unheard) > 1 else self._unheard[0]
        if self._paced:
            lead = self.config.vad_lead_s or 0.0
            allowed = int((time.monotonic() - self._started + lead) * SAMPLE_RATE) - self._heard_to
            if allowed < FRAME:
                return None
            if allowed < audio.size:
                self._unheard = [audio[allowed:]]
                return audio[:allowed]
        self._unheard = []
        return audio

    async def _until_hearable(self) -> None:
        """Sleeps until one more VAD frame is due by the clock, or ``finish`` lifts the pacing."""
        due = self._started + (self._heard_to + FRAME) / SAMPLE_RATE - (self.config.vad_lead_s or 0.0)
        try:
            async with asyncio.timeout(max(0.0, due - time.monotonic())):
                await self._hear.wait()
        except TimeoutError:
            pass
        self._hear.clear()

    def _boundary(self, b: Boundary) -> None:
        if b.kind == "start":
            self._open = (new_id("item"), b.sample)
            self._put(SpeechStarted(self._open[0], b.speech / SAMPLE_RATE))
        elif self._open is not None:
            self._put(SpeechStopped(self._open[0], b.speech / SAMPLE_RATE))
            self._commit(b.sample)

    async def commit(self) -> str:
        """The client's commit: the open turn (or the uncommitted buffer) becomes an item now (once the VAD
        has heard what came before it)."""
        await self.heard()
        if self._open is None or self.received - self._open[1] < MIN_COMMIT:
            have = 0 if self._open is None else (self.received - self._open[1]) * 1000 // SAMPLE_RATE
            raise EmptyBuffer(f"buffer too small: expected at least 100ms of audio, but buffer only has {have}ms")
        item = self._open[0]
        if self._detector is not None:
            stop = self._detector.close_turn(self.received)
            if stop is not None:
                self._boundary(stop)
                return item
        self._commit(self.received)
        return item

    def clear(self) -> None:
        """Drop the audio not yet committed (the open turn with it)."""
        self._open = None
        self._drop_before(self.received)
        self._ignore_before = self.received  # what the VAD has not heard yet is no speech
        if self._detector is not None:
            self._detector.reset(self.received)
        self._reset_partial()
        self._put(Cleared())
        self._check_room()

    def _commit(self, end: int) -> None:
        assert self._open is not None
        item, start = self._open
        self._open = None
        self._pending.append(_Turn(item, start, end, self._slice(start, end), time.monotonic()))
        self._put(Committed(item, self._last_item, start / SAMPLE_RATE, end / SAMPLE_RATE))
        self._last_item = item
        self._reset_partial()
        self._drop_before(end)
        self._wake.set()

    def _slice(self, start: int, end: int) -> np.ndarray:
        audio = np.concatenate(self._chunks) if len(self._chunks) > 1 else (self._chunks[0] if self._chunks else np.zeros(0, np.float32))
        self._chunks = [audio] if audio.size else []
        return audio[max(0, start - self._base): max(0, end - self._base)].copy()

    def _drop_before(self, sample: int) -> None:
        drop = sample - self._base
        if drop <= 0:
            return
        while self._chunks and drop >= self._chunks[0].size:
            drop -= self._chunks[0].size
            self._base += self._chunks[0].size
            self._kept -= self._chunks[0].size
            self._chunks.pop(0)
        if self._chunks and drop > 0:
            self._chunks[0] = self._chunks[0][drop:]
            self._base += drop
            self._kept -= drop

    def _check_room(self) -> None:
        if self.backlog_s > self.config.max_backlog_s:  # turns waiting, the open one, audio the VAD has not heard
            self._room.clear()
        else:
            self._room.set()

    def _put(self, event: Event) -> None:
        self.events.put_nowait(event)

    # -- decoding ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="stream-session")
        self._listener = asyncio.create_task(self._listen(), name="stream-vad")

    async def finish(self) -> None:
        """End of audio: the open turn is committed (if it holds 100 ms), every turn decoded, then return."""
        self._paced = False  # the client is done: what the VAD has not heard yet is heard at once
        self._hear.set()
        await self.heard()
        if self._open is not None and self.received - self._open[1] >= MIN_COMMIT:
            await self.commit()
        self._closing = True
        self._wake.set()
        if self._worker is not None:
            await self._worker
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.wait({self._listener})

    async def close(self) -> None:
        """The client is gone: decodes in flight are cancelled (in Triton too)."""
        self._room.set()
        tasks = {t for t in (self._worker, self._listener) if t is not None and not t.done()}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # the decode's cancellation has reached the gRPC call

    def _prompt(self) -> str:
        own = self.decoding.options.prompt
        history = self._history[-self.config.prompt_chars:]
        return f"{own} {history}".strip() if own else history

    def _partial_due(self) -> bool:
        if self._open is None:
            return False
        length = self.received - self._open[1]
        # every partial_s of new audio, and no more often in wall time: a client far ahead of real time
        # costs no more partials than a live one
        return (length >= self.config.min_partial_s * SAMPLE_RATE
                and self.received - self._partial_at >= self.config.partial_s * SAMPLE_RATE
                and time.monotonic() - self._partial_wall >= self.config.partial_s)

    def _reset_partial(self) -> None:
        self._hypothesis, self._emitted, self._partial_at = [], 0, self.received

    async def _run(self) -> None:
        while True:
            if self._pending:
                await self._final(self._pending[0])
                self._pending.popleft()
                self._check_room()
                continue
            if self._closing:
                return
            if self._partial_due():
                if not await self._partial_unless_committed():
                    await self._sleep(0.25)  # busy: the partial waits for a quieter moment (or is overtaken)
                continue
            await self._sleep(None)

    async def _partial_unless_committed(self) -> bool:
        """A partial decode, given up (cancelled, in Triton too) as soon as a turn is committed: the final
        must not wait behind a partial of the same session. False when the decoder skipped it (busy)."""
        partial = asyncio.ensure_future(self._partial())
        waker: asyncio.Future | None = None
        try:
            while not partial.done():
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({partial, waker}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                if not partial.done() and (self._pending or self._closing):
                    partial.cancel()
                    await asyncio.wait({partial})
                    return True
            return partial.result()
        finally:  # this worker was cancelled: neither task is left pending (nor logged as destroyed)
            for task in (partial, waker):
                if task is not None and not task.done():
                    task.cancel()

    async def _sleep(self, timeout: float | None) -> None:
        self._wake.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _partial(self) -> bool:
        if self._open is None:  # committed before this task ran
            return True
        item, start = self._open
        end = self.received
        audio = self._slice(start, end)
        options = replace(self.decoding.options, prompt=self._prompt(), beam_size=self.config.partial_beam,
                          context=self.config.context, word_timestamps=False, vad_filter=False)
        t0 = time.perf_counter()
        try:
            result = await self.decode(audio, options, self.decoding.model, self.decoding.conversion, False)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed partial is only a missed hypothesis; the turn's final will tell
            self._partial_at = end
            return True
        if result is None:
            return False
        self.decodes += 1
        self._partial_at, self._partial_wall = end, time.monotonic()
        if self._open is None or self._open[0] != item:
            return True  # committed meanwhile: its final decode follows
        current = tokens(result.text)
        agreed = stable_prefix(self._hypothesis, current)
        delta = ""
        if agreed > self._emitted:
            delta = "".join(current[self._emitted:agreed])
            if self._emitted == 0:
                delta = delta.lstrip()
            self._emitted = agreed
        self._hypothesis = current
        self._put(Delta(item, delta, result.text.strip(), end / SAMPLE_RATE, time.perf_counter() - t0))
        return True

    async def _final(self, turn: _Turn) -> None:
        options = replace(self.decoding.options, prompt=self._prompt(), beam_size=self.config.final_beam,
                          context=self.config.context, vad_filter=False)
        t0 = time.perf_counter()
        try:
            result = await self.decode(turn.audio, options, self.decoding.model, self.decoding.conversion, True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the session goes on; the client is told this turn failed
            self._put(Failed(turn.item_id, exc))
            return
        assert result is not None
        self.decodes += 1
        self._observe(time.monotonic() - turn.committed_at)
        if result.text.strip():
            self._history = (self._history + " " + result.text.strip())[-self.config.prompt_chars:]
        self._put(Completed(turn.item_id, result, turn.start / SAMPLE_RATE, turn.end / SAMPLE_RATE,
                            time.perf_counter() - t0))
