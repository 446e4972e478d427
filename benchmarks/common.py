"""Shared bits: the speech manifest, text normalisers, WER/CER, ports, machine description."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jiwer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AUDIO = Path(os.environ.get("WHISPER_TEST_AUDIO", ROOT.parent / "shared" / "audio"))
SHORT_MAX_S = 15.0  # "short real utterances": up to 15 s (the issue says 2-15 s)


@dataclass(frozen=True)
class Clip:
    file: str
    path: Path
    language: str
    duration: float
    reference: str

    @property
    def kind(self) -> str:
        if self.duration <= SHORT_MAX_S:
            return "short"
        return "medium" if self.duration <= 90.0 else "long"


def load_clips(audio_dir: Path = DEFAULT_AUDIO) -> list[Clip]:
    """Every clip of ``manifest.tsv`` with a reference, in en/zh (the languages WER/CER are defined for)."""
    with open(Path(audio_dir) / "manifest.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    clips = []
    for row in rows:
        if row["language"] not in ("en", "zh") or not row.get("reference_text"):
            continue
        if row["file"].split("/")[0] in ("formats", "video"):  # the same JFK speech again, other containers
            continue
        clips.append(Clip(row["file"], Path(audio_dir) / row["file"], row["language"], float(row["duration_seconds"]), row["reference_text"]))
    return clips


def short_set(clips: list[Clip], languages=("en", "zh"), min_s: float = 1.0) -> list[Clip]:
    return [c for c in clips if c.kind == "short" and c.language in languages and c.duration >= min_s]


@lru_cache(maxsize=128)
def audio_of(path: str):
    from client.audio import decode_file

    return decode_file(path)


# ---------------------------------------------------------------- accuracy
@lru_cache(maxsize=1)
def _normalisers():
    import opencc
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer(), BasicTextNormalizer(), opencc.OpenCC("t2s")


def normalize(text: str, language: str) -> str:
    english, basic, t2s = _normalisers()
    if language == "zh":
        return " ".join("".join(basic(t2s.convert(text)).split()))  # one token per character
    return " ".join(english(text).split())


def error_rate(reference: str | list[str], hypothesis: str | list[str], language: str) -> float:
    """WER for English, CER (characters as words, after normalising) for Mandarin; corpus-level for lists."""
    refs = [reference] if isinstance(reference, str) else list(reference)
    hyps = [hypothesis] if isinstance(hypothesis, str) else list(hypothesis)
    r = [normalize(x, language) or "<empty>" for x in refs]
    h = [normalize(x, language) or "<empty>" for x in hyps]
    return float(jiwer.wer(r, h))


_DIGITS = "zero one two three four five six seven eight nine".split()


def _identity_form(text: str, language: str) -> str:
    """Letters only, digits spelled out, no spaces: robust to "1, 2, 3" against "one two three"."""
    text = normalize(text, language).replace(" ", "")
    if language == "en":
        text = re.sub(r"\d", lambda m: _DIGITS[int(m.group())], text)
    return text


def _distance(reference: str, hypothesis: str, language: str) -> float:
    word = error_rate(reference, hypothesis, language)
    ref, hyp = _identity_form(reference, language), _identity_form(hypothesis, language)
    char = float(jiwer.cer(ref or "<empty>", hyp or "<empty>"))
    return min(word, char)


def matches_own_clip(clip: Clip, text: str, clips: list[Clip], limit: float | None = None) -> tuple[bool, str]:
    """A response is correct when its distance to its own reference is <= ``limit`` (0.5 English, 0.75
    Mandarin, where the base model is weak) and no other clip's reference fits it better: a mix-up of
    responses counts as an error. Distance = min(WER/CER after normalising, character error rate on
    letters only with digits spelled out), so number formatting alone is not a mismatch."""
    limit = limit if limit is not None else (0.75 if clip.language == "zh" else 0.5)
    own = _distance(clip.reference, text, clip.language)
    if own > limit:
        return False, f"distance {own:.2f} > {limit} to its own reference: {text[:80]!r}"
    for other in clips:
        if other.file != clip.file and other.language == clip.language and other.reference != clip.reference:
            if _distance(other.reference, text, clip.language) < own:
                return False, f"text fits {other.file} better than its own clip: {text[:80]!r}"
    return True, ""


# ---------------------------------------------------------------- misc
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_description() -> dict:
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "cpu_model": "",
        "memory_gb": None,
        "gpu": "none (no GPU in this run)",
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            info["gpu"] = out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    versions = {}
    for name in ("faster_whisper", "ctranslate2", "tritonclient", "numpy", "httpx"):
        try:
            from importlib.metadata import version

            versions[name] = version(name.replace("_", "-"))
        except Exception:
            pass
    info["packages"] = versions
    return info


def model_path(name: str = "bundled:base") -> str:
    from whisper_triton import weights

    return str(weights.resolve(name))


def wait_http(url: str, timeout: float, alive=lambda: True) -> bool:
    """True once ``url`` answers 200 within ``timeout`` seconds; False on timeout or when ``alive()`` turns false."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return True
        except Exception:
            pass
        if not alive():
            return False
        time.sleep(0.5)
    return False


def start_gateway(triton, logs: Path, **env: str) -> tuple[object, str]:
    """``make serve``'s gateway in front of ``triton`` on a free port, started; returns ``(child, url)``.
    The caller waits for its /health and stops it."""
    from launcher.supervisor import gateway_child

    port = free_port()
    gateway = gateway_child(triton.grpc_port, logs / "gateway.log", GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port),
                            GATEWAY_TRITON_URL=triton.grpc_url, **env)
    gateway.start()
    return gateway, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def running_stack(repository: Path, logs: Path, log=print, models: tuple[str, ...] = ("whisper",),
                  **gateway_env: str) -> Iterator[tuple[object, object, str]]:
    """tritonserver serving ``models`` (default: the ``whisper`` model) of ``repository`` and a gateway in
    front of it, as ``make serve`` runs them; yields ``(triton, gateway, gateway_url)`` and stops both."""
    from launcher.triton import TritonServer

    logs.mkdir(parents=True, exist_ok=True)
    triton = TritonServer(repository, free_port(), free_port(), free_port(), models=list(models),
                          log_path=logs / "tritonserver.log")
    gateway = None
    try:
        log("starting tritonserver")
        triton.start()
        triton.wait_ready(900)
        gateway, url = start_gateway(triton, logs, **gateway_env)
        if not wait_http(f"{url}/health", 120, gateway.alive):
            raise SystemExit(f"the gateway did not answer /health in 120 s (see {logs / 'gateway.log'})")
        yield triton, gateway, url
    finally:
        if gateway is not None:
            gateway.stop(10)
        triton.stop(30)


def stack_arguments(parser: argparse.ArgumentParser) -> None:
    """``--audio-dir``, ``--repository`` and ``--out``, as the benchmarks of the whole stack take them."""
    parser.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--out", type=Path, default=None)


def results_dir(args: argparse.Namespace, name: str) -> Path:
    """Where a benchmark writes: ``--out``, or benchmarks/results/<date>-<machine>-<name>; exits when
    ``--audio-dir`` has no manifest.tsv."""
    from .run import machine_tag

    if not (args.audio_dir / "manifest.tsv").is_file():
        raise SystemExit(f"no manifest.tsv in {args.audio_dir} (set --audio-dir or WHISPER_TEST_AUDIO)")
    return args.out or ROOT / "benchmarks" / "results" / f"{dt.date.today().isoformat()}-{machine_tag()}-{name}"


async def send_in_real_time(ws, samples, rate: int, step: int, t0: float, message: Callable[[object], object]) -> None:
    """``samples`` to the WebSocket ``ws`` in pieces of ``step`` samples, each sent as ``message(piece)`` once
    its audio would have been spoken, ``t0`` (``time.monotonic()``) being the start of the first piece."""
    import time

    for i in range(0, samples.size, step):
        piece = samples[i:i + step]
        delay = t0 + (i + piece.size) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await ws.send(message(piece))
