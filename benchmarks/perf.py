"""perf_analyzer on the Triton model over gRPC, with ``--input-data`` built from real speech.

The input JSON holds every clip as base64 FP32 ``AUDIO`` (ragged, shape [samples]) plus the optional
inputs the gateway always sends (so requests batch together). It is written to a temporary directory,
never into the repository: it is audio.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np

from whisper_triton import protocol

from .common import Clip, audio_of


def build_input_data(clips: list[Clip], path: Path) -> float:
    """Write perf_analyzer's input JSON (every input of ``protocol.request_arrays``); returns the mean clip
    duration (s) for RTFx."""
    data = []
    for clip in clips:
        arrays = protocol.request_arrays(audio_of(str(clip.path)), protocol.Options(language=clip.language))
        entry: dict = {}
        for name, array in arrays.items():
            if name == protocol.AUDIO.name:
                entry[name] = {"b64": base64.b64encode(array.tobytes()).decode("ascii"), "shape": [int(array.size)]}
            else:
                value = array.reshape(-1)[0]
                entry[name] = {"content": [value.decode("utf-8") if isinstance(value, bytes) else value.item()],
                               "shape": [1]}
        data.append(entry)
    path.write_text(json.dumps({"data": data}))
    return float(np.mean([c.duration for c in clips]))


def perf_analyzer_binary() -> str | None:
    candidate = Path(sys.executable).parent / "perf_analyzer"
    if candidate.exists():
        return str(candidate)
    return shutil.which("perf_analyzer")


def environment() -> dict:
    env = dict(os.environ)
    lib = Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cuda_runtime" / "lib"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def run(grpc_url: str, clips: list[Clip], concurrencies: list[int], out_dir: Path, tmp_dir: Path, *,
        measurement_ms: int = 8000, model: str = "whisper", timeout_s: float = 900) -> dict:
    """Run one perf_analyzer sweep; keeps its CSV and verbatim stdout in ``out_dir``."""
    binary = perf_analyzer_binary()
    if binary is None:
        return {"skipped": "perf_analyzer not found (it comes with tritonclient[all]==2.51.0)"}
    input_path = tmp_dir / "perf_input.json"
    mean_duration = build_input_data(clips, input_path)
    csv_path = out_dir / "perf_analyzer.csv"
    # perf_analyzer's range is start:end:step; the sweep is a doubling one, so run it per level instead.
    results = {"argv": [], "mean_clip_s": mean_duration, "levels": {}, "clips": [c.file for c in clips]}
    stdout_all = []
    rows_all: list[dict] = []
    header: list[str] | None = None
    for c in concurrencies:
        level_csv = tmp_dir / f"perf_c{c}.csv"
        argv = [binary, "-m", model, "-u", grpc_url, "-i", "grpc", "--input-data", str(input_path),
                "--concurrency-range", f"{c}:{c}", "--measurement-interval", str(measurement_ms),
                "--stability-percentage", "1000", "--max-trials", "3", "-f", str(level_csv), "--verbose-csv",
                "--percentile", "95"]
        results["argv"].append(" ".join(argv))
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=environment(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stdout_all.append(f"$ {' '.join(argv)}\n(timed out after {timeout_s} s)\n")
            results["levels"][c] = {"error": "timeout"}
            continue
        stdout_all.append(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0 or not level_csv.exists():
            results["levels"][c] = {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-400:]}"}
            continue
        with open(level_csv, newline="") as fh:
            reader = csv.DictReader(fh)
            header = header or reader.fieldnames
            for row in reader:
                rows_all.append(row)
                results["levels"][c] = parse_row(row, mean_duration)
    (out_dir / "perf_analyzer_stdout.txt").write_text("\n".join(stdout_all))
    if header:
        with open(csv_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows_all)
    return results


def parse_row(row: dict, mean_duration: float) -> dict:
    def us(name: str) -> float | None:
        value = row.get(name)
        return float(value) / 1e6 if value not in (None, "") else None

    ips = float(row["Inferences/Second"])
    return {
        "inferences_per_s": ips,
        "rtfx": round(ips * mean_duration, 3),
        "latency_p50_s": us("p50 latency"),
        "latency_p95_s": us("p95 latency"),
        "latency_p99_s": us("p99 latency"),
        "latency_avg_s": us("response wait"),
        "server_queue_s": us("Server Queue"),
        "server_compute_input_s": us("Server Compute Input"),
        "server_compute_infer_s": us("Server Compute Infer"),
        "server_compute_output_s": us("Server Compute Output"),
        "client_send_s": us("Client Send"),
        "client_recv_s": us("Client Recv"),
    }
