"""``make bench``: every system measured in one run, then a report with tables, plots and summary.json.

    python -m benchmarks.run                 # full run (~15-25 min on 2 cores)
    python -m benchmarks.run --quick         # ~5 min: fewer clips, concurrency 1 and 8
    python -m benchmarks.run --concurrency 1,4,8 --audio-dir DIR --out DIR

Systems, each in its own process(es) and measured with the same HTTP client (``loadgen``):
  gateway      the gateway (OpenAI endpoint) in front of Triton (model_repository/whisper, response cache OFF)
  baseline_a   seed-style FastAPI server, one WhisperModel, one request at a time
  baseline_b   FastAPI server with faster-whisper's BatchedInferencePipeline per request
plus perf_analyzer on Triton over gRPC, an in-process reference for the gateway overhead, and an
in-process sweep of the deployment levers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import accuracy, inprocess, loadgen, perf, report
from .common import DEFAULT_AUDIO, ROOT, free_port, load_clips, machine_description, model_path, short_set, start_gateway, wait_http

# cpu_isa: the deployed model's own value (config.pbtxt), so the baselines run the same CPU kernels.
BASELINE_SETTINGS = {"compute_type": "int8", "beam_size": 5, "cpu_threads": 2, "batch_size": 8,
                     "cpu_isa": inprocess.deployed_parameters(ROOT / "model_repository").get("cpu_isa", "auto")}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine_tag() -> str:
    gpu = machine_description()["gpu"]
    tag = f"{platform.machine()}-{os.cpu_count()}cpu"
    if not gpu.startswith("none"):
        tag += "-" + re.sub(r"[^A-Za-z0-9]+", "", gpu.split("\n")[0])[:20]
    return tag


def benchmark_repository(tmp: Path, source: Path) -> tuple[Path, str]:
    """A copy of the whisper model with the response cache disabled (it is off in the shipped config too;
    repeats must never hit a cache in a throughput run)."""
    repo = tmp / "repo"
    shutil.copytree(source / "whisper", repo / "whisper", ignore=shutil.ignore_patterns("__pycache__"))
    config = repo / "whisper" / "config.pbtxt"
    text = config.read_text()
    new, n = re.subn(r"response_cache\s*\{\s*enable:\s*true\s*\}", "response_cache {\n  enable: false\n}", text)
    if n != 1 and not re.search(r"response_cache\s*\{\s*enable:\s*false\s*\}", text):
        raise SystemExit("could not find `response_cache { enable: ... }` in config.pbtxt")
    config.write_text(new)
    return repo, new


def cpu_isa_description(setting: str) -> str:
    from whisper_triton.cpu import cpu_flags, effective_isa

    return f"{effective_isa(setting, cpu_flags(), os.environ)} (cpu_isa={setting})"


# ---------------------------------------------------------------------------- systems
def run_baseline(kind: str, clips, mixed, concurrencies, args, out_dir: Path) -> dict:
    from launcher.processes import Child

    port = free_port()
    env = dict(os.environ, BASELINE_KIND=kind, BASELINE_MODEL=model_path("bundled:base"),
               BASELINE_COMPUTE_TYPE=BASELINE_SETTINGS["compute_type"], BASELINE_BEAM=str(BASELINE_SETTINGS["beam_size"]),
               BASELINE_CPU_THREADS=str(BASELINE_SETTINGS["cpu_threads"]), BASELINE_BATCH_SIZE=str(BASELINE_SETTINGS["batch_size"]),
               BASELINE_CPU_ISA=BASELINE_SETTINGS["cpu_isa"])
    argv = [sys.executable, "-m", "uvicorn", "benchmarks.baselines:create_app", "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]
    child = Child(f"baseline-{kind}", argv, env, out_dir / "logs" / f"baseline_{kind}.log")
    child.start()
    try:
        if not wait_http(f"http://127.0.0.1:{port}/health", 300, child.alive):
            return {"skipped": f"baseline {kind} did not start (see logs/baseline_{kind}.log)"}
        url = f"http://127.0.0.1:{port}"
        result = {"sweep": loadgen.sweep(url, clips, concurrencies, min_requests=args.passes * len(clips), log=log)}
        if kind == "seed" and args.accuracy_clips:  # the seed-style server is faster-whisper's own transcribe
            log(f"  accuracy: {len(args.accuracy_clips)} {args.half}-half clips, language given")
            result["accuracy_texts"] = accuracy.http_texts(url, args.accuracy_clips, concurrency=1)
        if mixed:
            log(f"  mixed clips (short + medium + long) at concurrency {args.mixed_concurrency}")
            result["mixed"] = loadgen.sweep(url, mixed, [args.mixed_concurrency], warmup=False, log=log)[args.mixed_concurrency]
        return result
    finally:
        child.stop(10)


def gateway_smoke(url: str, clip) -> str:
    """'' when the gateway answers a real clip with its text, else why not."""
    import httpx

    try:
        response = httpx.post(f"{url}/v1/audio/transcriptions", timeout=300,
                              files={"file": (clip.path.name, clip.path.read_bytes())},
                              data={"model": "whisper-1", "language": clip.language, "response_format": "json"})
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    try:
        text = response.json()["text"]
    except Exception as exc:
        return f"unexpected body ({exc}): {response.text[:200]}"
    return "" if text.strip() else "empty text"


def triton_direct_c1(grpc_url: str, clips) -> list[dict]:
    """Latency of each clip sent straight to Triton over gRPC, one at a time (overhead breakdown)."""
    from client.core import WhisperTritonClient

    from .common import audio_of

    rows = []
    with WhisperTritonClient(grpc_url) as client:
        client.transcribe(audio_of(str(clips[0].path)), language=clips[0].language)
        for clip in clips:
            audio = audio_of(str(clip.path))
            started = time.perf_counter()
            result = client.transcribe(audio, language=clip.language)
            rows.append({"file": clip.file, "duration": clip.duration, "latency_s": time.perf_counter() - started, "text": result.text})
    return rows


def run_triton(clips, mixed, concurrencies, args, out_dir: Path, tmp: Path, results: dict) -> None:
    from launcher.processes import Child
    from launcher.triton import TritonServer

    repo, config_text = benchmark_repository(tmp, args.repository)
    results["triton_config_pbtxt"] = config_text
    params = inprocess.deployed_parameters(repo)
    results["deployed_parameters"] = params
    http, grpc, metrics = free_port(), free_port(), free_port()
    triton = TritonServer(repo, http, grpc, metrics, models=["whisper"], log_path=out_dir / "logs" / "tritonserver.log")
    log(f"starting tritonserver from {repo} (response cache disabled)")
    triton.start()
    gateway: Child | None = None
    try:
        triton.wait_ready(900)
        log("  triton ready")

        # The in-process reference first, while Triton is idle: one request at a time, deployed parameters.
        log("  in-process reference (WhisperEngine, deployed parameters, one request at a time)")
        ref_params = dict(params)
        ref_out = tmp / "reference.json"
        rc = _subprocess(["reference", "--out", str(ref_out), "--audio-dir", str(args.audio_dir), "--params", json.dumps(ref_params),
                          "--files", ",".join(c.file for c in clips), "--repeats", "2"], out_dir, "inprocess_reference")
        results["inprocess_reference"] = json.loads(ref_out.read_text()) if rc == 0 else {"skipped": f"exit {rc}"}
        if rc == 0:
            # same clips as the load runs
            keep = {c.file for c in clips}
            results["inprocess_reference"]["rows"] = [r for r in results["inprocess_reference"]["rows"] if r["file"] in keep]

        log("  Triton over gRPC, one request at a time")
        try:
            results["triton_direct_c1"] = triton_direct_c1(triton.grpc_url, clips)
        except Exception as exc:
            results["triton_direct_c1"] = {"skipped": f"{type(exc).__name__}: {exc}"}

        # The gateway.
        gateway, gw_url = start_gateway(triton, out_dir / "logs")
        why = ""
        if not wait_http(f"{gw_url}/health", 120, gateway.alive):
            why = "the gateway did not answer /health within 120 s (see logs/gateway.log)"
        else:
            why = gateway_smoke(gw_url, clips[0])
        if why:
            log(f"  GATEWAY SKIPPED: {why}")
            results["gateway"] = {"skipped": why}
        else:
            log("  gateway: concurrency sweep")
            results["gateway"] = {"sweep": loadgen.sweep(gw_url, clips, concurrencies, min_requests=args.passes * len(clips), log=log)}
            if args.accuracy_clips:
                log(f"  gateway: accuracy on {len(args.accuracy_clips)} {args.half}-half clips, language given")
                results["gateway"]["accuracy_texts"] = accuracy.http_texts(gw_url, args.accuracy_clips, concurrency=4)
            if mixed:
                log(f"  gateway: mixed clips at concurrency {args.mixed_concurrency}")
                results["gateway"]["mixed"] = loadgen.sweep(gw_url, mixed, [args.mixed_concurrency], warmup=False, log=log)[args.mixed_concurrency]
        gateway.stop(10)
        gateway = None

        log(f"  perf_analyzer over gRPC, concurrency {args.perf_concurrency}")
        try:
            results["perf_analyzer"] = perf.run(triton.grpc_url, clips, args.perf_concurrency, out_dir, tmp,
                                                measurement_ms=args.perf_measurement_ms)
            for c, level in results["perf_analyzer"].get("levels", {}).items():
                log(f"    c={c}: {level}")
        except Exception as exc:
            traceback.print_exc()
            results["perf_analyzer"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    finally:
        if gateway is not None:
            gateway.stop(10)
        triton.stop(30)


def _subprocess(argv: list[str], out_dir: Path, name: str) -> int:
    import subprocess

    with open(out_dir / "logs" / f"{name}.log", "ab") as logfile:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.inprocess", *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=logfile)
        for line in proc.stdout:  # echo the per-config lines
            sys.stdout.write(line.decode(errors="replace"))
            sys.stdout.flush()
        return proc.wait()


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (~5 min): 10 clips, concurrency 1 and 8")
    parser.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO, help="a directory with manifest.tsv (default ../shared/audio)")
    parser.add_argument("--concurrency", default="", help="comma-separated HTTP concurrency levels (default 1,2,4,8,16; quick 1,8)")
    parser.add_argument("--perf-concurrency", default="", help="perf_analyzer levels (default 1,4,8; quick 8)")
    parser.add_argument("--mixed-concurrency", type=int, default=8)
    parser.add_argument("--no-mixed", action="store_true", help="skip the short+medium+long run")
    parser.add_argument("--passes", type=int, default=1, help="times each level sends the whole clip list (more = less drain at the end)")
    parser.add_argument("--out", type=Path, default=None, help="report directory (default benchmarks/results/<date>-<machine>)")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--systems", default="levers,baseline_a,baseline_b,triton", help="which parts to run")
    parser.add_argument("--half", default="check", choices=["check", "tune", "all"],
                        help="dev-set half (benchmarks/devset.tsv) for throughput clips and the accuracy table")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the per-language accuracy table")
    args = parser.parse_args(argv)

    args.concurrency = [int(x) for x in (args.concurrency or ("1,8" if args.quick else "1,2,4,8,16")).split(",")]
    args.perf_concurrency = [int(x) for x in (args.perf_concurrency or ("8" if args.quick else "1,4,8")).split(",")]
    args.perf_measurement_ms = 5000 if args.quick else 12000
    systems = set(args.systems.split(","))
    out_dir = args.out or ROOT / "benchmarks" / "results" / f"{dt.date.today().isoformat()}-{machine_tag()}"
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)

    all_clips = load_clips(args.audio_dir)
    if args.half != "all":  # speech the settings were not tuned on
        halves = accuracy.read_split()
        all_clips = [c for c in all_clips if halves.get(c.file) == args.half]
    args.accuracy_clips = [] if args.no_accuracy else accuracy.half(args.half, args.audio_dir)
    clips = short_set(all_clips)
    if args.quick:  # a mix of both languages
        en = [c for c in clips if c.language == "en"][:7]
        zh = [c for c in clips if c.language == "zh"][:3]
        clips = en + zh
    mixed = [] if (args.quick or args.no_mixed) else clips + [c for c in all_clips if c.kind != "short"]
    if not clips:
        raise SystemExit(f"no short en/zh clips with references in {args.audio_dir}/manifest.tsv")

    started = time.monotonic()
    results: dict = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine_description(),
        "audio_dir": str(args.audio_dir),
        "half": args.half,
        "clips": [{"file": c.file, "language": c.language, "duration": c.duration} for c in clips],
        "accuracy_clips": [{"file": c.file, "language": c.language, "duration": c.duration, "reference": c.reference}
                           for c in args.accuracy_clips],
        "mixed_clips": [{"file": c.file, "language": c.language, "duration": c.duration, "kind": c.kind} for c in mixed],
        "concurrency": args.concurrency,
        "perf_concurrency": args.perf_concurrency,
        "mixed_concurrency": args.mixed_concurrency,
        "passes": args.passes,
        "baseline_settings": {**BASELINE_SETTINGS, "model": model_path("bundled:base")},
        "cpu_isa": cpu_isa_description(BASELINE_SETTINGS["cpu_isa"]),
    }
    log(f"report -> {out_dir}; {len(clips)} short clips ({sum(c.duration for c in clips):.0f} s), concurrency {args.concurrency}")
    if results["machine"]["gpu"].startswith("none"):
        log("no GPU on this machine: CPU figures only (the GPU targets are not measured)")

    with tempfile.TemporaryDirectory(prefix="whisper-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            if "levers" in systems:
                log("in-process lever sweep (WhisperEngine, short English clips)")
                lev_out = tmp / "levers.json"
                rc = _subprocess(["levers", "--out", str(lev_out), "--audio-dir", str(args.audio_dir)]
                                 + (["--quick", "--quick-clips", "6"] if args.quick else []), out_dir, "levers")
                results["levers"] = json.loads(lev_out.read_text()) if rc == 0 else {"skipped": f"exit {rc}"}
            for kind, key in (("seed", "baseline_a"), ("batched", "baseline_b")):
                if key in systems:
                    log(f"{key} ({kind}) sweep")
                    results[key] = run_baseline(kind, clips, mixed, args.concurrency, args, out_dir)
            if "triton" in systems:
                run_triton(clips, mixed, args.concurrency, args, out_dir, tmp, results)
        except KeyboardInterrupt:
            log("interrupted: writing what was measured")
        finally:
            results["elapsed_s"] = round(time.monotonic() - started, 1)
            (out_dir / "raw.json").write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))
            summary = report.write(results, out_dir)
            log(f"done in {results['elapsed_s']:.0f} s: {out_dir / 'report.md'}")
            for line in report.headline(summary):
                log("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
