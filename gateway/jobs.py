"""Durable transcription jobs for long files (``/v1/jobs``), kept in SQLite under ``jobs_dir``.

Storage: ``jobs_dir/jobs.sqlite3`` (stdlib ``sqlite3``, WAL, ``synchronous=FULL``) holds one row per job
(``jobs``) and one row per finished chunk (``chunk_results``); ``jobs_dir/audio/<job id>.npy`` holds the
job's audio. A job's file is named by its id, never a fixed name.

Choice: the upload is decoded once, at submit time, and stored as 16 kHz float32 ``.npy``, not as the
original file. A bad upload is refused at once (empty 400, not media 415, too long 400) instead of failing
later, the runner never decodes again (it memory-maps the file and reads one chunk at a time), and the
chunk boundaries, computed at submit from the samples and stored in the row, stay the same when a job
resumes after a restart. The price is disk: 64 KB per second of audio (about 0.9 GB for 4 hours) until
the job ends; the file is removed when the job succeeds, fails, is cancelled or is deleted. The file is
fsync'd (and renamed into place) before the row that says ``queued`` is written.

Running: ``JobRunner`` (an asyncio task started in the app's lifespan) takes queued jobs oldest first,
``job_workers`` at a time. Each chunk (about ``job_chunk_seconds``, cut at the quietest 20 ms frame in
the last 5 s before each boundary) goes through the same ``TritonClient.transcribe``; a segment that repeats the one
before word for word is dropped (Whisper's loop on audio cut mid-phrase), its segments and words are moved
to the file's timeline, and the chunk's result is committed with the progress in one
transaction. When every chunk is done the results are merged (segment ids renumbered, texts joined,
language of the first chunk with speech) and the Chinese script conversion applied, as for
``/v1/audio/transcriptions``.

Never dropped: Triton unavailable or busy (503/429) -> the chunk is retried with backoff (the job stays
``running``, ``last_error`` says why); any other error -> ``failed`` with its message. A job found
``running`` at startup was interrupted (crash, kill -9): it is queued again and resumes at its first
chunk without a stored result; after ``job_max_attempts`` interruptions it is ``failed`` with
``job_interrupted``. A clean shutdown puts its running jobs back in the queue without counting it.

One process runs jobs per ``jobs_dir``: the runner holds an exclusive ``flock`` on ``runner.lock``; other
gateways on the same directory (``uvicorn --workers``) accept and serve jobs, and take over running them
when the holder exits. Recovery runs only in the lock holder, so a process never "recovers" a job another
live process is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import anyio.to_thread
import numpy as np

from gateway import chinese, media, metrics
from gateway.chunks import merge, on_timeline, split_chunks
from gateway.config import Settings
from gateway.errors import APIError, ServiceUnavailable, TooManyRequests
from gateway.results import Options, Segment, Transcription

log = logging.getLogger("gateway.jobs")

SAMPLE_RATE = media.SAMPLE_RATE
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
ID_LENGTH = 32  # uuid4().hex
ORPHAN_AGE_S = 600.0  # an audio file without a job row, this old, is left from a crash: removed at startup

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- errors

class JobNotFound(APIError):
    status_code = 404
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"No job with id '{job_id}'", param="job_id")


class JobNotFinished(APIError):
    status_code = 409
    code = "job_not_finished"


class JobsUnavailable(ServiceUnavailable):
    code = "jobs_unavailable"


class JobGone(Exception):
    """The job was cancelled or deleted while a chunk ran: stop working on it."""


def valid_id(job_id: str) -> bool:
    return len(job_id) == ID_LENGTH and all(c in "0123456789abcdef" for c in job_id)


def error_dict(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, APIError):
        return {"message": exc.message, "type": exc.type, "code": exc.code}
    return {"message": f"Internal error: {type(exc).__name__}: {exc}", "type": "server_error", "code": "internal_error"}


# ------------------------------------------------------------------------------- results <-> JSON

def result_to_dict(result: Transcription) -> dict[str, Any]:
    return dataclasses.asdict(result)


def result_from_dict(data: dict[str, Any]) -> Transcription:
    return Transcription(
        text=str(data.get("text", "")), language=str(data.get("language", "")),
        duration=float(data.get("duration", 0.0)),
        segments=tuple(Segment.from_dict(s, i) for i, s in enumerate(data.get("segments") or ())),
        task=str(data.get("task", "transcribe")), model=str(data.get("model", "")),
    )


# ---------------------------------------------------------------------------------------------- model

@dataclass(frozen=True)
class Job:
    id: str
    status: str
    created_at: float
    updated_at: float
    finished_at: float | None
    model: str
    options: Options
    conversion: str
    words: bool
    audio_file: str
    duration: float
    chunks: tuple[tuple[int, int], ...]
    chunks_done: int
    progress_s: float
    attempts: int  # times a runner started it
    interruptions: int  # times it was found running at startup (the gateway died under it)
    resumed_at_chunk: int  # the chunk the latest attempt started at (0 = from the beginning)
    error: dict[str, Any] | None
    last_error: str | None  # while running: why the current chunk is being retried

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        return cls(
            id=row["id"], status=row["status"], created_at=row["created_at"], updated_at=row["updated_at"],
            finished_at=row["finished_at"], model=row["model"], options=Options(**json.loads(row["options"])),
            conversion=row["conversion"], words=bool(row["words"]), audio_file=row["audio_file"],
            duration=row["duration"], chunks=tuple(tuple(c) for c in json.loads(row["chunks"])),
            chunks_done=row["chunks_done"], progress_s=row["progress_s"], attempts=row["attempts"],
            interruptions=row["interruptions"], resumed_at_chunk=row["resumed_at_chunk"],
            error=json.loads(row["error"]) if row["error"] else None, last_error=row["last_error"],
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "transcription.job",
            "status": self.status,
            "model": self.model,
            "task": self.options.task,
            "language": self.options.language or None,
            "created_at": int(self.created_at),
            "updated_at": int(self.updated_at),
            "finished_at": None if self.finished_at is None else int(self.finished_at),
            "duration": round(self.duration, 3),
            "progress": {
                "seconds_done": round(self.progress_s, 3),
                "seconds_total": round(self.duration, 3),
                "chunks_done": self.chunks_done,
                "chunk_count": self.chunk_count,
                "fraction": round(self.progress_s / self.duration, 4) if self.duration else 0.0,
            },
            "attempts": self.attempts,
            "interruptions": self.interruptions,
            "resumed_at_chunk": self.resumed_at_chunk,
            "error": self.error,
            "result_url": f"/v1/jobs/{self.id}/result",
        }
        if self.last_error and self.status == "running":
            body["last_error"] = self.last_error
        return body


# ---------------------------------------------------------------------------------------------- store

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    finished_at      REAL,
    model            TEXT NOT NULL,
    options          TEXT NOT NULL,     -- JSON of results.Options
    conversion       TEXT NOT NULL,     -- OpenCC conversion for a Chinese result
    words            INTEGER NOT NULL,  -- word timestamps asked for (verbose_json "words")
    audio_file       TEXT NOT NULL,     -- name under jobs_dir/audio/
    duration         REAL NOT NULL,
    chunks           TEXT NOT NULL,     -- JSON [[start_sample, end_sample], ...]
    chunks_done      INTEGER NOT NULL DEFAULT 0,
    progress_s       REAL NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    interruptions    INTEGER NOT NULL DEFAULT 0,
    resumed_at_chunk INTEGER NOT NULL DEFAULT 0,
    error            TEXT,              -- JSON {message, type, code} once failed
    last_error       TEXT,
    result           TEXT               -- JSON of the merged Transcription once succeeded
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
CREATE TABLE IF NOT EXISTS chunk_results (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    finished_at REAL NOT NULL,
    result      TEXT NOT NULL,          -- JSON of the chunk's Transcription, on the file's timeline
    PRIMARY KEY (job_id, idx)
);
"""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JobStore:
    """Jobs in SQLite plus their audio files. Blocking: call it from a worker thread in async code.

    One connection shared by the process's threads, each call under one lock; write transactions are
    ``BEGIN IMMEDIATE`` so other processes on the same file wait (``busy_timeout``) instead of failing.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.audio_dir = self.directory / "audio"
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "jobs.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(SCHEMA)  # IF NOT EXISTS throughout: safe for concurrent openers
        self._lock_fd: int | None = None

    def close(self) -> None:
        self.release_runner_lock()
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- the runner lock ------------------------------------------------------------------------------

    def try_runner_lock(self) -> bool:
        """Take the exclusive per-directory runner lock without waiting; True when this store holds it."""
        if self._lock_fd is not None:
            return True
        fd = os.open(self.directory / "runner.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def release_runner_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    # -- files --------------------------------------------------------------------------------------

    def audio_path(self, job: Job) -> Path:
        return self.audio_dir / job.audio_file

    def _write_audio(self, name: str, samples: np.ndarray) -> None:
        final = self.audio_dir / name
        partial_path = final.with_suffix(".npy.tmp")
        with open(partial_path, "wb") as fh:
            np.save(fh, np.ascontiguousarray(samples, dtype=np.float32), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial_path, final)
        _fsync_dir(self.audio_dir)

    def _remove_audio(self, name: str) -> None:
        (self.audio_dir / name).unlink(missing_ok=True)

    # -- jobs -----------------------------------------------------------------------------------------

    def create(self, samples: np.ndarray, *, model: str, options: Options, conversion: str, words: bool,
               chunks: Sequence[tuple[int, int]]) -> Job:
        """Write the audio (fsync'd), then the ``queued`` row; returns the new job."""
        job_id = uuid.uuid4().hex
        name = f"{job_id}.npy"
        self._write_audio(name, samples)
        now = time.time()
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO jobs (id, status, created_at, updated_at, model, options, conversion, words,"
                    " audio_file, duration, chunks) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, now, now, model, json.dumps(dataclasses.asdict(options)), conversion, int(words),
                     name, samples.shape[0] / SAMPLE_RATE, json.dumps([list(c) for c in chunks])))
        except BaseException:
            self._remove_audio(name)
            raise
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else Job.from_row(row)

    def recent(self, limit: int = 20, *, before: float | None = None) -> list[Job]:
        """Newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE created_at < ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (float("inf") if before is None else before, limit)).fetchall()
        return [Job.from_row(r) for r in rows]

    def result(self, job_id: str) -> Transcription | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None or row["result"] is None else result_from_dict(json.loads(row["result"]))

    def chunk_results(self, job_id: str) -> list[Transcription]:
        with self._lock:
            rows = self._db.execute("SELECT result FROM chunk_results WHERE job_id = ? ORDER BY idx",
                                    (job_id,)).fetchall()
        return [result_from_dict(json.loads(r["result"])) for r in rows]

    def chunk_attempts(self, job_id: str) -> list[int]:
        """The attempt that produced each stored chunk, in chunk order."""
        with self._lock:
            rows = self._db.execute("SELECT attempt FROM chunk_results WHERE job_id = ? ORDER BY idx",
                                    (job_id,)).fetchall()
        return [r["attempt"] for r in rows]

    # -- transitions ----------------------------------------------------------------------------------

    def claim_next(self) -> Job | None:
        """The oldest queued job, now ``running`` with one more attempt; None when the queue is empty."""
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1"
                             ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1, resumed_at_chunk = chunks_done,"
                       " last_error = NULL, updated_at = ? WHERE id = ?", (time.time(), row["id"]))
        return self.get(row["id"])

    def save_chunk(self, job_id: str, idx: int, result: Transcription, attempt: int, progress_s: float) -> None:
        """Commit one chunk's result and the job's progress together; ``JobGone`` if no longer running."""
        now = time.time()
        with self._tx() as db:
            updated = db.execute(
                "UPDATE jobs SET chunks_done = ?, progress_s = ?, last_error = NULL, updated_at = ?"
                " WHERE id = ? AND status = 'running'", (idx + 1, progress_s, now, job_id)).rowcount
            if not updated:
                raise JobGone(job_id)
            db.execute("INSERT OR REPLACE INTO chunk_results (job_id, idx, attempt, finished_at, result)"
                       " VALUES (?, ?, ?, ?, ?)", (job_id, idx, attempt, now, json.dumps(result_to_dict(result))))

    def note_retry(self, job_id: str, message: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET last_error = ?, updated_at = ? WHERE id = ? AND status = 'running'",
                       (message, time.time(), job_id))

    def succeed(self, job_id: str, result: Transcription) -> None:
        self._finish(job_id, "succeeded", result=json.dumps(result_to_dict(result)))

    def fail(self, job_id: str, error: dict[str, Any]) -> None:
        self._finish(job_id, "failed", error=json.dumps(error))

    def _finish(self, job_id: str, status: str, *, result: str | None = None, error: str | None = None) -> None:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT audio_file FROM jobs WHERE id = ? AND status IN ('queued', 'running')",
                             (job_id,)).fetchone()
            if row is None:
                raise JobGone(job_id)
            db.execute("UPDATE jobs SET status = ?, result = ?, error = ?, last_error = NULL, updated_at = ?,"
                       " finished_at = ? WHERE id = ?", (status, result, error, now, now, job_id))
        self._remove_audio(row["audio_file"])

    def cancel(self, job_id: str) -> Job | None:
        """A queued or running job becomes ``cancelled`` (its audio removed); others are left as they are."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT audio_file FROM jobs WHERE id = ? AND status IN ('queued', 'running')",
                             (job_id,)).fetchone()
            if row is not None:
                db.execute("UPDATE jobs SET status = 'cancelled', last_error = NULL, updated_at = ?,"
                           " finished_at = ? WHERE id = ?", (now, now, job_id))
        if row is not None:
            self._remove_audio(row["audio_file"])
        return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        """The job, its chunk results and its audio, gone; False when there was no such job."""
        with self._tx() as db:
            row = db.execute("SELECT audio_file FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM chunk_results WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self._remove_audio(row["audio_file"])
        return True

    def requeue(self, job_ids: Sequence[str]) -> None:
        """Running jobs back to ``queued`` after a clean stop (not counted as an interruption)."""
        with self._tx() as db:
            for job_id in job_ids:
                db.execute("UPDATE jobs SET status = 'queued', updated_at = ? WHERE id = ? AND status = 'running'",
                           (time.time(), job_id))

    def recover(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """At startup: jobs left ``running`` were interrupted. Requeue them, or fail them after
        ``max_attempts`` interruptions. Also removes audio files no job row refers to (a crash between
        writing the file and the row). Returns (requeued ids, failed ids)."""
        requeued: list[str] = []
        failed: list[str] = []
        now = time.time()
        with self._tx() as db:
            for row in db.execute("SELECT id, interruptions, audio_file FROM jobs WHERE status = 'running'").fetchall():
                count = row["interruptions"] + 1
                if count >= max_attempts:
                    times = f"{count} time{'s' if count != 1 else ''}"
                    error = {"message": f"The job was interrupted {times} (the gateway stopped while it ran); "
                                        f"giving up after {max_attempts} attempts",
                             "type": "server_error", "code": "job_interrupted"}
                    db.execute("UPDATE jobs SET status = 'failed', interruptions = ?, error = ?, updated_at = ?,"
                               " finished_at = ? WHERE id = ?", (count, json.dumps(error), now, now, row["id"]))
                    failed.append(row["id"])
                    self._remove_audio(row["audio_file"])
                else:
                    db.execute("UPDATE jobs SET status = 'queued', interruptions = ?, updated_at = ? WHERE id = ?",
                               (count, now, row["id"]))
                    requeued.append(row["id"])
            keep = {r["audio_file"] for r in db.execute(
                "SELECT audio_file FROM jobs WHERE status IN ('queued', 'running')").fetchall()}
        for path in self.audio_dir.iterdir():
            # Young files may belong to a submit in progress (file written, row not yet).
            with contextlib.suppress(OSError):
                if path.name not in keep and now - path.stat().st_mtime > ORPHAN_AGE_S:
                    path.unlink()
        return requeued, failed


# ---------------------------------------------------------------------------------------------- runner

async def _in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))


class JobRunner:
    """Runs queued jobs, ``workers`` at a time, in this process while it holds the runner lock."""

    def __init__(self, store: JobStore, triton: Any, *, workers: int = 1, max_attempts: int = 3,
                 poll_s: float = 1.0, backoff_s: tuple[float, float] = (1.0, 30.0)) -> None:
        self.store = store
        self.triton = triton
        self.workers = workers
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        self._wake = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        self._main = asyncio.create_task(self._supervise(), name="job-runner")

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop the job's chunk loop here if this process is running it (the store says why)."""
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        """Cancel the workers and put the jobs they were running back in the queue."""
        interrupted = list(self._running)
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
            self._main = None
        if interrupted:
            await _in_thread(self.store.requeue, interrupted)
            log.info("jobs: shutdown, %d running job(s) queued again", len(interrupted))
        self.store.release_runner_lock()

    async def _supervise(self) -> None:
        while not await _in_thread(self.store.try_runner_lock):
            await asyncio.sleep(max(self.poll_s, 1.0))
        requeued, failed = await _in_thread(self.store.recover, self.max_attempts)
        for job_id in requeued:
            log.warning("jobs: %s was interrupted; it resumes from its last finished chunk", job_id)
        for job_id in failed:
            log.error("jobs: %s was interrupted %d times; marked failed", job_id, self.max_attempts)
        workers = [asyncio.create_task(self._work(), name=f"job-worker-{i}") for i in range(self.workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            self._wake.clear()
            job = await _in_thread(self.store.claim_next)
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
                continue
            task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
            self._running[job.id] = task
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not task.cancelled() or (current is not None and current.cancelling()):
                    raise  # this worker is being stopped, not just the job
                log.info("jobs: %s cancelled", job.id)
            finally:
                self._running.pop(job.id, None)

    async def _run(self, job: Job) -> None:
        log.info("jobs: %s attempt %d, chunk %d of %d", job.id, job.attempts, job.chunks_done + 1, job.chunk_count)
        try:
            await self._chunks(job)
        except JobGone:
            log.info("jobs: %s was cancelled or deleted while it ran", job.id)
        except APIError as exc:
            log.warning("jobs: %s failed: %s", job.id, exc.message)
            await self._fail(job, error_dict(exc))
        except OSError as exc:
            await self._fail(job, {"message": f"The job's audio could not be read: {exc}", "type": "server_error",
                                   "code": "audio_unreadable"})
        except Exception as exc:
            log.exception("jobs: %s failed unexpectedly", job.id)
            await self._fail(job, error_dict(exc))

    async def _fail(self, job: Job, error: dict[str, Any]) -> None:
        with contextlib.suppress(JobGone):
            await _in_thread(self.store.fail, job.id, error)

    async def _chunks(self, job: Job) -> None:
        samples = await _in_thread(np.load, self.store.audio_path(job), mmap_mode="r", allow_pickle=False)
        for idx in range(job.chunks_done, job.chunk_count):
            start, end = job.chunks[idx]
            piece = await _in_thread(lambda s=start, e=end: np.array(samples[s:e], dtype=np.float32))
            result = await self._infer(job, piece)
            metrics.AUDIO_SECONDS.labels(job.model, job.options.task).inc(piece.size / SAMPLE_RATE)
            result = on_timeline(result, (start, end))
            await _in_thread(self.store.save_chunk, job.id, idx, result, job.attempts, end / SAMPLE_RATE)
        parts = await _in_thread(self.store.chunk_results, job.id)
        merged = merge(parts, duration=job.duration, model=job.model, task=job.options.task)
        if job.options.task == "transcribe":
            merged = await _in_thread(chinese.convert, merged, job.conversion)
        await _in_thread(self.store.succeed, job.id, merged)
        log.info("jobs: %s succeeded (%.1f s of audio, %d chunks)", job.id, job.duration, job.chunk_count)

    async def _infer(self, job: Job, piece: np.ndarray) -> Transcription:
        delay, most = self.backoff_s
        while True:
            try:
                return await self.triton.transcribe(job.model, piece, job.options)
            except (ServiceUnavailable, TooManyRequests) as exc:
                log.warning("jobs: %s: %s; retrying in %.0f s", job.id, exc.message, delay)
                await _in_thread(self.store.note_retry, job.id, f"{exc.message} (retrying)")
                await asyncio.sleep(delay)
                delay = min(delay * 2, most)


# --------------------------------------------------------------------------- what the routes call

def prepare(source: bytes | BinaryIO, *, max_seconds: float, chunk_seconds: float
            ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Decode an upload and plan its chunks (blocking). Raises the same ``MediaError``/``InvalidRequest``
    as the sync endpoint."""
    audio = media.require_sound(media.decode(source, max_seconds=max_seconds))
    return audio.samples, split_chunks(audio.samples, chunk_seconds)


class Jobs:
    """The jobs feature of one app: the store, the runner, and the async calls the routes make."""

    def __init__(self, settings: Settings, triton: Any) -> None:
        self.settings = settings
        self.triton = triton
        self.store: JobStore | None = None
        self.runner: JobRunner | None = None
        self.problem: str | None = None
        self._submits = asyncio.Semaphore(2)  # decodes at once: each holds a whole file's samples

    async def start(self) -> None:
        try:
            self.store = await _in_thread(JobStore, self.settings.jobs_dir)
        except (OSError, sqlite3.Error) as exc:
            self.problem = f"the jobs directory {self.settings.jobs_dir} is not usable: {exc}"
            log.error("jobs disabled: %s", self.problem)
            return
        self.runner = JobRunner(self.store, self.triton, workers=self.settings.job_workers,
                                max_attempts=self.settings.job_max_attempts)
        self.runner.start()
        log.info("jobs: %s (workers=%d, chunk=%gs)", self.store.path, self.settings.job_workers,
                 self.settings.job_chunk_seconds)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
        if self.store is not None:
            await _in_thread(self.store.close)

    def _store(self) -> JobStore:
        if self.store is None:
            raise JobsUnavailable(f"Jobs are unavailable: {self.problem or 'not started'}")
        return self.store

    async def submit(self, source: BinaryIO, *, model: str, options: Options, conversion: str, words: bool) -> Job:
        store = self._store()
        async with self._submits:
            samples, chunks = await _in_thread(prepare, source, max_seconds=self.settings.max_job_audio_seconds,
                                               chunk_seconds=self.settings.job_chunk_seconds)
            job = await _in_thread(store.create, samples, model=model, options=options, conversion=conversion,
                                   words=words, chunks=chunks)
        if self.runner is not None:
            self.runner.wake()
        return job

    async def get(self, job_id: str) -> Job:
        job = await _in_thread(self._store().get, job_id) if valid_id(job_id) else None
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def recent(self, limit: int) -> list[Job]:
        return await _in_thread(self._store().recent, limit)

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
        result = await _in_thread(self._store().result, job_id)
        if result is None:  # succeeded rows always carry a result; a broken row is not a silent empty body
            raise APIError("The job's result is missing", status_code=500, type="server_error", code="internal_error")
        return job, result

    async def cancel(self, job_id: str) -> Job:
        await self.get(job_id)
        job = await _in_thread(self._store().cancel, job_id)
        if job is None:
            raise JobNotFound(job_id)
        if self.runner is not None:
            self.runner.cancel(job_id)
        return job

    async def delete(self, job_id: str) -> None:
        await self.get(job_id)
        if self.runner is not None:
            self.runner.cancel(job_id)
        if not await _in_thread(self._store().delete, job_id):
            raise JobNotFound(job_id)
