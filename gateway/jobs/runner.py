"""Running jobs: claim, transcribe chunk by chunk through the gateway's pipeline, commit, merge.

``JobRunner`` (asyncio tasks started in the app's lifespan) runs ``workers`` jobs at once. With two or
more workers, the last one takes the job with the least audio left and the others the oldest, so a
short job is not stuck behind long ones and a long one is not starved by a stream of short ones.

Each chunk's stored audio goes through ``service.infer`` (the Triton call, the audio-seconds metric, the
Chinese script conversion: the same as ``/v1/audio/transcriptions``), is moved onto the file's timeline
(``chunks.on_timeline``), and is committed with the job's progress in one transaction under the job's
lease. When every chunk is done the results are merged (segment ids renumbered, texts joined, language
of the first chunk with speech). A ``diarize`` job also sends each chunk to the speaker model (at once with
Whisper) and commits its windows, on the file's timeline, with the chunk's result; at the end all of them
are clustered together (one set of speaker labels for the whole file) and put on the merged transcript.

Never dropped: Triton unavailable or busy (503/429) -> the chunk is retried with backoff (the job stays
``running``, ``last_error`` says why); any other error -> ``failed`` with its message. While a chunk
runs, a heartbeat renews the lease (stores whose leases expire); a runner that lost its lease stops
working on the job. A job whose runner died is put back in the queue by ``recover`` (SQLite: at startup
under the directory lock; PostgreSQL: by any replica, every ``lease_s / 2``, once the lease has expired)
and resumes at its first chunk without a stored result; after ``max_attempts`` interruptions it is
``failed`` with ``job_interrupted``. A clean shutdown puts its running jobs back in the queue without
counting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
import numpy as np

from gateway import diarization, service
from gateway.chunks import merge_off_loop, on_timeline
from gateway.errors import APIError, ServiceUnavailable, TooManyRequests
from gateway.jobs.models import Job, JobGone, error_dict
from gateway.jobs.store import SAMPLE_RATE, JobStore
from gateway.results import Transcription
from gateway.triton import SpeakerWindows

log = logging.getLogger("gateway.jobs")

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))


class JobRunner:
    """Runs queued jobs, ``workers`` at a time, in this process (SQLite: while it holds the runner lock)."""

    def __init__(self, store: JobStore, triton: Any, *, workers: int = 1, max_attempts: int = 3,
                 poll_s: float = 1.0, backoff_s: tuple[float, float] = (1.0, 30.0), lease_s: float = 60.0,
                 on_end: Callable[[], None] | None = None, speaker_model: str = "speaker",
                 speaker_threshold: float = 0.60) -> None:
        self.store = store
        self.triton = triton
        self.workers = workers
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        self.lease_s = lease_s
        self.on_end = on_end or (lambda: None)
        self.speaker_model = speaker_model  # diarized jobs: the speaker model and its clustering threshold
        self.speaker_threshold = speaker_threshold
        self._wake = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._running: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        self._transient = getattr(store, "transient", ())

    def start(self) -> None:
        self._main = asyncio.create_task(self._supervise(), name="job-runner")

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop the job's chunk loop here if this process is running it (the store says why)."""
        running = self._running.get(job_id)
        if running is not None:
            running[1].cancel()

    async def stop(self) -> None:
        """Cancel the workers and put the jobs they were running back in the queue."""
        interrupted = [job for job, _ in self._running.values()]
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
            self._main = None
        if interrupted:
            with contextlib.suppress(Exception):
                await in_thread(self.store.requeue, interrupted)
            log.info("jobs: shutdown, %d running job(s) queued again", len(interrupted))
        self.store.release_runner_lock()

    async def _supervise(self) -> None:
        while not await in_thread(self.store.try_runner_lock):
            await asyncio.sleep(max(self.poll_s, 1.0))
        await self._recover()
        orders = ["oldest"] * self.workers
        if self.workers > 1:
            orders[-1] = "shortest"
        tasks = [asyncio.create_task(self._work(order), name=f"job-worker-{i}") for i, order in enumerate(orders)]
        if self.store.leases_expire:
            tasks.append(asyncio.create_task(self._reclaim(), name="job-reclaim"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _recover(self) -> None:
        try:
            requeued, failed = await in_thread(self.store.recover, self.max_attempts)
        except self._transient as exc:
            log.warning("jobs: cannot look for interrupted jobs now: %s", exc)
            return
        for job_id in requeued:
            log.warning("jobs: %s was interrupted; it resumes from its last finished chunk", job_id)
        for job_id in failed:
            log.error("jobs: %s was interrupted %d times; marked failed", job_id, self.max_attempts)
        if requeued:
            self.wake()
        if failed:
            self.on_end()

    async def _reclaim(self) -> None:
        """Any replica puts back the jobs of a replica that died (their lease expired)."""
        while True:
            await asyncio.sleep(max(self.lease_s / 2, self.poll_s))
            await self._recover()

    async def _work(self, order: str) -> None:
        while True:
            self._wake.clear()
            try:
                job = await in_thread(self.store.claim_next, order, self.lease_s)
            except self._transient as exc:
                log.warning("jobs: cannot claim a job now: %s", exc)
                job = None
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
                continue
            task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
            self._running[job.id] = (job, task)
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not task.cancelled() or (current is not None and current.cancelling()):
                    raise  # this worker is being stopped, not just the job
                log.info("jobs: %s stopped here (cancelled, deleted, or its lease lost)", job.id)
            finally:
                self._running.pop(job.id, None)

    async def _run(self, job: Job) -> None:
        log.info("jobs: %s attempt %d, chunk %d of %d", job.id, job.attempts, job.chunks_done + 1, job.chunk_count)
        heartbeat = asyncio.create_task(self._heartbeat(job)) if self.store.leases_expire else None
        try:
            await self._chunks(job)
        except JobGone:
            log.info("jobs: %s was cancelled, deleted or taken over while it ran", job.id)
        except self._transient as exc:  # the database is away: the lease runs out and the job is resumed
            log.warning("jobs: %s: the job store failed (%s); the job resumes later", job.id, exc)
        except APIError as exc:
            log.warning("jobs: %s failed: %s", job.id, exc.message)
            await self._fail(job, error_dict(exc))
        except OSError as exc:
            await self._fail(job, {"message": f"The job's audio could not be read: {exc}", "type": "server_error",
                                   "code": "audio_unreadable"})
        except Exception as exc:
            log.exception("jobs: %s failed unexpectedly", job.id)
            await self._fail(job, error_dict(exc))
        finally:
            if heartbeat is not None:
                heartbeat.cancel()

    async def _heartbeat(self, job: Job) -> None:
        """Renew the lease while the job runs here; stop the job if another runner has it now."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                kept = await in_thread(self.store.heartbeat, job, self.lease_s)
            except self._transient as exc:
                log.warning("jobs: %s: heartbeat failed: %s", job.id, exc)
                continue
            if not kept:
                log.warning("jobs: %s: lease lost; stopping here", job.id)
                self.cancel(job.id)
                return

    async def _fail(self, job: Job, error: dict[str, Any]) -> None:
        with contextlib.suppress(JobGone):
            await in_thread(self.store.fail, job, error)
            self.on_end()

    async def _chunks(self, job: Job) -> None:
        for idx in range(job.chunks_done, job.chunk_count):
            start, end = job.chunks[idx]
            piece = await in_thread(self.store.chunk_audio, job, idx)
            result, windows = await self._chunk(job, piece)
            if windows is not None:
                windows = diarization.on_timeline(windows, start / SAMPLE_RATE)
            await in_thread(self.store.save_chunk, job, idx, on_timeline(result, (start, end)), end / SAMPLE_RATE,
                            self.lease_s, windows)
        parts = await in_thread(self.store.chunk_results, job.id)
        merged = await merge_off_loop(parts, duration=job.duration, model=job.model, task=job.options.task)
        if job.diarize is not None:
            merged = await in_thread(self._with_speakers, job, merged)
        await in_thread(self.store.succeed, job, merged)
        self.on_end()
        log.info("jobs: %s succeeded (%.1f s of audio, %d chunks)", job.id, job.duration, job.chunk_count)

    async def _chunk(self, job: Job, piece: np.ndarray) -> tuple[Transcription, SpeakerWindows | None]:
        """One chunk transcribed; for a diarized job, its speaker windows too (both calls at once)."""
        transcribe = partial(service.infer, self.triton, job.model, piece, job.options, job.conversion)
        if job.diarize is None:
            return await self._retrying(job, transcribe), None
        windows = partial(self.triton.speaker_windows, self.speaker_model, piece)
        result, found = await service.together(self._retrying(job, transcribe), self._retrying(job, windows))
        return result, found

    def _with_speakers(self, job: Job, merged: Transcription) -> Transcription:
        """All the chunks' windows clustered at once (one set of labels for the whole file), the speakers put
        on the merged transcript (blocking: CPU work)."""
        assert job.diarize is not None
        windows = diarization.joined([w for w in self.store.chunk_windows(job.id) if w is not None])
        speakers = diarization.find_speakers(windows, {}, job.diarize, self.speaker_threshold)
        return diarization.assign(merged, speakers)

    async def _retrying(self, job: Job, call: Callable[[], Awaitable[T]]) -> T:
        delay, most = self.backoff_s
        while True:
            try:
                return await call()
            except (ServiceUnavailable, TooManyRequests) as exc:
                log.warning("jobs: %s: %s; retrying in %.0f s", job.id, exc.message, delay)
                await in_thread(self.store.note_retry, job, f"{exc.message} (retrying)")
                await asyncio.sleep(delay)
                delay = min(delay * 2, most)
