"""How a live session reads its client, for both WebSocket protocols: nothing dropped, nothing unbounded.

- While the session's decode backlog is full (``StreamSession.room``), nothing is read: the client waits in
  its socket (``held_s`` counts that time).
- Audio more than ``GATEWAY_STREAM_MAX_AHEAD_S`` ahead of real time is either read at real time
  (``paced``: ``/v1/realtime``) or refused (``TooFast``: ``/v1/stream``, whose clients are live sources).
- ``Idle``: a realtime client that sends nothing for ``GATEWAY_STREAM_IDLE_S``; a ``/v1/stream`` client
  whose audio falls that far behind the time spent waiting for it (one that sends nothing, or two bytes
  now and then). The time the gateway itself held the client back does not count.
- A message over ``max_bytes`` (``GATEWAY_STREAM_MAX_FRAME_KIB``; half of it for a realtime event, so that
  an oversized append gets an ``error`` event before the server's own 1009 limit) is ``TooBig``.
"""

from __future__ import annotations

import asyncio
import time

from gateway.config import Settings
from gateway.streaming.session import SAMPLE_RATE, StreamSession


class IngestError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Idle(IngestError):
    pass


class TooFast(IngestError):
    pass


class TooBig(IngestError):
    pass


class Ingest:
    def __init__(self, ws, session: StreamSession, settings: Settings, *, paced: bool,
                 max_bytes: int | None = None) -> None:
        self.ws, self.session, self.paced = ws, session, paced
        self.idle_s, self.max_ahead_s = settings.stream_idle_s, settings.stream_max_ahead_s
        # (the server itself closes with 1009 past GATEWAY_STREAM_MAX_FRAME_KIB: gateway/__main__.py)
        self.max_bytes = max_bytes or settings.stream_max_frame_kib * 1024
        self.started = time.monotonic()
        self.held_s = 0.0  # time the gateway held the client back (backlog full, or paced)
        self.waited_s = 0.0  # time spent waiting for the client's messages

    def ahead_s(self) -> float:
        """How far the audio received is ahead of real time since the session started."""
        return self.session.received / SAMPLE_RATE - (time.monotonic() - self.started)

    def check_ahead(self) -> None:
        """After audio arrived: ``TooFast`` past the limit (unless paced: the next read waits instead)."""
        ahead = self.ahead_s()
        if not self.paced and ahead > self.max_ahead_s:
            raise TooFast(f"audio arrives faster than real time ({ahead:.1f} s ahead; the limit is "
                          f"{self.max_ahead_s:g} s): stream live audio, or upload files to /v1/audio/transcriptions")

    async def next(self) -> dict:
        """The client's next ASGI message (``websocket.receive`` or ``websocket.disconnect``)."""
        t0 = time.monotonic()
        await self.session.room()
        if self.paced and self.ahead_s() > self.max_ahead_s:
            await asyncio.sleep(self.ahead_s() - self.max_ahead_s)
        self.held_s += time.monotonic() - t0
        timeout = self.idle_s
        if not self.paced:  # a live source: its audio must keep up with the time spent waiting for it
            timeout = max(0.0, self.idle_s + self.session.received / SAMPLE_RATE - self.waited_s)
        t1 = time.monotonic()
        try:
            async with asyncio.timeout(timeout):  # not wait_for, which can lose a cancellation (3.11)
                message = await self.ws.receive()
        except TimeoutError:
            if self.paced:
                raise Idle(f"nothing received for {self.idle_s:g} s") from None
            raise Idle(f"the stream's audio fell {self.idle_s:g} s behind real time "
                       f"({self.session.received / SAMPLE_RATE:.1f} s of audio in {self.waited_s + timeout:.0f} s)") from None
        finally:
            self.waited_s += time.monotonic() - t1
        size = len(message.get("bytes") or message.get("text") or "")
        if size > self.max_bytes:
            raise TooBig(f"a message of {size} bytes; the limit is {self.max_bytes} bytes")
        return message
