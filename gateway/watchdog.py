"""Is Triton answering? A background check, so that a frozen Triton is answered with 503 in seconds.

Every ``interval_s`` the watchdog asks Triton whether it is ready, with a deadline of ``timeout_s``.

- Readiness unanswered (or answered "not ready") ``failures`` times in a row -- a server that is stopped,
  deadlocked, killed or not up yet: the client is marked down. ``/health`` answers 503 at once from the
  verdict, and every inference call, waiting for a slot or in flight, fails with 503 at once, until a
  readiness check succeeds again.
- A short test inference (``TritonClient.probe``: half a second of silence) is sent when calls are
  outstanding but none got an answer for ``timeout_s``, and when no call got one for ``probe_idle_s`` (an
  idle gateway; 0: never then). Unanswered after ``stall_s`` while the model finished no execution in
  that time (``TritonClient.executions``), the model is stalled -- Triton answers, its model does not:
  ``/health`` answers 503 until the test inference is answered. Calls in flight are left to their own
  deadlines: a model busy with long requests finishes nothing for a while too, and its work must not be
  thrown away. Traffic that gets answers is the test itself: a busy gateway sends no test inferences.

The ready models are read on every successful check, which keeps the metrics labels bounded to them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

log = logging.getLogger("gateway.watchdog")


class Watched(Protocol):
    """What the watchdog needs of ``TritonClient``."""

    down: bool
    active: int
    last_answer: float

    async def server_ready(self, timeout_s: float | None = None) -> bool: ...
    async def ready_models(self) -> list[str]: ...
    async def probe(self, model: str, timeout_s: float) -> None: ...
    async def executions(self, model: str) -> int: ...
    def mark_down(self, reason: str) -> None: ...
    def mark_up(self) -> None: ...


class Watchdog:
    def __init__(self, triton: Watched, model: str, *, interval_s: float = 1.0, timeout_s: float = 1.5,
                 probe_idle_s: float = 30.0, stall_s: float = 10.0, failures: int = 2,
                 probe_deadline_s: float = 120.0) -> None:
        self.triton, self.model = triton, model
        self.interval_s, self.timeout_s, self.failures = interval_s, timeout_s, failures
        self.stall_s = stall_s  # a test inference unanswered this long, with no execution finished: stalled
        self.probe_idle_s = probe_idle_s
        self.probe_deadline_s = probe_deadline_s  # how long one test inference may wait for its answer
        self.misses = 0  # readiness checks failed in a row
        self.ready = False  # the last readiness check was answered "ready"
        self.checked = False  # a first check has finished: /health may answer from the verdict
        self.stalled = False
        self.models: list[str] = []
        self.probes = 0  # test inferences sent
        self._probe: asyncio.Task | None = None
        self._probe_sent = 0.0
        self._probe_baseline: int | None = None  # the model's executions when the probe was sent

    @property
    def problem(self) -> str | None:
        """Why Triton cannot serve now, or None."""
        if self.triton.down:
            return "Triton is not answering"
        if not self.ready:
            return "Triton is not ready"
        if self.stalled:
            return f"the model {self.model!r} is not answering"
        return None

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.check()
                except Exception:  # a bug here must not end the watching
                    log.exception("watchdog check failed")
                await asyncio.sleep(self.interval_s if self.misses == 0 else 0.1)
        finally:
            if self._probe is not None:
                self._probe.cancel()

    async def check(self) -> None:
        try:
            await self._check()
        finally:
            self.checked = True

    async def _check(self) -> None:
        self.ready = await self._ready()
        if not self.ready:
            self.misses += 1
            if self.misses >= self.failures and not self.triton.down:
                log.warning("Triton did not answer %d readiness checks in a row (%.1f s deadline): requests get 503",
                            self.misses, self.timeout_s)
                self.triton.mark_down(f"{self.misses} readiness checks unanswered")
            return
        if self.triton.down:
            log.warning("Triton answers again")
        self.misses = 0
        self.triton.mark_up()
        try:
            self.models = await asyncio.wait_for(self.triton.ready_models(), self.timeout_s)
        except Exception:
            pass  # readiness answered; the model list can wait for the next check
        await self._check_model()

    async def _ready(self) -> bool:
        try:
            return await asyncio.wait_for(self.triton.server_ready(self.timeout_s), self.timeout_s + 0.5)
        except Exception:
            return False

    def _probe_due(self, now: float) -> bool:
        quiet = now - self.triton.last_answer
        if self.triton.active > 0 and quiet >= self.timeout_s:
            return True  # calls outstanding, none answered lately
        return self.probe_idle_s > 0 and quiet >= self.probe_idle_s

    async def _check_model(self) -> None:
        """Send a test inference when one is due; judge it once it is ``stall_s`` old."""
        now = time.monotonic()
        if self._probe is not None and self._probe.done():
            answered = not self._probe.cancelled() and self._probe.exception() is None
            if answered and self.stalled:
                log.warning("the model %r answers again", self.model)
                self.stalled = False
            self._probe = None
        if self._probe is None:
            if self.stalled or self._probe_due(now):
                self._probe_baseline = await self._executions()
                self._probe_sent = now
                self.probes += 1
                self._probe = asyncio.ensure_future(self.triton.probe(self.model, self.probe_deadline_s))
            return
        if now - self._probe_sent < self.stall_s:
            return
        executions = await self._executions()
        if executions is not None and self._probe_baseline is not None and executions > self._probe_baseline:
            self._probe_baseline, self._probe_sent = executions, now  # busy, not stuck: judge it again later
            self.stalled = False
            return
        if not self.stalled:
            log.warning("the model %r finished nothing and did not answer a test inference in %.1f s: /health is 503",
                        self.model, now - self._probe_sent)
        self.stalled = True

    async def _executions(self) -> int | None:
        try:
            return await asyncio.wait_for(self.triton.executions(self.model), self.timeout_s)
        except Exception:
            return None
