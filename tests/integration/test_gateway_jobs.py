"""``/v1/jobs`` on the live stack: real gateway processes (killed with SIGKILL and started again on the
same jobs directory) in front of the session's real tritonserver and real weights."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks import conversations
from benchmarks.der import der
from client.audio import encode_wav
from tests.utils.helpers import audio_of, clip, wer
from tests.integration.test_diarization import DER_BOUND, _truth_at
from tests.utils.gateway import GatewayProcess

pytestmark = pytest.mark.integration

TINY = "whisper-tiny-en"
CHUNK_SECONDS = 20
# About 70 s of speech from the manifest, 0.6 s of silence between clips: four 20 s chunks.
CLIPS = ["en/jfk.flac", "en/1089-134686-0000.wav", "en/121-127105-0000.flac", "en/1320-122617-0001.flac",
         "en/8463-287645-0007.flac"]
GAP_SECONDS = 0.6
MAX_WER = 0.15
SRT_TIME = r"(\d{2,}):(\d{2}):(\d{2}),(\d{3})"
VTT_TIME = r"(\d{2,}):(\d{2}):(\d{2})\.(\d{3})"


@pytest.fixture(scope="module")
def long_clip(shared_audio, tmp_path_factory):
    """``long_clip(gain)`` -> (wav path, reference text, duration): the clips of ``CLIPS`` one after another.

    Each test takes its own gain, so its chunks are new to Triton's response cache (a cached chunk would
    come back at once and leave no time to kill the gateway in the middle of a job).
    """
    gap = np.zeros(int(GAP_SECONDS * 16000), dtype=np.float32)
    samples = np.concatenate([np.concatenate([audio_of(name), gap]) for name in CLIPS])
    reference = " ".join(clip(name)["reference_text"] for name in CLIPS)
    folder = tmp_path_factory.mktemp("jobs-audio")

    def make(gain: float) -> tuple[Path, str, float]:
        path = folder / f"long-{gain:g}.wav"
        path.write_bytes(encode_wav(samples * gain))
        return path, reference, samples.size / 16000

    return make


@pytest.fixture(scope="module")
def jobs_gateway(triton, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    jobs_dir = tmp_path_factory.mktemp("jobs")
    with GatewayProcess(triton.grpc_url, tmp_path_factory.mktemp("jobs-log"), GATEWAY_JOBS_DIR=str(jobs_dir),
                        GATEWAY_JOB_CHUNK_SECONDS=str(CHUNK_SECONDS)) as gateway:
        yield gateway.url, jobs_dir


def submit(url: str, path: Path, **data: str) -> dict:
    with open(path, "rb") as fh:
        r = httpx.post(f"{url}/v1/jobs", files={"file": (path.name, fh, "audio/wav")},
                       data={"model": TINY, "language": "en", **data}, timeout=60)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    return r.json()


def poll(url: str, job_id: str, until: callable, timeout: float = 120.0, interval: float = 0.1) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        if until(job):
            return job
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, f"job did not get there in {timeout:.0f} s: {job}"
        time.sleep(interval)


def finished(job: dict) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


def seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def cue_times(body: str, pattern: str) -> list[tuple[float, float]]:
    times = [(seconds(*m.groups()[:4]), seconds(*m.groups()[4:]))
             for m in re.finditer(f"^{pattern} --> {pattern}$", body, flags=re.MULTILINE)]
    assert times, body
    return times


def check_times(times: list[tuple[float, float]], duration: float) -> None:
    starts = [start for start, _ in times]
    assert starts == sorted(starts), times
    assert all(0 <= start <= end <= duration + 0.01 for start, end in times), (times, duration)


def test_long_file_job_in_every_format(jobs_gateway, long_clip):
    url, _ = jobs_gateway
    path, reference, duration = long_clip(1.0)
    created = submit(url, path, **{"timestamp_granularities[]": "word"})
    assert created["status"] in ("queued", "running")
    assert created["duration"] == pytest.approx(duration, abs=0.01)
    assert created["progress"]["chunk_count"] == 4
    done = poll(url, created["id"], finished)
    assert done["status"] == "succeeded", done
    assert done["progress"]["chunks_done"] == 4
    assert done["progress"]["seconds_done"] == pytest.approx(duration, abs=0.01)
    assert (done["attempts"], done["interruptions"], done["error"]) == (1, 0, None)

    result = f"{url}/v1/jobs/{created['id']}/result"
    body = httpx.get(result, timeout=10).json()
    assert wer(reference, body["text"]) <= MAX_WER, body["text"]
    assert body["usage"] == {"type": "duration", "seconds": int(np.ceil(duration))}

    text = httpx.get(result, params={"response_format": "text"}, timeout=10)
    assert text.headers["content-type"].startswith("text/plain") and text.text == body["text"] + "\n"

    srt = httpx.get(result, params={"response_format": "srt"}, timeout=10).text
    check_times(cue_times(srt, SRT_TIME), duration)
    assert srt.startswith("1\n") and wer(reference, re.sub(rf"\d+\n{SRT_TIME} --> {SRT_TIME}\n", "", srt)) <= MAX_WER

    vtt = httpx.get(result, params={"response_format": "vtt"}, timeout=10).text
    assert vtt.startswith("WEBVTT\n\n")
    check_times(cue_times(vtt, VTT_TIME), duration)

    verbose = httpx.get(result, params={"response_format": "verbose_json"}, timeout=10).json()
    assert verbose["language"] == "english" and verbose["duration"] == pytest.approx(duration, abs=0.01)
    segments = verbose["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    check_times([(s["start"], s["end"]) for s in segments], duration)
    assert segments[-1]["start"] > 3 * CHUNK_SECONDS - 5  # the last chunk's segments are on the file's timeline
    assert wer(reference, " ".join(s["text"] for s in segments)) <= MAX_WER
    words = verbose["words"]
    assert len(words) >= 0.8 * len(reference.split())
    # Word times come from the model per chunk (not always in order at a chunk's ragged end): in range only.
    assert all(0 <= w["start"] <= w["end"] <= duration + 0.01 for w in words), words
    assert words[-1]["start"] > 3 * CHUNK_SECONDS - 5

    listed = httpx.get(f"{url}/v1/jobs", timeout=10).json()
    assert created["id"] in [job["id"] for job in listed["data"]]


def test_bad_uploads_and_unknown_ids(jobs_gateway, tmp_path):
    url, jobs_dir = jobs_gateway
    empty = httpx.post(f"{url}/v1/jobs", files={"file": ("empty.wav", b"", "audio/wav")}, timeout=30)
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_file"
    junk = httpx.post(f"{url}/v1/jobs", files={"file": ("notes.wav", b"not audio " * 100, "audio/wav")}, timeout=30)
    assert junk.status_code == 415 and junk.json()["error"]["code"] == "unsupported_media"
    missing = httpx.get(f"{url}/v1/jobs/{'0' * 32}/result", timeout=10)
    assert missing.status_code == 404
    assert missing.json() == {"error": {"message": f"No job with id '{'0' * 32}'", "type": "invalid_request_error",
                                        "param": "job_id", "code": "job_not_found"}}
    assert httpx.get(f"{url}/v1/jobs/..%2Fjobs.sqlite3", timeout=10).status_code == 404
    assert list((jobs_dir / "audio").iterdir()) == []  # nothing refused was kept


def db_row(jobs_dir: Path, job_id: str) -> tuple[str, list[int]]:
    """(status, attempt of each stored chunk) straight from the database file."""
    with sqlite3.connect(f"file:{jobs_dir / 'jobs.sqlite3'}?mode=ro", uri=True) as db:
        status = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        attempts = [r[0] for r in db.execute("SELECT attempt FROM chunk_results WHERE job_id = ? ORDER BY idx",
                                             (job_id,))]
    return status, attempts


def test_job_resumes_after_kill_9_without_redoing_chunks(triton, long_clip, tmp_path):
    path, reference, duration = long_clip(0.9)
    jobs_dir = tmp_path / "jobs"
    env = {"GATEWAY_JOBS_DIR": str(jobs_dir), "GATEWAY_JOB_CHUNK_SECONDS": str(CHUNK_SECONDS)}
    first = GatewayProcess(triton.grpc_url, tmp_path, **env).wait_ready()
    try:
        job = submit(first.url, path)
        seen = poll(first.url, job["id"], lambda j: j["progress"]["chunks_done"] >= 1 or finished(j), interval=0.02)
        first.kill()
    finally:
        first.stop()
    assert seen["status"] == "running" and seen["progress"]["chunks_done"] < 4, f"finished before the kill: {seen}"
    status, attempts = db_row(jobs_dir, job["id"])
    assert status == "running" and attempts and set(attempts) == {1}  # left running: the gateway died under it
    done_before_kill = len(attempts)

    with GatewayProcess(triton.grpc_url, tmp_path, **env) as second:
        done = poll(second.url, job["id"], finished)
        assert done["status"] == "succeeded", done
        assert (done["attempts"], done["interruptions"]) == (2, 1)
        assert done["resumed_at_chunk"] == done_before_kill
        assert done["progress"]["chunks_done"] == 4
        _, attempts = db_row(jobs_dir, job["id"])
        assert attempts == [1] * done_before_kill + [2] * (4 - done_before_kill)  # earlier chunks not redone
        text = httpx.get(f"{second.url}/v1/jobs/{job['id']}/result", params={"response_format": "text"}).text
        assert wer(reference, text) <= MAX_WER, text
        assert "was interrupted; it resumes" in second.log()


def test_job_interrupted_too_often_is_failed(triton, long_clip, tmp_path):
    path, _, _ = long_clip(0.8)
    jobs_dir = tmp_path / "jobs"
    env = {"GATEWAY_JOBS_DIR": str(jobs_dir), "GATEWAY_JOB_CHUNK_SECONDS": str(CHUNK_SECONDS),
           "GATEWAY_JOB_MAX_ATTEMPTS": "1"}
    first = GatewayProcess(triton.grpc_url, tmp_path, **env).wait_ready()
    try:
        job = submit(first.url, path)
        poll(first.url, job["id"], lambda j: j["status"] == "running", interval=0.02)
        first.kill()
    finally:
        first.stop()

    with GatewayProcess(triton.grpc_url, tmp_path, **env) as second:
        failed = httpx.get(f"{second.url}/v1/jobs/{job['id']}", timeout=10).json()
        for _ in range(50):  # recovery runs just after startup
            if failed["status"] != "running":
                break
            time.sleep(0.1)
            failed = httpx.get(f"{second.url}/v1/jobs/{job['id']}", timeout=10).json()
        assert failed["status"] == "failed", failed
        assert failed["error"]["code"] == "job_interrupted" and "interrupted 1 time (" in failed["error"]["message"]
        r = httpx.get(f"{second.url}/v1/jobs/{job['id']}/result", timeout=10)
        assert r.status_code == 409 and r.json()["error"]["code"] == "job_failed"
        assert "interrupted" in r.json()["error"]["message"]
        assert list((jobs_dir / "audio").iterdir()) == []


# Two LibriSpeech speakers, whole clips 0.6 s apart (A B A B A, 40 s): both speak in every 15 s chunk.
TWO_SPEAKERS = [("ls1089", "en/1089-134686-0000.wav"), ("ls1221", "en/1221-135766-0000.flac"),
                ("ls1089", "en/1089-134686-0002.wav"), ("ls1221", "en/1221-135766-0002.flac"),
                ("ls1089", "en/1089-134686-0001.wav")]


def test_diarized_job_labels_speakers_alike_in_every_chunk(triton, shared_audio, tmp_path):
    conversation = conversations.from_clips(TWO_SPEAKERS, audio_dir=shared_audio)
    path = tmp_path / "two.wav"
    path.write_bytes(encode_wav(conversation.audio))
    env = {"GATEWAY_JOBS_DIR": str(tmp_path / "jobs"), "GATEWAY_JOB_CHUNK_SECONDS": "15"}
    with GatewayProcess(triton.grpc_url, tmp_path, **env) as gateway:
        created = submit(gateway.url, path, diarize="true")
        assert created["progress"]["chunk_count"] == 3
        done = poll(gateway.url, created["id"], finished)
        assert done["status"] == "succeeded", done
        result = f"{gateway.url}/v1/jobs/{created['id']}/result"
        body = httpx.get(result, params={"response_format": "diarized_json"}, timeout=10).json()
        srt = httpx.get(result, params={"response_format": "srt"}, timeout=10).text
    segments = body["segments"]
    assert sorted({s["speaker"] for s in segments}) == ["A", "B"]
    mapping = {}  # each label stands for one true speaker, in the order they first speak
    for s in segments:
        mapping.setdefault(s["speaker"], _truth_at(conversation, (s["start"] + s["end"]) / 2))
    assert mapping == {"A": "ls1089", "B": "ls1221"}
    scored = der(conversation.reference, [(s["start"], s["end"], s["speaker"]) for s in segments])
    assert scored.der <= DER_BOUND and scored.mapping == mapping, scored
    assert segments[-1]["speaker"] == "A" and segments[-1]["start"] > 30  # the last chunk agrees with the first
    assert "Speaker A: " in srt and "Speaker B: " in srt
