"""``make soak``: Triton + gateway under a steady load for N minutes, with the memory of every process.

    python -m benchmarks.soak                       # 10 minutes, concurrency 4 (make soak)
    python -m benchmarks.soak --minutes 1           # a quick check of the script
    make soak SOAK_ARGS="--minutes 30 --concurrency 8"

Starts tritonserver (``model_repository/whisper`` copied with the response cache OFF, so repeated clips
are really transcribed) and one gateway on free ports, then keeps ``--concurrency`` clients busy with
short real clips (English and Mandarin, each checked against its own reference) and, every
``--bad-every`` requests, a bad one (empty file, text file, unknown language: each must get its 4xx).
Every ``--sample-s`` seconds it records the resident memory (VmRSS, from /proc) of the gateway, of
tritonserver and of each ``triton_python_backend_stub`` (one per model instance).

Writes ``benchmarks/results/<date>-<machine>-soak/``: ``rss.csv``, ``rss.png`` (MB against minutes, one
line per process), ``requests.csv``, ``report.md`` (requests, errors, latency, RSS start/end/max and the
slope over the second half of the run per process, with a flat / not-flat verdict) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .common import (Clip, load_clips, machine_description, matches_own_clip, results_dir, running_stack, short_set,
                     stack_arguments)

STUB = "triton_python_backend_stub"


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------- memory
def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def stub_processes(triton_pid: int) -> dict[str, int]:
    """Label (model instance, e.g. ``whisper_0_1``) -> pid of each live backend stub of tritonserver."""
    from whisper_triton.server import child_pids  # every thread's children: any may have started a stub

    stubs = {}
    for pid in child_pids(triton_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].decode(errors="replace").endswith(STUB):
            # argv: stub model.py shm_region shm_size shm_growth parent_pid backend_dir ipc_handle instance kind
            name = argv[8].decode(errors="replace") if len(argv) > 8 else f"stub-{pid}"
            stubs[f"stub {name}"] = pid
    return stubs


class Sampler(threading.Thread):
    """Samples the RSS of the gateway, tritonserver and its stubs every ``interval`` seconds."""

    def __init__(self, processes: dict[str, int], triton_pid: int, interval: float, t0: float):
        super().__init__(daemon=True)
        self.processes, self.triton_pid, self.interval, self.t0 = processes, triton_pid, interval, t0
        self.rows: list[dict] = []
        self.stop = threading.Event()

    def sample(self) -> None:
        t = time.monotonic() - self.t0
        for label, pid in {**self.processes, **stub_processes(self.triton_pid)}.items():
            mb = rss_mb(pid)
            if mb is not None:
                self.rows.append({"t_s": round(t, 2), "minutes": round(t / 60, 4), "process": label, "pid": pid,
                                  "rss_mb": round(mb, 2)})

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)
        self.sample()


def theil_sen(t: np.ndarray, y: np.ndarray) -> float | None:
    """Median of the pairwise slopes: a trend that one allocator spike or release does not swing."""
    i, j = np.triu_indices(len(t), k=1)
    dt_ = t[j] - t[i]
    keep = dt_ > 0
    return float(np.median((y[j] - y[i])[keep] / dt_[keep])) if keep.any() else None


def rss_stats(rows: list[dict], flat_mb_per_min: float) -> dict[str, dict]:
    """Per process: start/end/max RSS and the slope (MB/min) over the second half of the run.

    The verdict uses the Theil-Sen slope of the second half: RSS of the stubs moves by tens of MB as
    the allocator takes and returns memory, which swings a least-squares fit over a few minutes; a
    leak moves the median of pairwise slopes, a spike does not. The least-squares slopes are reported too.
    """
    out = {}
    for label in sorted({r["process"] for r in rows}):
        series = [r for r in rows if r["process"] == label]
        t = np.array([r["minutes"] for r in series])
        mb = np.array([r["rss_mb"] for r in series])
        half = t >= (t[0] + t[-1]) / 2
        enough = half.sum() >= 3 and np.ptp(t[half]) > 0
        robust = theil_sen(t[half], mb[half]) if enough else None
        slope = float(np.polyfit(t[half], mb[half], 1)[0]) if enough else None
        slope_all = float(np.polyfit(t, mb, 1)[0]) if len(t) >= 3 and np.ptp(t) > 0 else None
        out[label] = {
            "pids": sorted({r["pid"] for r in series}),
            "samples": len(series),
            "start_mb": round(float(mb[0]), 1),
            "end_mb": round(float(mb[-1]), 1),
            "max_mb": round(float(mb.max()), 1),
            "theil_sen_second_half_mb_per_min": None if robust is None else round(robust, 3),
            "slope_second_half_mb_per_min": None if slope is None else round(slope, 3),
            "slope_whole_run_mb_per_min": None if slope_all is None else round(slope_all, 3),
            "flat": None if robust is None else abs(robust) < flat_mb_per_min,
        }
    return out


def plot_rss(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for label in sorted({r["process"] for r in rows}):
        series = [r for r in rows if r["process"] == label]
        ax.plot([r["minutes"] for r in series], [r["rss_mb"] for r in series], label=label, linewidth=1.4)
    ax.set_xlabel("minutes since the load started")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- load
@dataclass
class Record:
    t_s: float
    kind: str  # "good" or the bad kind
    file: str
    status: int
    latency_s: float
    ok: bool
    detail: str = ""


BAD_KINDS = {  # kind -> (multipart file, extra form fields, expected status)
    "empty_file": (("empty.wav", b"", "audio/wav"), {}, 400),
    "text_file": (("notes.mp3", b"Just some text renamed to .mp3\n" * 40, "audio/mpeg"), {}, 415),
    "bad_language": (None, {"language": "xx"}, 400),
}


async def drive(url: str, clips: list[Clip], payloads: dict[str, bytes], *, seconds: float, concurrency: int,
                bad_every: int, t0: float, timeout_s: float) -> list[Record]:
    import httpx

    records: list[Record] = []
    counter = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:

        async def worker() -> None:
            nonlocal counter
            while time.monotonic() < deadline:
                n = counter
                counter += 1
                if bad_every and n % bad_every == bad_every - 1:
                    kind = list(BAD_KINDS)[(n // bad_every) % len(BAD_KINDS)]
                    file, extra, expected = BAD_KINDS[kind]
                    clip = clips[0]
                    files = {"file": file or (clip.path.name, payloads[clip.file], "application/octet-stream")}
                    data = {"model": "whisper-1", **extra}
                else:
                    kind, expected = "good", 200
                    clip = clips[n % len(clips)]
                    files = {"file": (clip.path.name, payloads[clip.file], "application/octet-stream")}
                    data = {"model": "whisper-1", "language": clip.language, "response_format": "json"}
                started = time.monotonic()
                try:
                    response = await client.post("/v1/audio/transcriptions", files=files, data=data)
                    status, body = response.status_code, response.text
                except httpx.HTTPError as exc:
                    status, body = -1, f"{type(exc).__name__}: {exc}"
                latency = time.monotonic() - started
                ok, detail = status == expected, ""
                if not ok:
                    detail = f"HTTP {status} (want {expected}): {body[:200]}"
                elif kind == "good":
                    ok, detail = matches_own_clip(clip, json.loads(body)["text"], clips)
                elif '"error"' not in body:
                    ok, detail = False, f"no OpenAI error body: {body[:200]}"
                records.append(Record(round(started - t0, 3), kind, clip.file if kind == "good" else kind, status,
                                      round(latency, 4), ok, detail))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


# ---------------------------------------------------------------------------- report
def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def summarise(records: list[Record], rss: dict, args, wall_s: float) -> dict:
    good = [r for r in records if r.kind == "good"]
    lat = [r.latency_s for r in good if r.status == 200]
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    return {
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "wall_s": round(wall_s, 1),
        "requests": len(records),
        "good_requests": len(good),
        "bad_requests": len(records) - len(good),
        "errors": sum(1 for r in records if not r.ok),
        "errors_good": sum(1 for r in good if not r.ok),
        "errors_bad": sum(1 for r in records if r.kind != "good" and not r.ok),
        "statuses": statuses,
        "requests_per_s": round(len(records) / wall_s, 3) if wall_s else None,
        "latency_p50_s": _pct(lat, 50),
        "latency_p95_s": _pct(lat, 95),
        "latency_max_s": round(max(lat), 3) if lat else None,
        "flat_threshold_mb_per_min": args.flat_mb_per_min,
        "rss": rss,
        "all_flat": all(v["flat"] for v in rss.values() if v["flat"] is not None),
        "error_examples": [f"{r.file}: {r.detail}" for r in records if not r.ok][:10],
    }


def write_report(out: Path, summary: dict, machine: dict) -> None:
    lines = [
        f"# Soak: {summary['minutes']} min at concurrency {summary['concurrency']}",
        "",
        f"Generated by `python -m benchmarks.soak` on {dt.datetime.now().isoformat(timespec='seconds')}.",
        "Triton (`model_repository/whisper`, response cache off) + one gateway; short real en/zh clips, each "
        "checked against its own reference, and a bad request (empty file, text file, unknown language) every "
        f"{summary.get('bad_every')} requests.",
        "",
        "## Requests",
        "",
        "| requests | good | bad | errors (good / bad) | statuses | req/s | p50 (s) | p95 (s) | max (s) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {summary['requests']} | {summary['good_requests']} | {summary['bad_requests']} | "
        f"{summary['errors']} ({summary['errors_good']} / {summary['errors_bad']}) | "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(summary['statuses'].items()))} | {summary['requests_per_s']} | "
        f"{summary['latency_p50_s']} | {summary['latency_p95_s']} | {summary['latency_max_s']} |",
        "",
        "## Memory (RSS)",
        "",
        f"Flat = the Theil-Sen slope (median of pairwise slopes) over the second half of the run is below "
        f"{summary['flat_threshold_mb_per_min']} MB/min in absolute value; least-squares slopes for comparison. "
        "A run of a few minutes is too short for a verdict: allocator swings of the stubs dominate.",
        "",
        "| process | pid(s) | start (MB) | end (MB) | max (MB) | Theil-Sen 2nd half (MB/min) | least squares 2nd half | least squares whole run | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, v in summary["rss"].items():
        verdict = "n/a (too few samples)" if v["flat"] is None else ("flat" if v["flat"] else "**NOT flat**")
        lines.append(f"| {label} | {', '.join(map(str, v['pids']))} | {v['start_mb']} | {v['end_mb']} | {v['max_mb']} | "
                     f"{v['theil_sen_second_half_mb_per_min']} | {v['slope_second_half_mb_per_min']} | "
                     f"{v['slope_whole_run_mb_per_min']} | {verdict} |")
    lines += ["", "![RSS against time](rss.png)", ""]
    if summary["error_examples"]:
        lines += ["## Errors (first 10)", ""] + [f"- {e}" for e in summary["error_examples"]] + [""]
    lines += ["## Machine", "", "```", json.dumps(machine, indent=2), "```", ""]
    (out / "report.md").write_text("\n".join(lines))


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--bad-every", type=int, default=10, help="every Nth request is a bad one (0: none)")
    parser.add_argument("--max-clip-s", type=float, default=8.0, help="longest clip sent")
    parser.add_argument("--flat-mb-per-min", type=float, default=1.0)
    stack_arguments(parser)
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per request")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="load before the measured run starts")
    args = parser.parse_args(argv)

    from .run import benchmark_repository

    out = results_dir(args, "soak")
    clips = [c for c in short_set(load_clips(args.audio_dir)) if c.duration <= args.max_clip_s]
    payloads = {c.file: c.path.read_bytes() for c in clips}
    (out / "logs").mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    log(f"{len(clips)} clips (<= {args.max_clip_s} s), {args.minutes} min at concurrency {args.concurrency}; out: {out}")

    tmp = Path(tempfile.mkdtemp(prefix="whisper-soak-"))
    repo, _ = benchmark_repository(tmp, args.repository)
    sampler: Sampler | None = None
    try:
        with running_stack(repo, out / "logs", log) as (triton, gateway, url):  # response cache off
            if args.warmup_s > 0:
                log(f"warm-up: {args.warmup_s:g} s of the same load (not counted)")
                asyncio.run(drive(url, clips, payloads, seconds=args.warmup_s, concurrency=args.concurrency,
                                  bad_every=0, t0=time.monotonic(), timeout_s=args.timeout_s))
            t0 = time.monotonic()
            sampler = Sampler({"gateway": gateway.pid, "tritonserver": triton.pid}, triton.pid, args.sample_s, t0)
            sampler.start()
            log(f"load: {args.minutes} min")
            records = asyncio.run(drive(url, clips, payloads, seconds=args.minutes * 60,
                                        concurrency=args.concurrency, bad_every=args.bad_every, t0=t0,
                                        timeout_s=args.timeout_s))
            wall_s = time.monotonic() - t0
            time.sleep(min(args.sample_s, 5))  # one more sample after the load
            sampler.stop.set()
            sampler.join()
            alive = {"gateway": gateway.alive(), "tritonserver": triton.alive()}
    finally:
        if sampler is not None:
            sampler.stop.set()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = sampler.rows
    with open(out / "rss.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["t_s", "minutes", "process", "pid", "rss_mb"])
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "requests.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(asdict(records[0])) if records else ["t_s"])
        writer.writeheader()
        writer.writerows(asdict(r) for r in records)
    rss = rss_stats(rows, args.flat_mb_per_min)
    summary = summarise(records, rss, args, wall_s)
    summary.update({"bad_every": args.bad_every, "sample_s": args.sample_s, "processes_alive_at_end": alive,
                    "clips": [c.file for c in clips], "machine": machine})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    try:
        plot_rss(rows, out / "rss.png", f"RSS during a {args.minutes:g}-minute soak, concurrency {args.concurrency}")
    except Exception as exc:  # matplotlib missing: the tables still get written
        log(f"plot skipped: {exc}")
    write_report(out, summary, machine)

    log(f"requests={summary['requests']} errors={summary['errors']} statuses={summary['statuses']} "
        f"p50={summary['latency_p50_s']} s p95={summary['latency_p95_s']} s")
    for label, v in rss.items():
        log(f"  {label:28s} start {v['start_mb']:8.1f} MB  end {v['end_mb']:8.1f} MB  max {v['max_mb']:8.1f} MB  "
            f"slope(2nd half, Theil-Sen) {v['theil_sen_second_half_mb_per_min']} MB/min  {'flat' if v['flat'] else 'NOT FLAT' if v['flat'] is not None else 'n/a'}")
    log(f"wrote {out}/report.md")
    ok = summary["errors"] == 0 and all(alive.values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
