"""The jobs feature of one app: its store, runner and webhook sender, and the async calls the routes make."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, BinaryIO

from gateway.chunks import split_chunks
from gateway.config import Settings
from gateway.diarization import DiarizeOptions
from gateway.errors import APIError, InvalidRequest
from gateway.jobs.models import ACTIVE, Job, JobNotFinished, JobNotFound, JobsUnavailable, valid_id
from gateway.jobs.runner import JobRunner, in_thread
from gateway.jobs.store import JobStore, Limits
from gateway.jobs.webhooks import Sender, check_url
from gateway.results import Options, Transcription
from gateway.service import decode_checked

log = logging.getLogger("gateway.jobs")

FIRST_OPEN_S = 3.0  # how long the gateway's start waits for PostgreSQL
RECONNECT_S = 5.0  # PostgreSQL not reachable at start: try again this often (jobs answer 503 meanwhile)


def open_store(settings: Settings, timeout_s: float = 10.0) -> JobStore:
    """PostgreSQL when ``jobs_database_url`` is set, else SQLite under ``jobs_dir`` (blocking)."""
    if settings.jobs_database_url is not None:
        from gateway.jobs.postgres import PostgresStore

        return PostgresStore(settings.jobs_database_url.get_secret_value(), timeout_s=timeout_s,
                             pool_size=settings.job_workers + settings.job_submit_concurrency + 4)
    from gateway.jobs.sqlite import SQLiteStore

    return SQLiteStore(settings.jobs_dir)


class Jobs:
    def __init__(self, settings: Settings, triton: Any) -> None:
        self.settings = settings
        self.triton = triton
        self.store: JobStore | None = None
        self.runner: JobRunner | None = None
        self.sender: Sender | None = None
        self.problem: str | None = "starting"
        self._submits = asyncio.Semaphore(settings.job_submit_concurrency)
        self._opening: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the store; a PostgreSQL that is not reachable within ``FIRST_OPEN_S`` does not hold up the
        gateway's start: jobs answer 503 until a background retry reaches it (it may start after us)."""
        if await self._open(FIRST_OPEN_S):
            self._start_workers()
        elif self.settings.jobs_database_url is not None:
            self._opening = asyncio.create_task(self._keep_opening(), name="jobs-open")

    async def _open(self, timeout_s: float = 10.0) -> bool:
        try:
            self.store = await in_thread(open_store, self.settings, timeout_s)
        except Exception as exc:  # OSError, sqlite3.Error, psycopg's errors, a pool timeout
            if self.settings.jobs_database_url is None:
                self.problem = f"the jobs directory {self.settings.jobs_dir} is not usable: {exc}"
            else:
                self.problem = f"the jobs database is not reachable: {type(exc).__name__}: {exc}"
        else:
            self.problem = None
            return True
        log.error("jobs unavailable: %s", self.problem)
        return False

    async def _keep_opening(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT_S)
            if await self._open():
                self._start_workers()
                return

    def _start_workers(self) -> None:
        assert self.store is not None
        s = self.settings
        if s.webhook_secret is not None:
            self.sender = Sender(self.store, s.webhook_secret.get_secret_value(), allow_private=s.webhook_allow_private,
                                 timeout_s=s.webhook_timeout_s, retry_s=s.webhook_retry_s, max_age_s=s.webhook_max_age_s)
            self.sender.start()
        self.runner = JobRunner(self.store, self.triton, workers=s.job_workers, max_attempts=s.job_max_attempts,
                                lease_s=s.job_lease_s, on_end=self.sender.wake if self.sender else None,
                                speaker_model=s.diarization_model, speaker_threshold=s.diarization_threshold)
        self.runner.start()
        log.info("jobs: %r (workers=%d, chunk=%gs, lease=%gs, webhooks %s)", self.store, s.job_workers,
                 s.job_chunk_seconds, s.job_lease_s, "on" if self.sender else "off (no GATEWAY_WEBHOOK_SECRET)")

    async def stop(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._opening
        if self.runner is not None:
            await self.runner.stop()
        if self.sender is not None:
            await self.sender.stop()
        if self.store is not None:
            await in_thread(self.store.close)

    def _store(self) -> JobStore:
        if self.store is None:
            raise JobsUnavailable(f"Jobs are unavailable: {self.problem or 'not started'}")
        return self.store

    def _prepare(self, source: BinaryIO, **create: Any) -> Job:
        """Decode, check, plan the chunks, compress and store (blocking)."""
        samples = decode_checked(source, max_seconds=self.settings.max_job_audio_seconds).samples
        chunks = split_chunks(samples, self.settings.job_chunk_seconds)
        return self._store().create(samples, chunks=chunks, **create)

    async def submit(self, source: BinaryIO, *, model: str, options: Options, conversion: str, words: bool,
                     client: str = "", callback_url: str | None = None,
                     callback_metadata: dict[str, Any] | None = None, diarize: DiarizeOptions | None = None) -> Job:
        self._store()
        if callback_url is not None:
            if self.settings.webhook_secret is None:
                raise InvalidRequest("Webhooks are not enabled on this server (GATEWAY_WEBHOOK_SECRET is not set)",
                                     param="callback_url", code="webhooks_disabled")
            await in_thread(check_url, callback_url, allow_private=self.settings.webhook_allow_private)
        s = self.settings
        limits = Limits(max_active_per_client=s.job_max_active_per_client,
                        max_audio_bytes=int(s.job_storage_quota_mb * 2**20))
        await in_thread(self._store().check_limits, client, limits)
        async with self._submits:
            job = await in_thread(self._prepare, source, model=model, options=options, conversion=conversion,
                                  words=words, client=client, callback_url=callback_url,
                                  callback_metadata=callback_metadata, limits=limits, diarize=diarize)
        if self.runner is not None:
            self.runner.wake()
        return job

    async def get(self, job_id: str) -> Job:
        job = await in_thread(self._store().get, job_id) if valid_id(job_id) else None
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def recent(self, limit: int) -> list[Job]:
        return await in_thread(self._store().recent, limit)

    async def result(self, job_id: str) -> tuple[Job, Transcription]:
        job = await self.get(job_id)
        if job.status in ACTIVE:
            raise JobNotFinished(f"The job is {job.status} ({job.chunks_done} of {job.chunk_count} chunks done); "
                                 f"poll GET /v1/jobs/{job.id} until its status is succeeded")
        if job.status == "failed":
            error = job.error or {}
            raise APIError(f"The job failed: {error.get('message', 'unknown error')}", status_code=409,
                           type=error.get("type") or "server_error", code="job_failed")
        if job.status == "cancelled":
            raise APIError("The job was cancelled", status_code=409, code="job_cancelled")
        result = await in_thread(self._store().result, job_id)
        if result is None:  # succeeded rows always carry a result; a broken row is not a silent empty body
            raise APIError("The job's result is missing", status_code=500, type="server_error", code="internal_error")
        return job, result

    async def cancel(self, job_id: str) -> Job:
        await self.get(job_id)
        job = await in_thread(self._store().cancel, job_id)
        if job is None:
            raise JobNotFound(job_id)
        if self.runner is not None:
            self.runner.cancel(job_id)  # another replica running it stops at its next commit or heartbeat
        if self.sender is not None:
            self.sender.wake()
        return job

    async def delete(self, job_id: str) -> None:
        await self.get(job_id)
        if self.runner is not None:
            self.runner.cancel(job_id)
        if not await in_thread(self._store().delete, job_id):
            raise JobNotFound(job_id)
