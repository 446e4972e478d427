"""Jobs in SQLite under ``jobs_dir`` (the embedded default): one machine, one runner per directory.

``jobs_dir/jobs.sqlite3`` (stdlib ``sqlite3``, WAL, ``synchronous=FULL``) holds the jobs, the chunk
results and the webhook outbox; ``jobs_dir/audio/<job id>.<chunk>.flac`` holds each chunk's audio until
that chunk is committed (files named by the job's id, never a fixed name; fsync'd before the row that
says ``queued``). One process runs jobs per directory: the runner holds an exclusive ``flock`` on
``runner.lock``; other gateways on the same directory (``uvicorn --workers``) accept and serve jobs, and
take over running them when the holder exits. Recovery runs only in the lock holder, at its start, so a
process never "recovers" a job another live process is running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gateway.jobs import audio
from gateway.jobs.models import Job
from gateway.jobs.store import JobStore, migrate

ORPHAN_AGE_S = 600.0  # an audio file without a job row, this old, is left from a crash: removed at startup

# Versioned: version N is applied once, in order, in one transaction with its row in schema_version.
MIGRATIONS = (
    # 1: the schema of the first release (float32 .npy audio files).
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
        created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL,
        model TEXT NOT NULL, options TEXT NOT NULL, conversion TEXT NOT NULL, words INTEGER NOT NULL,
        audio_file TEXT NOT NULL, duration REAL NOT NULL, chunks TEXT NOT NULL,
        chunks_done INTEGER NOT NULL DEFAULT 0, progress_s REAL NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0, interruptions INTEGER NOT NULL DEFAULT 0,
        resumed_at_chunk INTEGER NOT NULL DEFAULT 0, error TEXT, last_error TEXT, result TEXT);
    CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
    CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
    CREATE TABLE IF NOT EXISTS chunk_results (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, idx INTEGER NOT NULL,
        attempt INTEGER NOT NULL, finished_at REAL NOT NULL, result TEXT NOT NULL, PRIMARY KEY (job_id, idx))
    """,
    # 2: compressed per-chunk audio (a version-1 job's file is <id>.npy), leases, clients and quotas,
    # the webhook outbox.
    """
    ALTER TABLE jobs DROP COLUMN audio_file;
    ALTER TABLE jobs ADD COLUMN client TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN audio_bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN callback_url TEXT;
    ALTER TABLE jobs ADD COLUMN callback_metadata TEXT;
    ALTER TABLE jobs ADD COLUMN lease TEXT;
    ALTER TABLE jobs ADD COLUMN runner TEXT;
    ALTER TABLE jobs ADD COLUMN lease_expires REAL;
    CREATE INDEX jobs_by_client ON jobs (client, status);
    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY, job_id TEXT NOT NULL, url TEXT NOT NULL, body TEXT NOT NULL,
        created_at REAL NOT NULL, next_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
    CREATE INDEX webhooks_by_next ON webhooks (next_at)
    """,
    # 3: diarization: the job's speaker options, each chunk's speaker windows.
    """
    ALTER TABLE jobs ADD COLUMN diarize TEXT;
    ALTER TABLE chunk_results ADD COLUMN speakers TEXT
    """,
)
LEGACY_SUFFIX = ".npy"  # version-1 jobs: one float32 file per job, still read until they finish


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SQLiteStore(JobStore):
    """One connection shared by the process's threads, each call under one lock; write transactions are
    ``BEGIN IMMEDIATE`` so other processes on the same file wait (``busy_timeout``) instead of failing."""

    NOW = "((julianday('now') - 2440587.5) * 86400.0)"

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
        with self._tx() as db:  # BEGIN IMMEDIATE: concurrent openers wait
            self.schema_version = migrate(db, MIGRATIONS)
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"SQLite at {self.path}"

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

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

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

    # -- audio files ----------------------------------------------------------------------------------

    def audio_files(self, job_id: str) -> list[Path]:
        """The job's audio files still on disk."""
        return sorted(self.audio_dir.glob(f"{job_id}.*"))

    def _chunk_path(self, job_id: str, idx: int) -> Path:
        return self.audio_dir / f"{job_id}.{idx}{audio.SUFFIX}"

    def _write_audio(self, job_id: str, blobs: Sequence[bytes]) -> None:
        for idx, blob in enumerate(blobs):
            final = self._chunk_path(job_id, idx)
            partial = final.with_name(final.name + ".tmp")
            with open(partial, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(partial, final)
        _fsync_dir(self.audio_dir)

    def _discard_audio(self, job_id: str) -> None:
        self._after_commit(job_id)

    def chunk_audio(self, job: Job, idx: int) -> np.ndarray:
        legacy = self.audio_dir / f"{job.id}{LEGACY_SUFFIX}"
        if legacy.exists():
            start, end = job.chunks[idx]
            return np.array(np.load(legacy, mmap_mode="r", allow_pickle=False)[start:end], dtype=np.float32)
        return audio.decode(self._chunk_path(job.id, idx).read_bytes())

    def _drop_chunk(self, db: Any, job_id: str, idx: int) -> int:
        with contextlib.suppress(OSError):
            return self._chunk_path(job_id, idx).stat().st_size
        return 0

    def _drop_audio(self, db: Any, job_id: str) -> None:
        pass  # the files go once the transaction has committed

    def _after_commit(self, job_id: str, idx: int | None = None) -> None:
        paths = [self._chunk_path(job_id, idx)] if idx is not None else self.audio_files(job_id)
        for path in paths:
            path.unlink(missing_ok=True)

    def recover(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """At startup (this process holds the runner lock): every job left ``running`` was interrupted.
        Also removes audio files no unfinished job refers to (a crash between the files and the row)."""
        requeued, failed = super().recover(max_attempts)
        with self._read() as db:
            keep = {r["id"] for r in db.execute("SELECT id FROM jobs WHERE status IN ('queued', 'running')")}
        now = time.time()
        for path in self.audio_dir.iterdir():
            # Young files may belong to a submit in progress (files written, row not yet).
            with contextlib.suppress(OSError):
                if path.name.split(".")[0] not in keep and now - path.stat().st_mtime > ORPHAN_AGE_S:
                    path.unlink()
        return requeued, failed
