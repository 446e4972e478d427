"""Both job stores against the same assertions (SQLite in a temporary directory, a real PostgreSQL), and
what only PostgreSQL does: claims shared by replicas, leases, migrations, the outbox across replicas."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.chunks import split_chunks
from gateway.diarization import DiarizeOptions
from gateway.jobs import JobGone, JobQuotaExceeded, JobRunner, Limits
from gateway.jobs.postgres import PostgresStore
from gateway.jobs.sqlite import SQLiteStore
from gateway.results import Options, Segment, Transcription
from gateway.triton import SpeakerWindows
from tests.unit.test_jobs import FakeTriton, flat, noise

RATE = 16000


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path)
    else:
        opened = PostgresStore(request.getfixturevalue("postgres").new_database())
    yield opened
    opened.close()


@pytest.fixture
def pg_url(postgres) -> str:
    return postgres.new_database()


def make_job(store, seconds: float = 20.0, chunk_seconds: float = 10.0, **kw):
    samples = kw.pop("samples", None)
    samples = flat(seconds) if samples is None else samples
    return store.create(samples, model="whisper", options=Options(language="en"), conversion="none", words=False,
                        chunks=split_chunks(samples, chunk_seconds), **kw)


def chunk_text(text: str) -> Transcription:
    return Transcription(text, "en", 1.0, (Segment(0, 0.0, 1.0, f" {text}"),))


def test_audio_is_stored_compressed_and_read_back_by_chunk(store):
    """Issue 11 item 6: an hour of speech was 230 MB of float32; FLAC keeps it exact at about a quarter."""
    samples = noise(3, seed=1) * 0.05 + np.sin(np.arange(30 * RATE) / RATE * 2 * np.pi * 220)[:3 * RATE] * 0.1
    job = make_job(store, samples=samples.astype(np.float32), chunk_seconds=1.0)
    assert job.chunk_count >= 2 and 0 < job.audio_bytes < 0.5 * samples.size * 4
    for idx, (start, end) in enumerate(job.chunks):
        back = store.chunk_audio(job, idx)
        assert back.size == end - start
        assert np.max(np.abs(back - samples[start:end])) <= 1 / 32767  # 16-bit lossless


def test_commit_fences_and_order(store):
    job = make_job(store, seconds=30)
    claimed = store.claim_next()
    assert claimed.lease and claimed.attempts == 1
    with pytest.raises(JobGone):  # not the next chunk
        store.save_chunk(claimed, 1, chunk_text("b"), progress_s=20.0)
    store.save_chunk(claimed, 0, chunk_text("a"), progress_s=10.0)
    with pytest.raises(JobGone):  # a chunk is committed once
        store.save_chunk(claimed, 0, chunk_text("a again"), progress_s=10.0)
    stale = type(claimed)(**{**claimed.__dict__, "lease": "not-this-claim"})
    with pytest.raises(JobGone):
        store.save_chunk(stale, 1, chunk_text("b"), progress_s=20.0)
    with pytest.raises(JobGone):
        store.succeed(stale, chunk_text("x"))
    after = store.get(job.id)
    assert after.chunks_done == 1 and after.audio_bytes < job.audio_bytes
    assert [r.text for r in store.chunk_results(job.id)] == ["a"]


def test_diarize_options_and_chunk_windows_are_kept(store):
    job = make_job(store, seconds=30, diarize=DiarizeOptions(min_speakers=2, max_speakers=3))
    assert store.get(job.id).diarize == DiarizeOptions(min_speakers=2, max_speakers=3)
    assert make_job(store).diarize is None
    claimed = store.claim_next()
    windows = SpeakerWindows(noise(512 / RATE, seed=2).reshape(2, 256),
                             np.array([[0.5, 2.1], [1.3, 2.9]]), np.array([0, 1]))
    store.save_chunk(claimed, 0, chunk_text("a"), progress_s=10.0, windows=windows)
    store.save_chunk(claimed, 1, chunk_text("b"), progress_s=20.0, windows=SpeakerWindows(
        np.zeros((0, 256), np.float32), np.zeros((0, 2)), np.zeros(0, np.int64)))
    first, second = store.chunk_windows(job.id)
    assert first.embeddings.dtype == np.float32 and np.array_equal(first.embeddings, windows.embeddings)
    assert np.array_equal(first.spans, windows.spans) and list(first.regions) == [0, 1]
    assert second.embeddings.shape == (0, 256)
    segment = Segment(0, 0.0, 1.0, " a", speaker="A")
    store.succeed(claimed, Transcription("a", "en", 1.0, (segment,)))
    assert store.result(job.id).segments == (segment,)


def test_quota_and_per_client_limits_are_429(store):
    first = make_job(store, seconds=4, client="10.0.0.1", limits=Limits(max_active_per_client=2))
    make_job(store, seconds=4, client="10.0.0.1", limits=Limits(max_active_per_client=2))
    with pytest.raises(JobQuotaExceeded) as refused:
        make_job(store, seconds=4, client="10.0.0.1", limits=Limits(max_active_per_client=2))
    assert refused.value.status_code == 429 and "2 unfinished jobs" in refused.value.message
    make_job(store, seconds=4, client="10.0.0.2", limits=Limits(max_active_per_client=2))  # another client
    store.cancel(first.id)  # a finished job no longer counts
    make_job(store, seconds=4, client="10.0.0.1", limits=Limits(max_active_per_client=2))

    used = sum(j.audio_bytes for j in store.recent(10) if j.status in ("queued", "running"))
    with pytest.raises(JobQuotaExceeded) as full:
        make_job(store, seconds=4, limits=Limits(max_audio_bytes=used + 10))
    assert "The job queue is full" in full.value.message
    assert len(store.recent(10)) == 4  # the refused jobs left nothing behind
    if isinstance(store, SQLiteStore):
        assert {p.name.split(".")[0] for p in store.audio_dir.iterdir()} == {
            j.id for j in store.recent(10) if j.status == "queued"}


def test_claim_order_oldest_or_least_audio_left(store):
    long_job = make_job(store, seconds=40)
    short_job = make_job(store, seconds=3)
    assert store.claim_next("shortest").id == short_job.id
    assert store.claim_next("oldest").id == long_job.id
    assert store.claim_next() is None


def test_ending_a_job_with_a_callback_puts_one_message_in_the_outbox(store):
    job = make_job(store, seconds=3, callback_url="https://example.com/hook", callback_metadata={"ref": 7})
    plain = make_job(store, seconds=3)
    store.succeed(store.claim_next(), chunk_text("done"))
    store.cancel(plain.id)  # no callback_url: no message
    (message,) = store.due_webhooks(10, claim_s=60)
    body = json.loads(message.body)
    assert message.url == "https://example.com/hook" and message.id.startswith("msg_")
    assert body["type"] == "transcription.job.succeeded"
    assert body["data"]["id"] == job.id and body["data"]["status"] == "succeeded"
    assert body["data"]["callback_metadata"] == {"ref": 7}
    assert store.due_webhooks(10, claim_s=60) == []  # held while it is being sent
    store.webhook_retry(message, 0.0, "the receiver answered 500")
    (again,) = store.due_webhooks(10, claim_s=60)
    assert again.id == message.id and again.attempts == 1 and again.body == message.body
    store.webhook_done(again)
    assert store.pending_webhooks() == 0


# ------------------------------------------------------------------------------------- PostgreSQL only

def test_migrations_are_versioned_and_run_once(pg_url):
    stores = []
    with ThreadPoolExecutor(4) as pool:  # replicas starting together
        stores = list(pool.map(lambda _: PostgresStore(pg_url), range(4)))
    import psycopg

    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,), (2,)]
        storage = conn.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 'job_audio'::regclass"
                               " AND attname = 'data'").fetchone()[0]
    assert storage == "e"  # EXTERNAL: FLAC is not compressed again
    assert all(s.schema_version == 2 for s in stores)
    for s in stores:
        s.close()


def test_replicas_claim_each_job_once(pg_url):
    replicas = [PostgresStore(pg_url) for _ in range(3)]
    ids = {make_job(replicas[0], seconds=2).id for _ in range(12)}
    claimed: list[str] = []
    lock = threading.Lock()

    def drain(store):
        while (job := store.claim_next(lease_s=60)) is not None:
            with lock:
                claimed.append(job.id)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(drain, replicas * 2))
    assert sorted(claimed) == sorted(ids)  # every job once, none twice
    for r in replicas:
        r.close()


def test_an_expired_lease_is_reclaimed_and_the_old_holder_is_fenced_off(pg_url):
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    job = make_job(a, seconds=30)
    held = a.claim_next(lease_s=60)
    a.save_chunk(held, 0, chunk_text("first"), progress_s=10.0, lease_s=60)
    assert b.recover(max_attempts=3) == ([], [])  # the lease is live: nobody takes it
    assert a.heartbeat(held, lease_s=0.0)  # ... until it runs out (the holder "died")
    assert b.recover(max_attempts=3) == ([job.id], [])
    taken = b.claim_next(lease_s=60)
    assert (taken.id, taken.attempts, taken.interruptions, taken.resumed_at_chunk) == (job.id, 2, 1, 1)
    assert not a.heartbeat(held, lease_s=60)
    with pytest.raises(JobGone):
        a.save_chunk(held, 1, chunk_text("stale"), progress_s=20.0)
    b.save_chunk(taken, 1, chunk_text("second"), progress_s=20.0)
    b.save_chunk(taken, 2, chunk_text("third"), progress_s=30.0)
    b.succeed(taken, chunk_text("all"))
    assert b.chunk_attempts(job.id) == [1, 2, 2] and b.audio_rows(job.id) == 0
    assert [r.text for r in b.chunk_results(job.id)] == ["first", "second", "third"]
    a.close(), b.close()


def test_expired_too_often_is_failed_with_a_webhook(pg_url):
    store = PostgresStore(pg_url)
    job = make_job(store, seconds=3, callback_url="https://example.com/hook")
    store.claim_next(lease_s=0.0)
    assert store.recover(max_attempts=1) == ([], [job.id])
    failed = store.get(job.id)
    assert failed.status == "failed" and failed.error["code"] == "job_interrupted" and store.audio_rows(job.id) == 0
    (message,) = store.due_webhooks(5, claim_s=60)
    assert json.loads(message.body)["type"] == "transcription.job.failed"
    store.close()


async def test_two_runners_on_one_database_finish_every_job_once(pg_url):
    stores = [PostgresStore(pg_url) for _ in range(2)]
    fakes = [FakeTriton(), FakeTriton()]
    jobs = [make_job(stores[0], seconds=25) for _ in range(4)]
    runners = [JobRunner(s, f, workers=2, poll_s=0.02, lease_s=5) for s, f in zip(stores, fakes)]
    for r in runners:
        r.start()
    try:
        states = await wait_all(stores[0], [j.id for j in jobs])
    finally:
        for r in runners:
            await r.stop()
    assert [s.status for s in states] == ["succeeded"] * 4
    assert len(fakes[0].calls) + len(fakes[1].calls) == sum(j.chunk_count for j in jobs)  # no chunk twice
    assert all(s.attempts == 1 for s in states) and all(stores[0].audio_rows(j.id) == 0 for j in jobs)
    for s in stores:
        s.close()


async def wait_all(store, ids, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        states = [await asyncio.to_thread(store.get, i) for i in ids]
        if all(s.status not in ("queued", "running") for s in states) or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.05)


async def test_a_version_1_sqlite_database_is_migrated_and_its_jobs_still_run(tmp_path):
    """The first release's SQLite file (float32 .npy audio): opened by this one, its queued job runs."""
    from gateway.jobs.sqlite import MIGRATIONS

    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    db.executescript(MIGRATIONS[0])
    samples = flat(25)
    chunks = split_chunks(samples, 10.0)
    (tmp_path / "audio").mkdir()
    np.save(tmp_path / "audio" / f"{'a' * 32}.npy", samples)
    db.execute("INSERT INTO jobs (id, status, created_at, updated_at, model, options, conversion, words, audio_file,"
               " duration, chunks) VALUES (?, 'queued', 1, 1, 'whisper', ?, 'none', 0, ?, 25.0, ?)",
               ("a" * 32, json.dumps({"language": "en"}), f"{'a' * 32}.npy", json.dumps(chunks)))
    db.commit()
    db.close()

    store, fake = SQLiteStore(tmp_path), FakeTriton()
    assert store.schema_version == 3
    runner = JobRunner(store, fake, poll_s=0.02)
    runner.start()
    try:
        (done,) = await wait_all(store, ["a" * 32])
    finally:
        await runner.stop()
    assert done.status == "succeeded" and fake.calls == [e - s for s, e in chunks]
    assert store.result(done.id).text == " ".join(f"chunk {i + 1}" for i in range(len(chunks)))
    assert store.audio_files(done.id) == []  # the legacy .npy went with the job
    store.close()


def test_a_database_that_is_down_at_start_gives_503_then_jobs_once_it_is_up(postgres, monkeypatch, tmp_path):
    """The gateway starts at once without its database (jobs 503), and serves jobs when it comes up."""
    from fastapi.testclient import TestClient

    from gateway.config import Settings
    from gateway.jobs import app as jobs_app
    from gateway.main import create_app

    url = postgres.new_database()
    monkeypatch.setattr(jobs_app, "FIRST_OPEN_S", 0.5)
    monkeypatch.setattr(jobs_app, "RECONNECT_S", 0.1)
    real_open = jobs_app.open_store
    attempts = []

    def flaky_open(settings, timeout_s):
        attempts.append(timeout_s)
        if len(attempts) < 3:  # the database "comes up" at the third attempt
            raise OSError("connection refused")
        return real_open(settings, timeout_s)

    monkeypatch.setattr(jobs_app, "open_store", flaky_open)
    app = create_app(Settings(_env_file=None, jobs_database_url=url, jobs_dir=tmp_path), triton=FakeTriton())
    with TestClient(app) as client:
        r = client.get("/v1/jobs")
        assert r.status_code == 503 and r.json()["error"]["code"] == "jobs_unavailable"
        assert client.get("/v1/models").status_code == 200
        deadline = time.monotonic() + 10
        while client.get("/v1/jobs").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert len(attempts) == 3


def test_an_hour_of_speech_is_not_hundreds_of_megabytes(store, shared_audio):
    """Issue 11 item 6: float32 kept 64 KB per second (230 MB an hour, 0.9 GB for 4 h). Real speech as
    FLAC, as stored: under 24 KB per second (measured 17.6)."""
    from tests.utils.helpers import audio_of

    samples = np.concatenate([audio_of(f"en/{n}") for n in ("jfk.flac", "1089-134686-0000.wav",
                                                             "1320-122617-0001.flac")])
    job = make_job(store, samples=samples, chunk_seconds=10.0)
    per_second = job.audio_bytes / job.duration
    assert per_second < 24_000, per_second
    assert sum(store.chunk_audio(job, i).size for i in range(job.chunk_count)) == samples.size
