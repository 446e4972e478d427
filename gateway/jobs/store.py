"""The job store: one interface, the SQL both databases share, and what each must provide.

``JobStore`` is blocking (call it from a worker thread in async code). Two implementations:
``sqlite.SQLiteStore`` (embedded default, one machine, one runner per directory) and
``postgres.PostgresStore`` (any number of gateway replicas on one database). The SQL below is written
once for both (``?`` placeholders; PostgreSQL's store rewrites them); each store supplies its
transactions, its clock expression, row locking, and where the pending audio lives.

Claims: a runner takes a job by setting ``status = 'running'`` and a new ``lease`` token, with a
``lease_expires`` deadline on the database's clock. Every write the runner makes afterwards (a chunk's
result, a retry note, the end) names the token, so a runner whose lease was taken over can never commit
a chunk or a result again (``JobGone``). A chunk's result is inserted only when it is the job's next
chunk (``chunks_done = idx``), under the primary key ``(job_id, idx)``: a committed chunk is never
transcribed into the result twice. ``recover`` finds running jobs whose runner died (PostgreSQL: lease
expired; SQLite: any, at startup under the directory lock), counts the interruption, and puts them back in
the queue at their first unfinished chunk, or fails them after ``max_attempts`` interruptions.

Webhooks (transactional outbox): when a job with a ``callback_url`` ends, the message (the job object,
fixed then) is inserted into ``webhooks`` in the same transaction as the final status, so it is sent at
least once whatever happens to the process after the commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from gateway.jobs import audio
from gateway.diarization import DiarizeOptions
from gateway.jobs.models import (Delivery, Job, JobGone, JobQuotaExceeded, dump_result, dump_windows, load_result,
                                 load_windows)
from gateway.results import Options, Transcription
from gateway.triton import SpeakerWindows
from whisper_triton.protocol import SAMPLE_RATE

RUNNER = f"{socket.gethostname()}:{os.getpid()}"  # who claimed a job, for the operator (and tests)
ORDERS = {"oldest": "created_at, id", "shortest": "duration - progress_s, created_at, id"}


@dataclasses.dataclass(frozen=True)
class Limits:
    """Checked in the transaction that creates a job: past either, the submit gets 429."""

    max_active_per_client: int | None = None  # queued + running jobs of one client
    max_audio_bytes: int | None = None  # compressed audio of every unfinished job together


class JobStore(ABC):
    NOW: str  # SQL for the database's clock, seconds since the epoch
    SKIP_LOCKED: str = ""  # row locking for claims ("" where a transaction locks the whole database)
    leases_expire: bool = False  # True: a dead runner's job is found by its lease (any replica reclaims it)

    # -- what each database provides -----------------------------------------------------------------

    @abstractmethod
    def _tx(self) -> contextlib.AbstractContextManager[Any]:
        """A write transaction; yields an object with ``execute(sql, params)`` returning a cursor."""

    @abstractmethod
    def _read(self) -> contextlib.AbstractContextManager[Any]:
        """A connection for reads."""

    def _write_audio(self, job_id: str, blobs: Sequence[bytes]) -> None:
        """Store a new job's chunks outside the database, before its row is written (if they go there)."""

    def _save_audio(self, db: Any, job_id: str, blobs: Sequence[bytes]) -> None:
        """Store a new job's chunks in the database, in the transaction that inserts the job (if they go there)."""

    @abstractmethod
    def _discard_audio(self, job_id: str) -> None:
        """After a failed create: remove what ``_save_audio`` put outside the database, if anything."""

    @abstractmethod
    def chunk_audio(self, job: Job, idx: int) -> np.ndarray:
        """One chunk's samples (16 kHz mono float32)."""

    @abstractmethod
    def _drop_chunk(self, db: Any, job_id: str, idx: int) -> int:
        """Inside the transaction that commits chunk ``idx``: its audio is no longer needed; bytes freed."""

    @abstractmethod
    def _drop_audio(self, db: Any, job_id: str) -> None:
        """Inside the transaction that ends or deletes the job: all of its audio goes."""

    def _after_commit(self, job_id: str, idx: int | None = None) -> None:
        """After a chunk (``idx``) or the whole job (None) was committed: remove files, if any."""

    def close(self) -> None:
        pass

    def try_runner_lock(self) -> bool:
        """True when this process may run jobs now (SQLite: one runner per directory)."""
        return True

    def release_runner_lock(self) -> None:
        pass

    # -- creating and reading ------------------------------------------------------------------------

    def create(self, samples: np.ndarray, *, model: str, options: Options, conversion: str, words: bool,
               chunks: Sequence[tuple[int, int]], client: str = "", callback_url: str | None = None,
               callback_metadata: dict[str, Any] | None = None, limits: Limits = Limits(),
               diarize: DiarizeOptions | None = None) -> Job:
        """Compress and store the audio, then write the ``queued`` row; the limits are checked in the
        same transaction, so replicas submitting at once cannot pass them together."""
        job_id = uuid.uuid4().hex
        blobs = audio.encode_chunks(samples, chunks)
        size = sum(len(b) for b in blobs)
        now = time.time()
        try:
            self._write_audio(job_id, blobs)
            with self._tx() as db:
                self._check_limits(db, client, size, limits)
                db.execute(
                    "INSERT INTO jobs (id, status, created_at, updated_at, model, options, conversion, words,"
                    " duration, chunks, client, audio_bytes, callback_url, callback_metadata, diarize)"
                    " VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, now, now, model, json.dumps(dataclasses.asdict(options)), conversion, int(words),
                     samples.shape[0] / SAMPLE_RATE, json.dumps([list(c) for c in chunks]), client, size,
                     callback_url, None if callback_metadata is None else json.dumps(callback_metadata),
                     None if diarize is None else json.dumps({"min_speakers": diarize.min_speakers,
                                                              "max_speakers": diarize.max_speakers})))
                self._save_audio(db, job_id, blobs)
        except BaseException:
            self._discard_audio(job_id)
            raise
        job = self.get(job_id)
        assert job is not None
        return job

    def check_limits(self, client: str, limits: Limits) -> None:
        """The limits before an upload is decoded, so a client past them costs no decoding (``create``
        checks again, with the upload's size, where it counts)."""
        with self._tx() as db:
            self._check_limits(db, client, 0, limits)

    def _lock_for_limits(self, db: Any) -> None:
        """Serialise the limit checks of concurrent creates (SQLite's write transaction already does)."""

    def _check_limits(self, db: Any, client: str, size: int, limits: Limits) -> None:
        if limits.max_active_per_client is None and limits.max_audio_bytes is None:
            return
        self._lock_for_limits(db)
        if limits.max_active_per_client is not None:
            (count,) = _values(db.execute("SELECT count(*) AS n FROM jobs WHERE client = ? AND status IN"
                                          " ('queued', 'running')", (client,)).fetchone())
            if count >= limits.max_active_per_client:
                raise JobQuotaExceeded(f"You have {count} unfinished jobs, the most one client may have "
                                       f"(GATEWAY_JOB_MAX_ACTIVE_PER_CLIENT); submit more when some have finished")
        if limits.max_audio_bytes is not None:
            (used,) = _values(db.execute("SELECT coalesce(sum(audio_bytes), 0) AS n FROM jobs WHERE status IN"
                                         " ('queued', 'running')", ()).fetchone())
            if used + size > limits.max_audio_bytes or used >= limits.max_audio_bytes:
                raise JobQuotaExceeded(
                    f"The job queue is full: {used / 2**20:.0f} MiB of audio waits to be transcribed and this "
                    f"upload needs {size / 2**20:.1f} MiB more (limit {limits.max_audio_bytes / 2**20:.0f} MiB, "
                    f"GATEWAY_JOB_STORAGE_QUOTA_MB); retry when jobs have finished")

    def get(self, job_id: str) -> Job | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else Job.from_row(row)

    def recent(self, limit: int = 20) -> list[Job]:
        """Newest first."""
        with self._read() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)).fetchall()
        return [Job.from_row(r) for r in rows]

    def result(self, job_id: str) -> Transcription | None:
        with self._read() as db:
            row = db.execute("SELECT result FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None or row["result"] is None else load_result(row["result"])

    def chunk_results(self, job_id: str) -> list[Transcription]:
        with self._read() as db:
            rows = db.execute("SELECT result FROM chunk_results WHERE job_id = ? ORDER BY idx", (job_id,)).fetchall()
        return [load_result(r["result"]) for r in rows]

    def chunk_windows(self, job_id: str) -> list[SpeakerWindows | None]:
        """Each stored chunk's speaker windows (on the file's timeline; None where not diarized), in chunk order."""
        with self._read() as db:
            rows = db.execute("SELECT speakers FROM chunk_results WHERE job_id = ? ORDER BY idx", (job_id,)).fetchall()
        return [None if r["speakers"] is None else load_windows(r["speakers"]) for r in rows]

    def chunk_attempts(self, job_id: str) -> list[int]:
        """The attempt that produced each stored chunk, in chunk order."""
        with self._read() as db:
            rows = db.execute("SELECT attempt FROM chunk_results WHERE job_id = ? ORDER BY idx", (job_id,)).fetchall()
        return [r["attempt"] for r in rows]

    # -- the runner's transitions --------------------------------------------------------------------

    def claim_next(self, order: str = "oldest", lease_s: float = 60.0) -> Job | None:
        """The next queued job (oldest, or the one with the least audio left), now ``running`` under a
        new lease with one more attempt; None when the queue is empty."""
        with self._tx() as db:
            row = db.execute(
                f"UPDATE jobs SET status = 'running', attempts = attempts + 1, resumed_at_chunk = chunks_done,"
                f" last_error = NULL, updated_at = ?, lease = ?, lease_expires = {self.NOW} + ?, runner = ?"
                f" WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY {ORDERS[order]} LIMIT 1"
                f"{self.SKIP_LOCKED}) RETURNING *", (time.time(), uuid.uuid4().hex, lease_s, RUNNER)).fetchone()
        return None if row is None else Job.from_row(row)

    def heartbeat(self, job: Job, lease_s: float) -> bool:
        """Move the lease's deadline on; False when the job is no longer this claim's."""
        with self._tx() as db:
            return db.execute(f"UPDATE jobs SET lease_expires = {self.NOW} + ? WHERE id = ? AND lease = ?"
                              " AND status = 'running'", (lease_s, job.id, job.lease)).rowcount == 1

    def save_chunk(self, job: Job, idx: int, result: Transcription, progress_s: float, lease_s: float = 60.0,
                   windows: SpeakerWindows | None = None) -> None:
        """Commit chunk ``idx``'s result (and its speaker ``windows``) with the job's progress; ``JobGone`` when
        the job is no longer running under this claim (cancelled, deleted, or reclaimed after the lease expired)."""
        now = time.time()
        with self._tx() as db:
            updated = db.execute(
                f"UPDATE jobs SET chunks_done = ?, progress_s = ?, last_error = NULL, updated_at = ?,"
                f" lease_expires = {self.NOW} + ? WHERE id = ? AND status = 'running' AND lease = ? AND chunks_done = ?",
                (idx + 1, progress_s, now, lease_s, job.id, job.lease, idx)).rowcount
            if not updated:
                raise JobGone(job.id)
            db.execute("INSERT INTO chunk_results (job_id, idx, attempt, finished_at, result, speakers)"
                       " VALUES (?, ?, ?, ?, ?, ?)", (job.id, idx, job.attempts, now, dump_result(result),
                                                      None if windows is None else dump_windows(windows)))
            freed = self._drop_chunk(db, job.id, idx)
            db.execute("UPDATE jobs SET audio_bytes = audio_bytes - ? WHERE id = ?", (freed, job.id))
        self._after_commit(job.id, idx)

    def note_retry(self, job: Job, message: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET last_error = ?, updated_at = ? WHERE id = ? AND lease = ? AND status = 'running'",
                       (message, time.time(), job.id, job.lease))

    def succeed(self, job: Job, result: Transcription) -> None:
        self._finish(job, "succeeded", result=dump_result(result))

    def fail(self, job: Job, error: dict[str, Any]) -> None:
        self._finish(job, "failed", error=json.dumps(error))

    def _finish(self, job: Job, status: str, *, result: str | None = None, error: str | None = None) -> None:
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, last_error = NULL, updated_at = ?, finished_at = ?,"
                " lease = NULL, audio_bytes = 0 WHERE id = ? AND status = 'running' AND lease = ? RETURNING *",
                (status, result, error, now, now, job.id, job.lease)).fetchone()
            if row is None:
                raise JobGone(job.id)
            self._ended(db, row)
        self._after_commit(job.id)

    def _ended(self, db: Any, row: Any) -> None:
        """The job of ``row`` has just ended (in ``db``'s transaction): its audio goes, its webhook is queued."""
        self._drop_audio(db, row["id"])
        job = Job.from_row(row)
        if job.callback_url:
            body = json.dumps({"type": f"transcription.job.{job.status}",
                               "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                               "data": job.to_json()})
            db.execute(f"INSERT INTO webhooks (id, job_id, url, body, created_at, next_at, attempts)"
                       f" VALUES (?, ?, ?, ?, ?, {self.NOW}, 0)",
                       (f"msg_{uuid.uuid4().hex}", job.id, job.callback_url, body, time.time()))

    def cancel(self, job_id: str) -> Job | None:
        """A queued or running job becomes ``cancelled`` (its audio removed); others are left as they are."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("UPDATE jobs SET status = 'cancelled', last_error = NULL, updated_at = ?, finished_at = ?,"
                             " lease = NULL, audio_bytes = 0 WHERE id = ? AND status IN ('queued', 'running')"
                             " RETURNING *", (now, now, job_id)).fetchone()
            if row is not None:
                self._ended(db, row)
        if row is not None:
            self._after_commit(job_id)
        return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        """The job, its chunk results and its audio, gone; False when there was no such job."""
        with self._tx() as db:
            self._drop_audio(db, job_id)
            db.execute("DELETE FROM chunk_results WHERE job_id = ?", (job_id,))
            gone = db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount
        self._after_commit(job_id)
        return bool(gone)

    def requeue(self, jobs: Sequence[Job]) -> None:
        """This runner's jobs back to ``queued`` after a clean stop (not counted as an interruption)."""
        with self._tx() as db:
            for job in jobs:
                db.execute("UPDATE jobs SET status = 'queued', lease = NULL, updated_at = ? WHERE id = ? AND lease = ?"
                           " AND status = 'running'", (time.time(), job.id, job.lease))

    def recover(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """Running jobs whose runner died: back in the queue (their first unfinished chunk is next), or
        ``failed`` after ``max_attempts`` interruptions. Returns (requeued ids, failed ids)."""
        requeued: list[str] = []
        failed: list[str] = []
        now = time.time()
        stale = f" AND lease_expires < {self.NOW}" if self.leases_expire else ""
        with self._tx() as db:
            rows = db.execute(f"SELECT id, interruptions FROM jobs WHERE status = 'running'{stale}"
                              f" ORDER BY created_at{self.SKIP_LOCKED}", ()).fetchall()
            for row in rows:
                count = row["interruptions"] + 1
                if count >= max_attempts:
                    times = f"{count} time{'s' if count != 1 else ''}"
                    error = {"message": f"The job was interrupted {times} (the gateway stopped while it ran); "
                                        f"giving up after {max_attempts} attempts",
                             "type": "server_error", "code": "job_interrupted"}
                    ended = db.execute(
                        "UPDATE jobs SET status = 'failed', interruptions = ?, error = ?, lease = NULL, audio_bytes = 0,"
                        " updated_at = ?, finished_at = ? WHERE id = ? RETURNING *",
                        (count, json.dumps(error), now, now, row["id"])).fetchone()
                    self._ended(db, ended)
                    failed.append(row["id"])
                else:
                    db.execute("UPDATE jobs SET status = 'queued', interruptions = ?, lease = NULL, updated_at = ?"
                               " WHERE id = ?", (count, now, row["id"]))
                    requeued.append(row["id"])
        for job_id in failed:
            self._after_commit(job_id)
        return requeued, failed

    # -- the webhook outbox --------------------------------------------------------------------------

    def due_webhooks(self, limit: int, claim_s: float) -> list[Delivery]:
        """Messages due now, held for ``claim_s`` (no other sender takes them meanwhile)."""
        with self._tx() as db:
            rows = db.execute(f"SELECT * FROM webhooks WHERE next_at <= {self.NOW} ORDER BY next_at LIMIT ?"
                              f"{self.SKIP_LOCKED}", (limit,)).fetchall()
            for row in rows:
                db.execute(f"UPDATE webhooks SET next_at = {self.NOW} + ? WHERE id = ?", (claim_s, row["id"]))
        return [Delivery.from_row(r) for r in rows]

    def webhook_done(self, delivery: Delivery) -> None:
        """Delivered, or given up: the message leaves the outbox."""
        with self._tx() as db:
            db.execute("DELETE FROM webhooks WHERE id = ?", (delivery.id,))

    def webhook_retry(self, delivery: Delivery, delay_s: float, error: str) -> None:
        with self._tx() as db:
            db.execute(f"UPDATE webhooks SET attempts = attempts + 1, next_at = {self.NOW} + ?, last_error = ?"
                       " WHERE id = ?", (delay_s, error[:500], delivery.id))

    def pending_webhooks(self) -> int:
        with self._read() as db:
            return _values(db.execute("SELECT count(*) AS n FROM webhooks", ()).fetchone())[0]


def migrate(db: Any, migrations: Sequence[str]) -> int:
    """In ``db``'s transaction (which keeps other openers out): apply, in order, each schema version not yet
    recorded in ``schema_version``; returns the latest version."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)", ())
    (current,) = _values(db.execute("SELECT coalesce(max(version), 0) AS v FROM schema_version", ()).fetchone())
    for version, script in enumerate(migrations, start=1):
        if version > current:
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement, ())
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    return len(migrations)


def _values(row: Any) -> tuple[Any, ...]:
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)
