"""What the live sessions share in one gateway: the decoder over the shared Triton client, and admission.

Decodes go through ``gateway.service.infer`` with the app's ``TritonClient``, as uploads do, so the
turns of concurrent sessions meet in Triton's dynamic batches. A partial decode is skipped (``None``)
while any session's final is being decoded, requests wait for a Triton slot, or ``partial_slots``
partials are outstanding: finals are what must not slip.

Admission: a session is refused at the start when ``max_sessions`` are live, or its client (IP or token,
``GATEWAY_CLIENT_KEY``) has ``GATEWAY_MAX_STREAMS_PER_CLIENT`` live, or when the turns of the
last ``LAG_WINDOW_S`` of the live sessions completed later than ``max_lag_s`` after they ended on average (the server is not
keeping up; one more session would make every session late), or -- predicted before any session is late -- when
the live sessions' turn decodes would take ``final_capacity`` seconds per second or more with one more session
counted at their average (``per_session_load``: Triton time per wall second over the last ``LOAD_WINDOW_S``,
waiting included, so it rises as Triton saturates; partials are left out: they only use time finals leave).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import anyio
import numpy as np

from gateway import service
from gateway.limits import ClientCounter
from gateway.results import Options, Transcription
from gateway.streaming.session import Decoder

LAG_WINDOW_S = 10.0
LOAD_WINDOW_S = 20.0


def triton_decoder(triton, admission: "Admission", session: int = 0) -> Decoder:
    """The decoder of one live session (``session``: its admission ticket, whose turn decodes are counted)."""
    async def decode(samples: np.ndarray, options: Options, model: str, conversion: str,
                     final: bool) -> Transcription | None:
        if final:
            admission.finals_in_flight += 1
            started = time.monotonic()
            try:
                async with admission.live_slots:
                    return await service.infer(triton, model, samples, options, conversion)
            finally:
                admission.finals_in_flight -= 1
                admission.decoded(time.monotonic() - started, session)
        if admission.busy or getattr(triton, "waiting", 0) > 0:
            return None
        async with admission.partial_slots, admission.live_slots:
            return await service.infer(triton, model, samples, options, conversion)

    return decode


class Admission:
    def __init__(self, max_sessions: int, max_lag_s: float, partial_slots: int = 2, live_slots: int = 4,
                 per_client: int = 4, final_capacity: float = float("inf")) -> None:
        self.max_sessions, self.max_lag_s, self.final_capacity = max_sessions, max_lag_s, final_capacity
        self._finals: deque[tuple[float, float, int]] = deque()  # (when it ended, seconds, session) of turn decodes
        self.partial_slots = asyncio.Semaphore(partial_slots)
        # decodes of all live sessions outstanding to Triton at once: live sessions cannot take all of
        # Triton from uploads (each call also counts against the Triton client's own limit)
        self.live_slots = asyncio.Semaphore(live_slots)
        self.clients = ClientCounter(per_client)  # live sessions per client (gateway.limits.client_key)
        self._client_of: dict[int, str] = {}
        self.finals_in_flight = 0  # turns being decoded, all sessions
        # VAD calls of all sessions one at a time, on the one shared ONNX session (about 6 ms of CPU per audio
        # second): 16 live sessions keep one thread about a tenth busy
        self.vad_limiter = anyio.CapacityLimiter(1)
        self._live: dict[int, list[tuple[float, float]]] = {}  # session -> (when, seconds commit -> transcript)
        self._next = 0

    @classmethod
    def from_settings(cls, settings) -> "Admission":
        return cls(settings.max_streams, settings.stream_admit_lag_s, settings.stream_partial_concurrency,
                   settings.stream_triton_concurrency, settings.max_streams_per_client, settings.stream_final_capacity)

    @property
    def busy(self) -> bool:
        """No partial now: a turn's final is being decoded, or the partial slots are taken."""
        return self.finals_in_flight > 0 or self.partial_slots.locked() or self.live_slots.locked()

    @property
    def active(self) -> int:
        return len(self._live)

    def observe(self, session: int, lag_s: float) -> None:
        if session in self._live:
            now = time.monotonic()
            self._live[session] = [(t, lag) for t, lag in self._live[session] if now - t <= LAG_WINDOW_S] + [(now, lag_s)]

    def decoded(self, seconds: float, session: int = 0) -> None:
        """A turn of ``session`` was decoded in ``seconds`` (Triton's queue included)."""
        now = time.monotonic()
        self._finals.append((now, seconds, session))
        while self._finals and now - self._finals[0][0] > LOAD_WINDOW_S:
            self._finals.popleft()

    def per_session_load(self) -> float:
        """Seconds of turn decoding per second per live session: over the last ``LOAD_WINDOW_S`` (or since
        the first turn in it, when the sessions are younger), divided among the sessions that had a turn
        decoded in it (a session that has not finished a turn yet costs as much as the average one)."""
        now = time.monotonic()
        recent = [(t, s, k) for t, s, k in self._finals if now - t <= LOAD_WINDOW_S]
        if not recent:
            return 0.0
        span = max(now - recent[0][0] + recent[0][1], 2.0)  # from the start of the first decode counted
        return sum(s for _, s, _ in recent) / min(span, LOAD_WINDOW_S) / len({k for _, _, k in recent})

    @property
    def lag_s(self) -> float:
        """The live sessions' average lag over the last ``LAG_WINDOW_S`` (0 when none completed a turn)."""
        now = time.monotonic()
        recent = [lag for lags in self._live.values() for t, lag in lags if now - t <= LAG_WINDOW_S]
        return sum(recent) / len(recent) if recent else 0.0

    def try_enter(self, client: str = "") -> tuple[int | None, str]:
        """(a session key to ``leave`` at the end, "") when admitted, else (None, why not)."""
        if self.active >= self.max_sessions:
            return None, f"too many streams (limit {self.max_sessions}); try again later"
        if self.lag_s > self.max_lag_s:
            return None, (f"the server is not keeping up with its live sessions (turns complete {self.lag_s:.1f} s "
                          f"after they end); try again later")
        projected = self.per_session_load() * (self.active + 1)
        if projected >= self.final_capacity:
            return None, (f"the server's live decoding is at capacity (one more session would make {projected:.2f} s of "
                          f"turn decoding per second; the limit is {self.final_capacity:g}); try again later")
        if not self.clients.try_acquire(client):
            return None, f"too many streams from this client (limit {self.clients.limit}); try again later"
        self._next += 1
        self._live[self._next] = []
        self._client_of[self._next] = client
        return self._next, ""

    def leave(self, session: int) -> None:
        if self._live.pop(session, None) is not None:
            self.clients.release(self._client_of.pop(session))
