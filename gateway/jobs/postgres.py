"""Jobs in PostgreSQL (``GATEWAY_JOBS_DATABASE_URL``): any number of gateway replicas share one queue.

psycopg 3 with a ``psycopg_pool`` connection pool. A replica claims a queued job with
``SELECT ... FOR UPDATE SKIP LOCKED`` (two replicas never take the same job, and neither waits for the
other), under a lease whose deadline (on the database's clock, so the replicas' clocks do not matter) its
heartbeat moves on while a chunk runs. A replica that dies stops renewing; once the deadline passes, any
replica's periodic ``recover`` puts the job back in the queue, and the next claim resumes it at its first
unfinished chunk.

Pending audio lives in the database, in ``job_audio``: one row per chunk, the chunk's FLAC (``bytea``,
stored ``EXTERNAL``: already compressed, so PostgreSQL does not try again). Every replica can read it
without a shared disk or another service to run, it is written in the same transaction as the job's row
(no orphan files, no half-submitted job), and each chunk's row is deleted in the transaction that commits
its result, so the space is given back as the job advances. Cost: speech compresses to about 17 KB per
second (63 MB per hour), 253 MB for a 4-hour upload (plus the same again in WAL until a checkpoint), against 0.9 GB
of float32. Object storage would suit uploads far past that; it would go behind the same three methods
(``_save_audio``, ``chunk_audio``, ``_drop_chunk``).

The schema is versioned (``schema_version``) and migrated on start under an advisory lock, so replicas
starting together apply each version once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from gateway.jobs import audio
from gateway.jobs.models import Job
from gateway.jobs.store import JobStore, migrate

LOCK_MIGRATE = 7_414_001  # pg_advisory_xact_lock keys
LOCK_LIMITS = 7_414_002
TRANSIENT = (psycopg.OperationalError,)

MIGRATIONS = (
    # 1: jobs, chunk results, chunk audio, the webhook outbox.
    """
    CREATE TABLE jobs (
        id text PRIMARY KEY,
        status text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
        created_at double precision NOT NULL, updated_at double precision NOT NULL, finished_at double precision,
        model text NOT NULL, options text NOT NULL, conversion text NOT NULL, words integer NOT NULL,
        duration double precision NOT NULL, chunks text NOT NULL,
        chunks_done integer NOT NULL DEFAULT 0, progress_s double precision NOT NULL DEFAULT 0,
        attempts integer NOT NULL DEFAULT 0, interruptions integer NOT NULL DEFAULT 0,
        resumed_at_chunk integer NOT NULL DEFAULT 0, error text, last_error text, result text,
        client text NOT NULL DEFAULT '', audio_bytes bigint NOT NULL DEFAULT 0,
        callback_url text, callback_metadata text, lease text, lease_expires double precision, runner text);
    CREATE INDEX jobs_by_status ON jobs (status, created_at);
    CREATE INDEX jobs_by_created ON jobs (created_at);
    CREATE INDEX jobs_by_client ON jobs (client, status);
    CREATE TABLE chunk_results (
        job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, idx integer NOT NULL,
        attempt integer NOT NULL, finished_at double precision NOT NULL, result text NOT NULL,
        PRIMARY KEY (job_id, idx));
    CREATE TABLE job_audio (
        job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, idx integer NOT NULL, data bytea NOT NULL,
        PRIMARY KEY (job_id, idx));
    ALTER TABLE job_audio ALTER COLUMN data SET STORAGE EXTERNAL;
    CREATE TABLE webhooks (
        id text PRIMARY KEY, job_id text NOT NULL, url text NOT NULL, body text NOT NULL,
        created_at double precision NOT NULL, next_at double precision NOT NULL,
        attempts integer NOT NULL DEFAULT 0, last_error text);
    CREATE INDEX webhooks_by_next ON webhooks (next_at)
    """,
    # 2: diarization: the job's speaker options, each chunk's speaker windows.
    """
    ALTER TABLE jobs ADD COLUMN diarize text;
    ALTER TABLE chunk_results ADD COLUMN speakers text
    """,
)


class _Tx:
    """A connection that takes the store's ``?`` placeholders."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self.conn.execute(sql.replace("?", "%s"), params)


class PostgresStore(JobStore):
    NOW = "extract(epoch from clock_timestamp())::float8"
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    leases_expire = True
    transient = TRANSIENT

    def __init__(self, url: str, *, pool_size: int = 8, timeout_s: float = 10.0) -> None:
        self.pool = ConnectionPool(url, min_size=1, max_size=max(2, pool_size), timeout=timeout_s, open=False,
                                   kwargs={"autocommit": True, "row_factory": dict_row}, name="jobs")
        self.pool.open(wait=True, timeout=timeout_s)
        try:
            with self._tx() as db:
                db.execute("SELECT pg_advisory_xact_lock(?)", (LOCK_MIGRATE,))  # replicas starting together
                self.schema_version = migrate(db, MIGRATIONS)
                info = db.conn.info
                self._where = f"PostgreSQL {info.host}:{info.port}/{info.dbname}"
        except BaseException:
            self.pool.close()
            raise

    def __repr__(self) -> str:
        return self._where  # never the URL: it may hold a password

    def close(self) -> None:
        self.pool.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[_Tx]:
        with self.pool.connection() as conn, conn.transaction():
            yield _Tx(conn)

    @contextlib.contextmanager
    def _read(self) -> Iterator[_Tx]:
        with self.pool.connection() as conn:
            yield _Tx(conn)

    def _lock_for_limits(self, db: Any) -> None:
        db.execute("SELECT pg_advisory_xact_lock(?)", (LOCK_LIMITS,))

    def _save_audio(self, db: Any, job_id: str, blobs: Sequence[bytes]) -> None:
        with db.conn.cursor() as cursor:
            cursor.executemany("INSERT INTO job_audio (job_id, idx, data) VALUES (%s, %s, %s)",
                               [(job_id, idx, blob) for idx, blob in enumerate(blobs)])

    def _discard_audio(self, job_id: str) -> None:
        pass  # written in the job's own transaction: rolled back with it

    def chunk_audio(self, job: Job, idx: int) -> np.ndarray:
        with self._read() as db:
            row = db.execute("SELECT data FROM job_audio WHERE job_id = ? AND idx = ?", (job.id, idx)).fetchone()
        if row is None:
            raise OSError(f"chunk {idx} of job {job.id} has no stored audio")
        return audio.decode(bytes(row["data"]))

    def _drop_chunk(self, db: Any, job_id: str, idx: int) -> int:
        row = db.execute("DELETE FROM job_audio WHERE job_id = ? AND idx = ? RETURNING octet_length(data) AS n",
                         (job_id, idx)).fetchone()
        return 0 if row is None else int(row["n"])

    def _drop_audio(self, db: Any, job_id: str) -> None:
        db.execute("DELETE FROM job_audio WHERE job_id = ?", (job_id,))

    def audio_rows(self, job_id: str) -> int:
        with self._read() as db:
            return int(db.execute("SELECT count(*) AS n FROM job_audio WHERE job_id = ?", (job_id,)).fetchone()["n"])
