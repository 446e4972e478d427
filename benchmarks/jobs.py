"""Durable jobs on PostgreSQL: jobs per minute with 1 and 3 gateway replicas on one Triton, the time a
killed replica's job takes to be resumed, and webhook delivery.

    .venv/bin/python -m benchmarks.jobs [--jobs 24] [--model whisper] [--lease 10]

Starts tritonserver (the model given), a throwaway PostgreSQL (tests/postgres.py) and N gateways; submits
the same jobs of real speech (each a few English clips of 9-16 s one after another) for each N,
round-robin over the replicas, each with a callback to a local receiver; then, with 3 replicas, kills
the one running the first job once it has committed a chunk and times the takeover. Writes
benchmarks/results/<date>-jobs/jobs.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date, datetime
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import ROOT, free_port, machine_description, start_gateway, wait_http
# The test suite's throwaway PostgreSQL and webhook receiver serve the benchmark as they are.
from client.audio import encode_wav
from tests.utils.helpers import audio_of
from tests.utils.postgres import PostgresServer, find_bin
from tests.utils.webhook_receiver import Receiver

CLIPS = ["en/jfk.flac", "en/1089-134686-0000.wav", "en/121-127105-0000.flac", "en/1320-122617-0001.flac",
         "en/2300-131720-0008.flac", "en/8555-284447-0000.flac", "en/7021-79730-0001.flac",
         "en/237-126133-0000.flac", "en/1188-133604-0000.flac", "en/1221-135766-0000.flac"]
SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def job_files(folder: Path, count: int, clips_per_job: int) -> list[Path]:
    gap = np.zeros(8000, dtype=np.float32)
    files = []
    for i in range(count):
        names = [CLIPS[(i + k) % len(CLIPS)] for k in range(clips_per_job)]
        path = folder / f"job-{i}.wav"
        path.write_bytes(encode_wav(np.concatenate([np.concatenate([audio_of(n), gap]) for n in names])))
        files.append(path)
    return files


def submit(url: str, path: Path, model: str, callback: str) -> dict:
    with open(path, "rb") as fh:
        r = httpx.post(f"{url}/v1/jobs", files={"file": (path.name, fh, "audio/wav")},
                       data={"model": model, "language": "en", "callback_url": callback}, timeout=120)
    r.raise_for_status()
    return r.json()


def wait_done(url: str, ids: list[str], timeout: float = 1800) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        states = {i: httpx.get(f"{url}/v1/jobs/{i}", timeout=30).json() for i in ids}
        if all(s["status"] not in ("queued", "running") for s in states.values()):
            return states
        if time.monotonic() > deadline:
            raise SystemExit(f"jobs not done in {timeout} s")
        time.sleep(0.5)


def run(triton, pg: PostgresServer, replicas: int, workers: int, files: list[Path], args, logs: Path,
        kill: bool) -> dict:
    database = pg.new_database()
    env = {"GATEWAY_JOBS_DATABASE_URL": database, "GATEWAY_JOB_CHUNK_SECONDS": str(args.chunk),
           "GATEWAY_JOB_WORKERS": str(workers),
           "GATEWAY_JOB_LEASE_S": str(args.lease), "GATEWAY_WEBHOOK_SECRET": SECRET,
           "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "true", "GATEWAY_JOB_MAX_ACTIVE_PER_CLIENT": "1000"}
    gateways = []
    with Receiver() as receiver:
        try:
            for n in range(replicas):
                folder = logs / f"r{replicas}x{workers}-{n}-{time.time():.0f}"
                folder.mkdir(parents=True, exist_ok=True)
                gateways.append(start_gateway(triton, folder, **env))
            for child, url in gateways:
                if not wait_http(f"{url}/health", 120, child.alive):
                    raise SystemExit(f"gateway {url} did not start")
            start = time.monotonic()
            jobs = [submit(gateways[i % replicas][1], f, args.model, f"{receiver.url}/hook/{i}")
                    for i, f in enumerate(files)]
            submitted = time.monotonic() - start
            url = gateways[-1][1]
            takeover = None
            if kill:
                takeover = kill_one(gateways, jobs[0]["id"], database)
                url = next(u for c, u in gateways if c.alive())
            states = wait_done(url, [j["id"] for j in jobs])
            wall = time.monotonic() - start
            receiver.wait_for(lambda r: len({x.path for x in r}) >= len(jobs), 120)
        finally:
            for child, _ in gateways:
                child.stop(10)
        latencies = []
        for r in receiver.received:
            ended = datetime.fromisoformat(json.loads(r.body)["timestamp"]).timestamp()
            latencies.append(r.at - ended)
    audio_s = sum(s["duration"] for s in states.values())
    ok = sum(s["status"] == "succeeded" for s in states.values())
    return {
        "replicas": replicas, "workers_per_replica": workers, "jobs": len(jobs), "succeeded": ok, "audio_seconds": round(audio_s, 1),
        "chunks": sum(s["progress"]["chunk_count"] for s in states.values()),
        "submit_seconds": round(submitted, 1), "wall_seconds": round(wall, 1),
        "jobs_per_minute": round(60 * len(jobs) / wall, 2), "audio_rtfx": round(audio_s / wall, 2),
        "webhooks": {"posts": len(receiver.received), "jobs_notified": len({r.path for r in receiver.received}),
                     "latency_median_s": round(statistics.median(latencies), 3),
                     "latency_max_s": round(max(latencies), 3)},
        "takeover": takeover,
    }


def kill_one(gateways, job_id: str, database: str) -> dict:
    """SIGKILL the replica running ``job_id`` once it has committed a chunk; time the takeover."""
    import psycopg

    url = gateways[0][1]
    while httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()["progress"]["chunks_done"] < 1:
        time.sleep(0.05)
    with psycopg.connect(database) as conn:
        runner = conn.execute("SELECT runner FROM jobs WHERE id = %s", (job_id,)).fetchone()[0]
    child = next(c for c, _ in gateways if runner.endswith(f":{c.process.pid}"))
    child.process.kill()
    killed = time.monotonic()
    alive = next(u for c, u in gateways if c is not child)
    requeued = None
    while True:
        job = httpx.get(f"{alive}/v1/jobs/{job_id}", timeout=30).json()
        if requeued is None and job["interruptions"] >= 1:
            requeued = time.monotonic() - killed
        if job["attempts"] >= 2:
            return {"requeued_after_s": round(requeued, 2), "resumed_after_s": round(time.monotonic() - killed, 2),
                    "resumed_at_chunk": job["resumed_at_chunk"]}
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--clips-per-job", type=int, default=3)
    parser.add_argument("--model", default="whisper")
    parser.add_argument("--chunk", type=float, default=10.0)
    parser.add_argument("--lease", type=float, default=10.0)
    args = parser.parse_args()

    from launcher.triton import TritonServer

    out = ROOT / "benchmarks" / "results" / f"{date.today()}-jobs"
    logs = out / "raw"  # gateway and Triton logs: not committed
    logs.mkdir(parents=True, exist_ok=True)
    files = job_files(out, args.jobs, args.clips_per_job)
    bin_dir = find_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
    pg = PostgresServer(bin_dir).start()
    triton = TritonServer(ROOT / "model_repository", free_port(), free_port(), free_port(), models=[args.model],
                          log_path=logs / "tritonserver.log")
    try:
        triton.start()
        triton.wait_ready(900)
        # Alternating, so the machine's drift (other load, warm-up) falls on both; 1 x 6 has the
        # concurrency of 3 x 2 in one process.
        plan = [(1, 2), (3, 2), (1, 6), (1, 2), (3, 2)]
        results = [run(triton, pg, n, w, files, args, logs, kill=False) for n, w in plan]
        results.append(run(triton, pg, 3, 2, files, args, logs, kill=True))
    finally:
        triton.stop(30)
        pg.stop()
    report = {"date": str(date.today()), "machine": machine_description(), "model": args.model,
              "chunk_seconds": args.chunk, "lease_s": args.lease, "runs": results}
    (out / "jobs.json").write_text(json.dumps(report, indent=2))
    for f in files:
        f.unlink()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
