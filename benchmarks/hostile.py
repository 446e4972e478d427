"""Hostile-load benchmark (``make bench-hostile``): a normal upload's latency while the stack is attacked.

One run, against ``make serve``'s stack (tritonserver with the ``whisper`` model and the gateway, both with
their default settings):

1. idle: the normal upload (``en/jfk.flac``, 11 s, ``POST /v1/audio/transcriptions``) ``--requests`` times,
   one at a time, from 127.0.0.1;
2. the hostile load of issue 11, all at once, from other loopback addresses, and the same normal upload
   ``--requests`` times again once it has run ``--ramp`` seconds:
   - 256 slow uploaders trickling one byte every 5 s, spread over the three upload routes
     (``/v1/audio/transcriptions``, ``/transcribe/binary``, ``/stt/transcribe/``) and four client
     addresses (127.0.1.1-4: 64 each, the per-client limit, so that every one of them is let in); each
     starts over 1 s after it is answered or closed;
   - 16 WebSocket streams sending speech 20 times faster than real time, from four addresses
     (127.0.2.1-4: 4 each, the per-client limit); each reconnects 1 s after it is closed;
   - the 11 s upload with ``"<|endoftext|><|startoftranscript|><|fr|><|translate|> " * 50`` as its prompt
     (127.0.3.1), sent at the same moment as each normal upload;
3. the same, and besides a client (127.0.3.2) sending that control-token upload back to back, which keeps
   one of the two model instances busy the whole time;
4. idle again.

The goal is the issue's: under the load of phase 2, the normal upload's median latency at most 2x its idle
median. Phase 3 shows what one client that never stops sending costs the others on this machine. The
hostile clients run in a separate process, so that their event loop does not delay the normal one's.
Writes ``benchmarks/results/<date>-<machine>-hostile/``: report.md, summary.json, logs/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import audio_of, error_rate, machine_description, results_dir, running_stack, stack_arguments

NORMAL = "en/jfk.flac"
HOSTILE_PROMPT = "<|endoftext|><|startoftranscript|><|fr|><|translate|> " * 50
UPLOAD_ROUTES = ("/v1/audio/transcriptions", "/transcribe/binary", "/stt/transcribe/")
MULTIPART = b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.flac"\r\nContent-Type: audio/flac\r\n\r\n'
SLOW_IPS = [f"127.0.1.{i}" for i in range(1, 5)]
STREAM_IPS = [f"127.0.2.{i}" for i in range(1, 5)]
PROMPT_IP, FLOOD_IP = "127.0.3.1", "127.0.3.2"


def log(msg: str) -> None:
    print(f"[hostile-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------- the hostile clients
async def slow_uploader(host: str, port: int, route: str, source: str, stats: Counter, stop: asyncio.Event,
                        every_s: float) -> None:
    multipart = route != "/transcribe/binary"
    kind = "multipart/form-data; boundary=zz" if multipart else "application/octet-stream"
    head = (f"POST {route} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {kind}\r\nContent-Length: 100000000\r\n\r\n"
            .encode() + (MULTIPART if multipart else b""))
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            stats["connect failed"] += 1
            await asyncio.sleep(1)
            continue
        stats["connections"] += 1
        try:
            writer.write(head)
            while not stop.is_set():
                try:
                    answer = await asyncio.wait_for(reader.read(4096), every_s)
                except asyncio.TimeoutError:
                    writer.write(b"\x01")  # one byte every every_s seconds
                    await writer.drain()
                    continue
                stats[f"HTTP {answer.split(b' ', 2)[1].decode()}" if answer else "closed by the server"] += 1
                break
        except OSError:
            stats["reset"] += 1
        finally:
            writer.close()
        await asyncio.sleep(1)


async def fast_stream(url: str, pcm: bytes, source: str, stats: Counter, stop: asyncio.Event, speed: float) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    frame, frame_s = 3200, 0.1  # 0.1 s of 16 kHz s16 audio per frame
    start = json.dumps({"type": "start", "language": "en", "format": "pcm_s16le", "sample_rate": 16000})
    while not stop.is_set():
        try:
            async with connect(url, family=socket.AF_INET, local_addr=(source, 0), open_timeout=30) as ws:
                stats["streams"] += 1
                await ws.send(start)
                i = 0
                while not stop.is_set():
                    offset = (i * frame) % (len(pcm) - frame)
                    await ws.send(pcm[offset:offset + frame])
                    i += 1
                    await asyncio.sleep(frame_s / speed)
                stats["audio sent (s)"] += round(i * frame_s)
        except ConnectionClosed as exc:
            code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")
            stats[f"closed {code}" + (" (too many streams)" if "too many" in reason else "")] += 1
        except (OSError, asyncio.TimeoutError) as exc:
            stats[f"error {type(exc).__name__}"] += 1
        await asyncio.sleep(1)


def prompt_upload(http, body: bytes) -> dict:
    """The 11 s upload with the control-token prompt; its latency, status and text."""
    t0 = time.perf_counter()
    r = http.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", body)},
                  data={"model": "whisper-1", "prompt": HOSTILE_PROMPT})
    return {"latency_s": round(time.perf_counter() - t0, 3), "status": r.status_code,
            "text": r.json().get("text") if r.status_code == 200 else r.text[:200]}


async def prompt_flood(url: str, body: bytes, runs: list, stop: asyncio.Event) -> None:
    import httpx

    with httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=FLOOD_IP), timeout=600) as http:
        while not stop.is_set():
            runs.append(await asyncio.to_thread(prompt_upload, http, body))


async def hostile_load(url: str, pcm: bytes, body: bytes, args: argparse.Namespace, flood: bool, stop_flag,
                       results) -> None:
    host, port = url.rsplit("/", 1)[1].split(":")
    stop = asyncio.Event()
    uploads, streams, flooded = Counter(), Counter(), []
    tasks = [asyncio.create_task(slow_uploader(host, int(port), UPLOAD_ROUTES[i % 3], SLOW_IPS[i % len(SLOW_IPS)],
                                               uploads, stop, args.trickle_every))
             for i in range(args.slow)]
    ws_url = url.replace("http://", "ws://") + "/v1/stream"
    tasks += [asyncio.create_task(fast_stream(ws_url, pcm, STREAM_IPS[i % len(STREAM_IPS)], streams, stop, args.speed))
              for i in range(args.streams)]
    if flood:
        tasks.append(asyncio.create_task(prompt_flood(url, body, flooded, stop)))
    while not stop_flag.is_set():
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait(tasks, timeout=60)
    for t in tasks:
        t.cancel()
    results.put({"slow_uploads": dict(uploads), "streams": dict(streams), "prompt_flood": flooded})


def _load_process(url, pcm, body, args, flood, stop_flag, results) -> None:
    asyncio.run(hostile_load(url, pcm, body, args, flood, stop_flag, results))


# ---------------------------------------------------------------------------- the normal client
def normal_uploads(url: str, body: bytes, reference: str, n: int, pause_s: float,
                   with_prompt_attack: bool = False) -> tuple[list[dict], list[dict]]:
    """``n`` normal uploads, one at a time; with ``with_prompt_attack``, each sent at the same moment as a
    control-token upload from another client. Returns the normal runs and the attack's."""
    import httpx

    runs, attacks = [], []
    with httpx.Client(base_url=url, timeout=600) as http, \
            httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=PROMPT_IP), timeout=600) as hostile, \
            ThreadPoolExecutor(1) as pool:
        for _ in range(n):
            attack = pool.submit(prompt_upload, hostile, body) if with_prompt_attack else None
            t0 = time.perf_counter()
            r = http.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", body)}, data={"model": "whisper-1"})
            latency = time.perf_counter() - t0
            text = r.json().get("text", "") if r.status_code == 200 else r.text[:200]
            runs.append({"status": r.status_code, "latency_s": round(latency, 3),
                         "wer": round(error_rate(reference, text, "en"), 3) if r.status_code == 200 else None})
            if attack is not None:
                attacks.append(attack.result())
            time.sleep(pause_s)
    return runs, attacks


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, those of this benchmark: itself and every process under it,
    the stack included), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    parents, used = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            used[int(entry.name)] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    own, grew = {os.getpid()}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in own} - own
        own |= more
        grew = bool(more)
    return (user + nice + system + irq + softirq + steal) / tick, sum(used.get(pid, 0) for pid in own) / tick


class OtherLoad:
    """The CPU that processes outside this benchmark used over a phase, in cores (this machine's other work)."""

    def __enter__(self) -> "OtherLoad":
        self.t0, (self.busy0, self.own0) = time.monotonic(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        busy, own = cpu_seconds()
        self.cores = round(max(busy - self.busy0 - (own - self.own0), 0.0) / (time.monotonic() - self.t0), 2)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def summarize(runs: list[dict]) -> dict:
    ok = [r["latency_s"] for r in runs if r["status"] == 200]
    return {"requests": len(runs), "ok": len(ok), "statuses": dict(Counter(str(r["status"]) for r in runs)),
            "median_s": round(statistics.median(ok), 3) if ok else None, "max_s": round(max(ok), 3) if ok else None,
            "wer_max": max((r["wer"] for r in runs if r["wer"] is not None), default=None), "runs": runs}


def _clients(h: dict, settings: dict) -> list[str]:
    return [f"  - {settings['slow']} slow uploaders, one byte every {settings['trickle_every']:g} s: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(h["slow_uploads"].items())),
            f"  - {settings['streams']} streams at {settings['speed']:g}x real time: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(h["streams"].items()))]


def _attack_line(attacks: list[dict]) -> str:
    lat = [a["latency_s"] for a in attacks]
    return (f"{len(attacks)} control-token uploads, statuses {dict(Counter(str(a['status']) for a in attacks))}, "
            f"median {statistics.median(lat) if lat else None} s, text {attacks[0]['text'] if attacks else None!r}")


def report(out: Path, s: dict) -> None:
    idle, attack, flood, after = s["idle"], s["attack"], s["attack_and_flood"], s["idle_after"]
    lines = [f"# Hostile-load benchmark ({s['date']})", "",
             f"Machine: {s['machine'].get('cpu_model')} × {s['machine'].get('cpu_count')} CPUs, GPU: "
             f"{s['machine'].get('gpu')}; load average at start {s['machine'].get('load_average_at_start')}. "
             "`make serve`'s stack with its default settings, model `whisper` (base). Command: `make bench-hostile`.", "",
             f"**Normal upload** (`{NORMAL}`, 11 s, `POST /v1/audio/transcriptions`) one at a time from 127.0.0.1: "
             f"median **{idle['median_s']} s idle, {attack['median_s']} s under the attack ({s['ratio']}x; goal ≤ 2x: "
             f"{'met' if s['goal_met'] else 'NOT met'})**; {flood['median_s']} s with a control-token client sending "
             f"back to back besides ({s['ratio_flood']}x); {after['median_s']} s idle again.", "",
             "| phase | requests | 200 | median | max | worst WER | other processes' CPU |", "|---|---|---|---|---|---|---|"]
    for name, row in (("idle", idle), ("attack: 256 slow uploads, 16 streams at 20x, a control-token upload with each",
                                       attack),
                      ("attack, and a control-token client back to back", flood), ("idle after", after)):
        lines.append(f"| {name} | {row['requests']} | {row['ok']} | {row['median_s']} s | {row['max_s']} s | "
                     f"{row['wer_max']} | {row['other_load_cores']} cores |")
    lines += ["", "## The hostile clients", "", "- attack phase:", *_clients(s["hostile_attack"], s["settings"]),
              f"  - {_attack_line(s['prompt_attacks'])}",
              "- attack and back-to-back phase:", *_clients(s["hostile_flood"], s["settings"]),
              f"  - alongside the normal uploads: {_attack_line(s['prompt_attacks_flood'])}",
              f"  - back to back: {_attack_line(s['hostile_flood']['prompt_flood'])}", "",
              f"Gateway memory (RSS): {s['gateway_rss_mb']['before']} MB before, {s['gateway_rss_mb']['during']} MB "
              f"under the load, {s['gateway_rss_mb']['after']} MB after. `/metrics`: {s['metrics_lines']['before']} "
              f"lines before, {s['metrics_lines']['after']} after.", "",
              "Other engineers' work shares this machine (their processes at nice 19, some at nice 0): the figures "
              "are one run's, under whatever else ran then; the last column is the CPU that processes outside this "
              "benchmark used while each phase's normal uploads ran (of the 2 cores).", ""]
    (out / "report.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10, help="normal uploads per phase")
    parser.add_argument("--ramp", type=float, default=20.0, help="seconds of hostile load before measuring")
    parser.add_argument("--slow", type=int, default=256, help="slow uploaders")
    parser.add_argument("--trickle-every", type=float, default=5.0, help="seconds between a slow uploader's bytes")
    parser.add_argument("--streams", type=int, default=16, help="streams faster than real time")
    parser.add_argument("--speed", type=float, default=20.0, help="their speed, x real time")
    stack_arguments(parser)
    args = parser.parse_args(argv)

    from client.stream import to_pcm16

    from .run import benchmark_repository

    out = results_dir(args, "hostile")
    body = (args.audio_dir / NORMAL).read_bytes()
    reference = next(line.split("\t")[3] for line in (args.audio_dir / "manifest.tsv").read_text().splitlines()
                     if line.startswith(NORMAL + "\t"))
    pcm = to_pcm16(audio_of(str(args.audio_dir / "long" / "en_concat.wav")))
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    tmp = Path(tempfile.mkdtemp(prefix="whisper-hostile-bench-"))
    try:
        repo, _ = benchmark_repository(tmp, args.repository)
        # its own jobs directory: the default one in ~ may hold another version's database
        with running_stack(repo, out / "logs", log, GATEWAY_JOBS_DIR=str(tmp / "jobs")) as (_, gateway, url):
            import httpx

            normal_uploads(url, body, reference, 2, 0.2)  # warm-up
            metrics_before = len(httpx.get(f"{url}/metrics").text.splitlines())
            rss_before = rss_mb(gateway.pid)
            log(f"idle: {args.requests} normal uploads")
            with OtherLoad() as other:
                idle = summarize(normal_uploads(url, body, reference, args.requests, 0.5)[0])
            idle["other_load_cores"] = other.cores
            log(f"  median {idle['median_s']} s (other processes used {other.cores} cores)")

            def under_load(flood: bool) -> tuple[dict, list[dict], dict]:
                stop_flag, results = mp.Event(), mp.Queue()
                load = mp.Process(target=_load_process, args=(url, pcm, body, args, flood, stop_flag, results),
                                  daemon=True)
                log(f"hostile load: {args.slow} slow uploaders, {args.streams} streams at {args.speed:g}x, a control-"
                    f"token upload with each normal one{', a control-token client back to back' if flood else ''}; "
                    f"measuring after {args.ramp:g} s")
                load.start()
                try:
                    time.sleep(args.ramp)
                    with OtherLoad() as other:
                        runs, attacks = normal_uploads(url, body, reference, args.requests, 0.5,
                                                       with_prompt_attack=True)
                finally:
                    stop_flag.set()
                    hostile = results.get(timeout=180)
                    load.join(30)
                row = {**summarize(runs), "other_load_cores": other.cores}
                log(f"  median {row['median_s']} s (other processes used {other.cores} cores); attacks {[a['latency_s'] for a in attacks]}; "
                    f"{ {k: v for k, v in hostile.items() if k != 'prompt_flood'} }")
                return row, attacks, hostile

            attack, prompt_attacks, hostile_attack = under_load(flood=False)
            rss_during = rss_mb(gateway.pid)
            time.sleep(5)
            flood, prompt_attacks_flood, hostile_flood = under_load(flood=True)
            time.sleep(5)
            with OtherLoad() as other:
                after = summarize(normal_uploads(url, body, reference, args.requests, 0.5)[0])
            after["other_load_cores"] = other.cores
            log(f"idle again: median {after['median_s']} s (other processes used {other.cores} cores)")
            metrics_after = len(httpx.get(f"{url}/metrics").text.splitlines())
            rss_after = rss_mb(gateway.pid)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio_of(row: dict) -> float | None:
        return round(row["median_s"] / idle["median_s"], 2) if row["median_s"] and idle["median_s"] else None

    summary = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine,
        "normal_upload": NORMAL,
        "idle": idle, "attack": attack, "attack_and_flood": flood, "idle_after": after,
        "ratio": ratio_of(attack), "ratio_flood": ratio_of(flood),
        "goal_met": ratio_of(attack) is not None and ratio_of(attack) <= 2.0 and attack["ok"] == attack["requests"],
        "prompt_attacks": prompt_attacks, "prompt_attacks_flood": prompt_attacks_flood,
        "hostile_attack": hostile_attack, "hostile_flood": hostile_flood,
        "gateway_rss_mb": {"before": rss_before, "during": rss_during, "after": rss_after},
        "metrics_lines": {"before": metrics_before, "after": metrics_after},
        "settings": {"slow": args.slow, "trickle_every": args.trickle_every, "streams": args.streams,
                     "speed": args.speed, "ramp_s": args.ramp, "requests": args.requests},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    report(out, summary)
    log(f"wrote {out / 'report.md'}: idle {idle['median_s']} s, under the attack {attack['median_s']} s "
        f"({summary['ratio']}x), and back to back {flood['median_s']} s ({summary['ratio_flood']}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
