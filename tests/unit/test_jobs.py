"""Durable jobs without Triton: the SQLite store, chunk planning, merging, recovery, the runner with a fake
Triton client, and the ``/v1/jobs`` routes through FastAPI's TestClient."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from client.audio import encode_wav
from gateway import jobs as jobs_module
from gateway import diarization
from gateway.chunks import drop_repeats, merge, on_timeline, shift, split_chunks
from gateway.config import Settings
from gateway.diarization import DiarizeOptions
from gateway.errors import InvalidRequest, ServiceUnavailable, TooManyRequests
from gateway.jobs import JobRunner, audio, result_from_dict, result_to_dict
from gateway.jobs.api import JobList, JobObject
from gateway.jobs.sqlite import SQLiteStore
from gateway.main import create_app
from gateway.results import Options, Segment, Transcription, Word
from gateway.triton import SpeakerWindows

RATE = 16000


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * 0.3).astype(np.float32)


def flat(seconds: float) -> np.ndarray:
    """Every 20 ms frame equally loud: each cut lands on the last frame before its boundary (9.99 s, 19.98 s...)."""
    return np.full(int(seconds * RATE), 0.1, dtype=np.float32)


wav_bytes = encode_wav


class FakeTriton:
    """One segment per chunk ("chunk N" where N counts calls), with two words; errors on demand."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # samples per call
        self.failures: list[Exception] = []  # raised, in order, before answering
        self.gate: asyncio.Event | None = None

    async def transcribe(self, model: str, audio: np.ndarray, options: Options) -> Transcription:
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.calls.append(audio.size)
        n = len(self.calls)
        duration = audio.size / RATE
        words = (Word(" chunk", 0.5, 1.0), Word(f" {n}", 1.0, duration + 3.0)) if options.word_timestamps else None
        segment = Segment(0, 0.5, duration + 3.0, f" chunk {n}", words=words)  # end past the chunk: clamped
        return Transcription(f"chunk {n}", options.language or "en", duration, (segment,), options.task, model)

    async def ready_models(self) -> list[str]:
        return ["whisper", "whisper-tiny-en"]

    async def server_ready(self) -> bool:
        return True

    async def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------ splitting

def check_cover(ranges: list[tuple[int, int]], n: int) -> None:
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])), "gaps or overlaps between chunks"
    assert all(end > start for start, end in ranges)


def test_cuts_land_in_the_quiet_gap_before_each_boundary():
    samples = noise(50)
    gaps = [(8.4, 8.6), (17.0, 17.2), (26.1, 26.3), (35.5, 35.7)]  # each within 5 s before a boundary
    for start, end in gaps:
        samples[int(start * RATE):int(end * RATE)] = 0.0
    ranges = split_chunks(samples, 10.0)
    check_cover(ranges, samples.size)
    cuts = [end / RATE for _, end in ranges[:-1]]
    assert len(cuts) == len(gaps)
    for cut, (start, end) in zip(cuts, gaps):
        assert start <= cut <= end, (cut, start, end)


def test_uniform_audio_is_cut_at_the_boundary_and_no_sliver_is_left():
    samples = np.full(int(31 * RATE), 0.1, dtype=np.float32)  # every frame equally loud: latest frame wins
    ranges = split_chunks(samples, 10.0)
    check_cover(ranges, samples.size)
    assert [round(e / RATE, 2) for _, e in ranges[:-1]] == [9.99, 19.98]
    assert (ranges[-1][1] - ranges[-1][0]) / RATE > 10  # the 1 s left over joins the last chunk


def test_short_audio_is_one_chunk():
    samples = noise(12)
    assert split_chunks(samples, 10.0) == [(0, samples.size)]  # 12 s <= 10 s + the 5 s search window
    assert split_chunks(samples[:100], 10.0) == [(0, 100)]


def test_long_audio_chunks_stay_near_the_chunk_length():
    samples = noise(600, seed=3)
    ranges = split_chunks(samples, 120.0)
    check_cover(ranges, samples.size)
    lengths = [(e - s) / RATE for s, e in ranges]
    assert all(115 <= length <= 120 for length in lengths[:-1]), lengths  # cut within the last 5 s
    assert len(ranges) == 6 and 0 < lengths[-1] < 125


# ------------------------------------------------------------------------------------- shift and merge

def test_shift_and_merge_move_times_renumber_ids_and_join_text():
    words = (Word(" a", 0.0, 0.5), Word(" b", 0.5, 12.0))
    first = Transcription("Hello there.", "en", 10.0,
                          (Segment(0, 0.0, 4.0, " Hello"), Segment(1, 4.0, 11.0, " there.", words=words)))
    second = Transcription("General Kenobi.", "en", 8.0, (Segment(0, 1.0, 3.0, " General Kenobi."),))
    silent = Transcription("", "nn", 5.0, ())
    parts = [shift(silent, 0.0, 5.0), shift(first, 5.0, 15.0), shift(second, 15.0, 23.0)]
    merged = merge(parts, duration=23.0, model="whisper", task="transcribe")
    assert merged.text == "Hello there. General Kenobi."
    assert merged.language == "en"  # the first chunk with speech, not the silent one
    assert merged.duration == 23.0 and merged.model == "whisper"
    assert [s.id for s in merged.segments] == [0, 1, 2]
    assert [(s.start, s.end) for s in merged.segments] == [(5.0, 9.0), (9.0, 15.0), (16.0, 18.0)]  # 16 > 15 clamped
    assert [(w.start, w.end) for w in merged.words] == [(5.0, 5.5), (5.5, 15.0)]


def test_repeated_segments_at_a_ragged_chunk_end_are_dropped():
    loop = " In his return to the camp, his acute"
    result = Transcription("x", "en", 10.0, (Segment(0, 0.0, 3.0, " Yes."), Segment(1, 3.0, 4.0, " Yes."),
                                             Segment(2, 4.0, 7.0, loop), Segment(3, 7.0, 9.0, loop.upper() + "!"),
                                             Segment(4, 9.0, 10.0, " his acute")))
    cleaned = drop_repeats(result)
    assert [s.id for s in cleaned.segments] == [0, 1, 2, 4]  # short repeats are kept: people do say "Yes. Yes."
    assert cleaned.text == "Yes. Yes. In his return to the camp, his acute his acute"
    clean = Transcription("a b c", "en", 1.0, (Segment(0, 0.0, 1.0, " a b c"),))
    assert drop_repeats(clean) is clean


def test_chinese_chunks_join_without_spaces():
    parts = [Transcription("你好", "zh", 1.0, ()), Transcription("世界", "zh", 1.0, ())]
    assert merge(parts, duration=2.0, model="m", task="transcribe").text == "你好世界"


def test_result_json_round_trip():
    segment = Segment(0, 0.0, 1.0, " x", tokens=(1, 2), words=(Word(" x", 0.0, 1.0, 0.9),))
    result = Transcription("x", "en", 2.0, (segment,), "translate", "whisper")
    assert result_from_dict(result_to_dict(result)) == result


# ---------------------------------------------------------------------------------------------- store

def make_job(store: SQLiteStore, seconds: float = 20.0, chunk_seconds: float = 10.0, **kw):
    samples = flat(seconds)
    return store.create(samples, model=kw.get("model", "whisper"), options=kw.get("options", Options(language="en")),
                        conversion="s2twp", words=kw.get("words", False), chunks=split_chunks(samples, chunk_seconds))


def test_store_persists_across_reopen(tmp_path):
    store = SQLiteStore(tmp_path)
    job = make_job(store, options=Options(language="en", prompt="names", word_timestamps=True), words=True)
    assert job.status == "queued" and len(job.id) == 32 and job.chunk_count == 2
    files = store.audio_files(job.id)  # one FLAC per chunk, named by the job's id
    assert [f.name for f in files] == [f"{job.id}.0.flac", f"{job.id}.1.flac"]
    assert [audio.decode(f.read_bytes()).size for f in files] == [e - s for s, e in job.chunks]
    claimed = store.claim_next()
    assert claimed.id == job.id and claimed.status == "running" and claimed.attempts == 1
    chunk = Transcription("a", "en", 10.0, (Segment(0, 1.0, 2.0, " a"),))
    store.save_chunk(claimed, 0, chunk, progress_s=10.0)
    assert [f.name for f in store.audio_files(job.id)] == [f"{job.id}.1.flac"]  # a committed chunk's audio goes
    store.close()

    reopened = SQLiteStore(tmp_path)
    again = reopened.get(job.id)
    assert again.status == "running" and again.chunks_done == 1 and again.progress_s == 10.0
    assert again.options == Options(language="en", prompt="names", word_timestamps=True) and again.words
    assert again.chunks == job.chunks
    assert reopened.chunk_results(job.id) == [chunk]
    assert reopened.chunk_attempts(job.id) == [1]
    assert sqlite3.connect(tmp_path / "jobs.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened.close()


def test_claim_oldest_first_and_recent_newest_first(tmp_path):
    store = SQLiteStore(tmp_path)
    ids = [make_job(store, seconds=2).id for _ in range(3)]
    assert [j.id for j in store.recent(10)] == ids[::-1]
    assert [j.id for j in store.recent(2)] == ids[:0:-1]
    assert [store.claim_next().id for _ in range(3)] == ids
    assert store.claim_next() is None


def test_finish_cancel_and_delete_remove_the_audio(tmp_path):
    store = SQLiteStore(tmp_path)
    done, cancelled, deleted = (make_job(store, seconds=2) for _ in range(3))
    store.succeed(store.claim_next(), Transcription("ok", "en", 2.0))
    assert store.get(done.id).status == "succeeded" and store.result(done.id).text == "ok"
    assert store.get(done.id).finished_at is not None
    assert store.cancel(cancelled.id).status == "cancelled"
    assert store.delete(deleted.id) and store.get(deleted.id) is None and not store.delete(deleted.id)
    assert list(store.audio_dir.iterdir()) == []
    with pytest.raises(jobs_module.JobGone):  # a cancelled job takes no more chunks
        store.save_chunk(cancelled, 0, Transcription("x", "en", 1.0), progress_s=1.0)


def test_recovery_requeues_then_fails_after_max_attempts(tmp_path):
    store = SQLiteStore(tmp_path)
    job = make_job(store)
    for interruption in (1, 2):
        store.claim_next()  # a runner took it ... and the process died
        requeued, failed = store.recover(max_attempts=3)
        assert requeued == [job.id] and failed == []
        again = store.get(job.id)
        assert again.status == "queued" and again.interruptions == interruption
    store.claim_next()
    requeued, failed = store.recover(max_attempts=3)
    assert requeued == [] and failed == [job.id]
    dead = store.get(job.id)
    assert dead.status == "failed" and dead.error["code"] == "job_interrupted"
    assert "interrupted 3 times" in dead.error["message"]
    assert store.audio_files(dead.id) == []


def test_recovery_removes_old_orphan_files_only(tmp_path):
    store = SQLiteStore(tmp_path)
    job = make_job(store, seconds=2)
    old, young = store.audio_dir / "old.npy", store.audio_dir / "young.npy.tmp"
    for path in (old, young):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    store.recover(max_attempts=3)
    assert sorted(p.name for p in store.audio_dir.iterdir()) == sorted([f"{job.id}.0.flac", "young.npy.tmp"])


# --------------------------------------------------------------------------------------------- runner

async def wait_status(store: SQLiteStore, job_id: str, statuses: tuple[str, ...], timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = await asyncio.to_thread(store.get, job_id)
        if job.status in statuses:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job stayed {job.status}")


def runner_for(store: SQLiteStore, fake: FakeTriton, **kw) -> JobRunner:
    return JobRunner(store, fake, poll_s=0.02, backoff_s=(0.01, 0.02), **kw)


async def run_to_end(store, fake, job_id: str):
    """A runner over ``store`` and ``fake`` until the job has ended; the job as it ended."""
    runner = runner_for(store, fake)
    runner.start()
    try:
        return await wait_status(store, job_id, ("succeeded", "failed"))
    finally:
        await runner.stop()


async def test_runner_transcribes_every_chunk_and_merges(tmp_path):
    store, fake = SQLiteStore(tmp_path), FakeTriton()
    job = make_job(store, seconds=30, options=Options(language="en", word_timestamps=True), words=True)
    done = await run_to_end(store, fake, job.id)
    assert done.status == "succeeded", done.error
    assert done.chunks_done == done.chunk_count == 3 and done.progress_s == pytest.approx(30.0)
    assert fake.calls == [e - s for s, e in job.chunks]
    result = store.result(job.id)
    assert result.text == "chunk 1 chunk 2 chunk 3"
    assert result.duration == pytest.approx(30.0)
    starts = [s / RATE for s, _ in job.chunks]
    ends = [e / RATE for _, e in job.chunks]
    assert [s.id for s in result.segments] == [0, 1, 2]
    assert [s.start for s in result.segments] == pytest.approx([a + 0.5 for a in starts])
    assert [s.end for s in result.segments] == pytest.approx(ends)  # past the chunk end: clamped to it
    assert [w.word for w in result.words] == [" chunk", " 1", " chunk", " 2", " chunk", " 3"]
    assert store.audio_files(job.id) == []
    store.close()


async def test_runner_resumes_after_a_crash_without_redoing_chunks(tmp_path):
    store, fake = SQLiteStore(tmp_path), FakeTriton()
    job = make_job(store, seconds=30)
    claimed = store.claim_next()
    store.save_chunk(claimed, 0, shift(Transcription("before", "en", 10.0, (Segment(0, 0.0, 2.0, " before"),)),
                                       0.0, job.chunks[0][1] / RATE), progress_s=job.chunks[0][1] / RATE)
    store.close()  # ... the process died here, the job still "running"

    store = SQLiteStore(tmp_path)
    runner = runner_for(store, fake, max_attempts=3)
    runner.start()
    try:
        done = await wait_status(store, job.id, ("succeeded", "failed"))
    finally:
        await runner.stop()
    assert done.status == "succeeded", done.error
    assert (done.attempts, done.interruptions, done.resumed_at_chunk) == (2, 1, 1)
    assert fake.calls == [e - s for s, e in job.chunks[1:]]  # chunk 0 was not sent again
    assert store.chunk_attempts(job.id) == [1, 2, 2]
    assert store.result(job.id).text == "before chunk 1 chunk 2"
    store.close()


async def test_runner_retries_while_triton_is_unavailable(tmp_path):
    store, fake = SQLiteStore(tmp_path), FakeTriton()
    fake.failures = [ServiceUnavailable("The inference server is unavailable"), TooManyRequests("busy")]
    job = make_job(store, seconds=5)
    done = await run_to_end(store, fake, job.id)
    assert done.status == "succeeded" and store.result(job.id).text == "chunk 1"
    store.close()


async def test_runner_fails_a_job_with_the_error_message(tmp_path):
    store, fake = SQLiteStore(tmp_path), FakeTriton()
    fake.failures = [InvalidRequest("Unsupported language 'xx'", param="language")]
    job = make_job(store, seconds=5)
    done = await run_to_end(store, fake, job.id)
    assert done.status == "failed"
    assert done.error == {"message": "Unsupported language 'xx'", "type": "invalid_request_error",
                          "code": "invalid_request"}
    assert store.audio_files(job.id) == []
    store.close()


async def test_clean_stop_requeues_without_counting_an_interruption(tmp_path):
    store, fake = SQLiteStore(tmp_path), FakeTriton()
    fake.gate = asyncio.Event()  # the first chunk never answers
    job = make_job(store, seconds=25)
    runner = runner_for(store, fake)
    runner.start()
    await wait_status(store, job.id, ("running",))
    await runner.stop()
    stopped = store.get(job.id)
    assert (stopped.status, stopped.interruptions, stopped.chunks_done) == ("queued", 0, 0)
    store.close()


async def test_a_second_runner_on_the_same_directory_waits_for_the_lock(tmp_path):
    first, second = SQLiteStore(tmp_path), SQLiteStore(tmp_path)
    assert first.try_runner_lock() and not second.try_runner_lock()
    first.release_runner_lock()
    assert second.try_runner_lock()
    first.close(), second.close()


# ---------------------------------------------------------------------------------------------- routes

@pytest.fixture
def api(tmp_path):
    fake = FakeTriton()
    app = create_app(Settings(_env_file=None, jobs_dir=tmp_path / "jobs", job_chunk_seconds=10, max_upload_mb=0.5,
                              max_job_upload_mb=4), triton=fake)
    with TestClient(app) as client:
        yield client, fake


def poll(client: TestClient, job_id: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["status"] not in ("queued", "running"):
            return body
        time.sleep(0.05)
    raise AssertionError(body)


def test_submit_poll_and_fetch_every_format(api):
    client, fake = api
    upload = wav_bytes(flat(20))  # 640 KB: over the sync limit of 0.5 MiB, under the jobs limit
    r = client.post("/v1/jobs", files={"file": ("long.wav", upload, "audio/wav")},
                    data={"model": "whisper-tiny-en", "language": "en", "timestamp_granularities[]": "word"})
    assert r.status_code == 202, r.text
    created = r.json()
    assert r.headers["location"] == f"/v1/jobs/{created['id']}"
    assert created["object"] == "transcription.job" and created["status"] in ("queued", "running")
    assert created["model"] == "whisper-tiny-en" and created["progress"]["chunk_count"] == 2
    done = poll(client, created["id"])
    assert done["status"] == "succeeded" and done["progress"]["chunks_done"] == 2
    assert done["progress"]["seconds_done"] == pytest.approx(20.0) and done["error"] is None

    base = f"/v1/jobs/{created['id']}/result"
    assert client.get(base).json() == {"text": "chunk 1 chunk 2", "usage": {"type": "duration", "seconds": 20}}
    assert client.get(base, params={"response_format": "text"}).text == "chunk 1 chunk 2\n"
    srt = client.get(base, params={"response_format": "srt"})
    assert srt.headers["content-type"].startswith("application/x-subrip")
    assert srt.text.startswith("1\n00:00:00,500 --> 00:00:") and "\n\n2\n00:00:" in srt.text
    vtt = client.get(base, params={"response_format": "vtt"}).text
    assert vtt.startswith("WEBVTT\n\n00:00:00.500 --> ") and vtt.count(" --> ") == 2
    verbose = client.get(base, params={"response_format": "verbose_json"}).json()
    assert verbose["language"] == "english" and verbose["duration"] == 20.0
    assert [s["id"] for s in verbose["segments"]] == [0, 1]
    assert [w["word"] for w in verbose["words"]] == [" chunk", " 1", " chunk", " 2"]
    assert client.get(base, params={"response_format": "docx"}).status_code == 400

    listed = client.get("/v1/jobs", params={"limit": 5}).json()
    assert listed["object"] == "list" and [j["id"] for j in listed["data"]] == [created["id"]]
    JobObject.model_validate(created), JobObject.model_validate(done), JobList.model_validate(listed)
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"JobObject", "JobList", "JobDeleted"} <= set(schemas)  # /docs shows the shapes
    assert client.delete(f"/v1/jobs/{created['id']}").json() == {
        "id": created["id"], "object": "transcription.job.deleted", "deleted": True}
    assert client.get(f"/v1/jobs/{created['id']}").status_code == 404


def test_sync_route_keeps_its_smaller_upload_limit(api):
    client, _ = api
    r = client.post("/v1/audio/transcriptions", files={"file": ("long.wav", wav_bytes(noise(25)), "audio/wav")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = client.post("/v1/jobs", files={"file": ("huge.wav", wav_bytes(noise(140)), "audio/wav")})
    assert r.status_code == 413  # 4.5 MB, over the jobs limit of 4 MiB


def test_result_before_the_end_is_409_and_cancel_stops_the_job(api):
    client, fake = api
    fake.gate = asyncio.Event()  # never set: the first chunk hangs
    job = client.post("/v1/jobs", files={"file": ("a.wav", wav_bytes(noise(3)), "audio/wav")}).json()
    r = client.get(f"/v1/jobs/{job['id']}/result")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "job_not_finished" and r.json()["error"]["type"] == "invalid_request_error"
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    r = client.get(f"/v1/jobs/{job['id']}/result")
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_cancelled"


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job", "..%2F..%2Fjobs.sqlite3", "A" * 32])
def test_unknown_or_malformed_id_is_404(api, job_id):
    client, _ = api
    for method, path in (("GET", ""), ("GET", "/result"), ("DELETE", ""), ("POST", "/cancel")):
        r = client.request(method, f"/v1/jobs/{job_id}{path}")
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] in ("job_not_found", "not_found"), r.json()


@pytest.mark.parametrize(("content", "status", "code"), [
    (b"", 400, "empty_file"),
    (b"this is not audio at all" * 10, 415, "unsupported_media"),
])
def test_bad_upload_is_refused_at_submit(api, content, status, code):
    client, fake = api
    r = client.post("/v1/jobs", files={"file": ("bad.wav", content, "audio/wav")})
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert client.get("/v1/jobs").json()["data"] == [] and fake.calls == []


def test_unknown_model_and_task_are_refused(api):
    client, _ = api
    upload = {"file": ("a.wav", wav_bytes(noise(1)), "audio/wav")}
    r = client.post("/v1/jobs", files=upload, data={"model": "nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = client.post("/v1/jobs", files=upload, data={"task": "summarize"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "task"


def test_jobs_need_the_token_when_one_is_set(tmp_path):
    app = create_app(Settings(_env_file=None, jobs_dir=tmp_path, api_key="k"), triton=FakeTriton())
    with TestClient(app) as client:
        assert client.get("/v1/jobs").status_code == 401
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer k"}).status_code == 200


def test_unusable_jobs_dir_disables_jobs_but_not_the_gateway(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    app = create_app(Settings(_env_file=None, jobs_dir=blocker / "jobs"), triton=FakeTriton())
    with TestClient(app) as client:
        r = client.get("/v1/jobs")
        assert r.status_code == 503 and r.json()["error"]["code"] == "jobs_unavailable"
        assert client.get("/v1/models").status_code == 200


def test_default_jobs_dir_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GATEWAY_JOBS_DIR", raising=False)  # tests/conftest.py points it at a temporary directory
    assert Settings(_env_file=None).jobs_dir == Path(tmp_path) / ".cache/whisper-triton/jobs"


# ---------------------------------------------------------------------- limits, workers, webhooks (API)

async def test_a_short_job_is_not_stuck_behind_long_ones(tmp_path):
    """Issue 11 item 6: two long jobs hold the workers' attention; a short one submitted after them still
    finishes first (one of two workers takes the job with the least audio left)."""

    class SlowLong(FakeTriton):
        async def transcribe(self, model, audio, options):
            if audio.size > 5 * RATE:
                await asyncio.Event().wait()  # long chunks never finish in this test
            return await super().transcribe(model, audio, options)

    store, fake = SQLiteStore(tmp_path), SlowLong()
    long_jobs = [make_job(store, seconds=60) for _ in range(2)]
    short = make_job(store, seconds=3)
    runner = runner_for(store, fake, workers=2)
    runner.start()
    try:
        done = await wait_status(store, short.id, ("succeeded", "failed"))
        assert done.status == "succeeded"
        assert store.get(long_jobs[0].id).status == "running"  # the oldest is being worked on meanwhile
        assert all(store.get(j.id).chunks_done == 0 for j in long_jobs)
    finally:
        await runner.stop()
    store.close()


SECRET = "whsec_" + __import__("base64").b64encode(b"k" * 32).decode()


def test_callback_url_needs_webhooks_on_and_a_public_http_url(tmp_path):
    upload = {"file": ("a.wav", wav_bytes(noise(1)), "audio/wav")}
    off = create_app(Settings(_env_file=None, jobs_dir=tmp_path / "off"), triton=FakeTriton())
    with TestClient(off) as client:
        r = client.post("/v1/jobs", files=upload, data={"callback_url": "https://example.com/hook"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "webhooks_disabled"
    on = create_app(Settings(_env_file=None, jobs_dir=tmp_path / "on", webhook_secret=SECRET), triton=FakeTriton())
    with TestClient(on) as client:
        for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/", "ftp://example.com/"):
            r = client.post("/v1/jobs", files=upload, data={"callback_url": url})
            assert r.status_code == 400, r.text
            assert r.json()["error"] == {"message": r.json()["error"]["message"], "type": "invalid_request_error",
                                         "param": "callback_url", "code": "invalid_callback_url"}
        for metadata in ("[1, 2]", "not json", "{" + '"k": "' + "x" * 5000 + '"}'):
            r = client.post("/v1/jobs", files=upload, data={"callback_url": "https://8.8.8.8/h",
                                                            "callback_metadata": metadata})
            assert r.status_code == 400 and r.json()["error"]["param"] == "callback_metadata", r.text
        assert client.get("/v1/jobs").json()["data"] == []  # nothing refused was kept
        r = client.post("/v1/jobs", files=upload, data={"callback_url": "https://8.8.8.8/h",
                                                        "callback_metadata": '{"ticket": "A-1"}'})
        assert r.status_code == 202, r.text
        assert r.json()["callback_url"] == "https://8.8.8.8/h" and r.json()["callback_metadata"] == {"ticket": "A-1"}


def test_per_client_queue_limit_and_storage_quota_are_429(tmp_path):
    fake = FakeTriton()
    fake.gate = asyncio.Event()  # nothing finishes
    app = create_app(Settings(_env_file=None, jobs_dir=tmp_path / "jobs", job_max_active_per_client=2,
                              job_storage_quota_mb=0.2), triton=fake)
    with TestClient(app) as client:
        def submit(seconds: float):
            return client.post("/v1/jobs", files={"file": ("a.wav", wav_bytes(noise(seconds, seed=int(seconds))),
                                                           "audio/wav")})
        assert submit(1).status_code == 202 and submit(1.5).status_code == 202
        r = submit(2)
        assert r.status_code == 429 and r.json()["error"]["code"] == "job_quota_exceeded"
        assert r.json()["error"]["type"] == "rate_limit_error" and "unfinished jobs" in r.json()["error"]["message"]
        for job in client.get("/v1/jobs").json()["data"]:
            client.post(f"/v1/jobs/{job['id']}/cancel")
        r = submit(20)  # white noise does not compress: about 0.6 MB of FLAC, over the 0.2 MiB quota
        assert r.status_code == 429 and "The job queue is full" in r.json()["error"]["message"]
        assert submit(2).status_code == 202


# ------------------------------------------------------------------------------------------ diarization

SPEAKER_AT = [(0.0, "A"), (8.0, "B"), (16.0, "A"), (24.0, "B")]  # (from, speaker) in the file; B is louder
CHANGES = [t for t, _ in SPEAKER_AT[1:]]


def two_speakers(seconds: float = 30.0) -> np.ndarray:
    samples = np.empty(int(seconds * RATE), dtype=np.float32)
    for (start, who), end in zip(SPEAKER_AT, CHANGES + [seconds]):
        samples[int(start * RATE):int(end * RATE)] = 0.3 if who == "B" else 0.1
    return samples


def truth_at(t: float) -> str:
    return [who for start, who in SPEAKER_AT if start <= t][-1]


class DiarizingTriton(FakeTriton):
    """Half-second segments ("sN"), and a speaker window per half second whose embedding is the voice the
    audio's level stands for (the chunk's own timeline, as the real speaker model answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.speaker_calls: list[int] = []

    async def transcribe(self, model: str, audio: np.ndarray, options: Options) -> Transcription:
        self.calls.append(audio.size)
        duration = audio.size / RATE
        segments = tuple(Segment(i, t, min(t + 0.5, duration), f" s{i}")
                         for i, t in enumerate(np.arange(0.0, duration, 0.5).tolist()))
        return Transcription(" ".join(s.text.strip() for s in segments), "en", duration, segments, options.task, model)

    async def speaker_windows(self, model: str, audio: np.ndarray) -> SpeakerWindows:
        assert model == "speaker"
        self.speaker_calls.append(audio.size)
        half = RATE // 2
        starts = range(0, audio.size - half + 1, half)
        voices = np.eye(2, 16, dtype=np.float32)
        embeddings = np.stack([voices[int(np.abs(audio[s:s + half]).mean() > 0.2)] for s in starts])
        spans = np.array([[s / RATE, (s + half) / RATE] for s in starts])
        return SpeakerWindows(embeddings, spans, np.zeros(len(spans), dtype=np.int64))

    async def ready_models(self) -> list[str]:
        return ["speaker", "whisper", "whisper-tiny-en"]


def check_speakers(result: Transcription) -> None:
    """Every segment that does not cross a change of speaker has the true speaker (labels agree across chunks)."""
    assert result.speakers == ["A", "B"]
    inside = [s for s in result.segments if not any(s.start < t < s.end for t in CHANGES)]
    assert len(inside) > 40
    assert [s.speaker for s in inside] == [truth_at((s.start + s.end) / 2) for s in inside]


async def test_a_diarized_job_clusters_every_chunks_windows_once(tmp_path):
    store, fake = SQLiteStore(tmp_path), DiarizingTriton()
    samples = two_speakers()
    job = store.create(samples, model="whisper", options=Options(language="en"), conversion="none", words=False,
                       chunks=split_chunks(samples, 10.0), diarize=DiarizeOptions(max_speakers=4))
    assert job.chunk_count == 3 and store.get(job.id).diarize == DiarizeOptions(max_speakers=4)
    done = await run_to_end(store, fake, job.id)
    assert done.status == "succeeded", done.error
    assert fake.speaker_calls == fake.calls == [e - s for s, e in job.chunks]
    windows = store.chunk_windows(job.id)  # stored with each chunk, on the file's timeline
    assert [w.spans[0][0] for w in windows] == pytest.approx([s / RATE for s, _ in job.chunks])
    check_speakers(store.result(job.id))
    store.close()


async def test_a_resumed_diarized_job_keeps_the_windows_of_its_committed_chunks(tmp_path):
    store, fake = SQLiteStore(tmp_path), DiarizingTriton()
    samples = two_speakers()
    job = store.create(samples, model="whisper", options=Options(language="en"), conversion="none", words=False,
                       chunks=split_chunks(samples, 10.0), diarize=DiarizeOptions())
    claimed = store.claim_next()
    first = job.chunks[0]
    piece = samples[first[0]:first[1]]
    result = on_timeline(await fake.transcribe("whisper", piece, claimed.options), first)
    windows = diarization.on_timeline(await fake.speaker_windows("speaker", piece), 0.0)
    store.save_chunk(claimed, 0, result, first[1] / RATE, windows=windows)
    store.close()  # ... the process died here, the job still "running"

    store, fake = SQLiteStore(tmp_path), DiarizingTriton()
    assert store.chunk_windows(job.id)[0].embeddings == pytest.approx(windows.embeddings)
    done = await run_to_end(store, fake, job.id)
    assert done.status == "succeeded" and done.resumed_at_chunk == 1, done.error
    assert fake.speaker_calls == [e - s for s, e in job.chunks[1:]]  # chunk 0's windows came from the store
    check_speakers(store.result(job.id))
    store.close()


def test_diarize_on_the_jobs_route(tmp_path):
    fake = DiarizingTriton()
    app = create_app(Settings(_env_file=None, jobs_dir=tmp_path / "jobs", job_chunk_seconds=10), triton=fake)
    with TestClient(app) as client:
        upload = {"file": ("talk.wav", wav_bytes(two_speakers()), "audio/wav")}
        r = client.post("/v1/jobs", files=upload, data={"diarize": "true", "min_speakers": "2", "max_speakers": "3"})
        assert r.status_code == 202, r.text
        assert poll(client, r.json()["id"])["status"] == "succeeded"
        base = f"/v1/jobs/{r.json()['id']}/result"
        body = client.get(base, params={"response_format": "diarized_json"}).json()
        assert {s["speaker"] for s in body["segments"]} == {"A", "B"} and body["segments"][0]["speaker"] == "A"
        assert "Speaker B: " in client.get(base, params={"response_format": "srt"}).text
        assert "<v Speaker A>" in client.get(base, params={"response_format": "vtt"}).text

        plain = client.post("/v1/jobs", files=upload).json()
        assert poll(client, plain["id"])["status"] == "succeeded"
        r = client.get(f"/v1/jobs/{plain['id']}/result", params={"response_format": "diarized_json"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
        assert "Speaker" not in client.get(f"/v1/jobs/{plain['id']}/result", params={"response_format": "srt"}).text

        for bad in ({"diarize": "true", "min_speakers": "3", "max_speakers": "2"},
                    {"diarize": "true", "task": "translate"}):
            assert client.post("/v1/jobs", files=upload, data=bad).status_code == 400
        fake.ready_models = FakeTriton().ready_models  # the speaker model is not loaded
        assert client.post("/v1/jobs", files=upload, data={"diarize": "true"}).status_code == 503
