"""Shared test helpers: the speech manifest, WER/CER after Whisper-style normalisation, audio I/O."""

from __future__ import annotations

import csv
import os
import time
from functools import lru_cache
from pathlib import Path

import jiwer
import numpy as np
import opencc
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

ROOT = Path(__file__).resolve().parents[2]
SHARED_AUDIO = Path(os.environ.get("WHISPER_TEST_AUDIO", ROOT.parent / "shared" / "audio"))

_english = EnglishTextNormalizer()
_basic = BasicTextNormalizer()
_to_simplified = opencc.OpenCC("t2s")


def shared_audio_available() -> bool:
    return (SHARED_AUDIO / "manifest.tsv").is_file()


@lru_cache(maxsize=1)
def load_manifest() -> list[dict]:
    with open(SHARED_AUDIO / "manifest.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    for row in rows:
        row["duration_seconds"] = float(row["duration_seconds"])
        row["path"] = SHARED_AUDIO / row["file"]
    return rows


def clip(file: str) -> dict:
    for row in load_manifest():
        if row["file"] == file:
            return row
    raise KeyError(file)


@lru_cache(maxsize=64)
def audio_of(file: str) -> np.ndarray:
    from client.audio import decode_file

    return decode_file(str(SHARED_AUDIO / file))


def normalize_en(text: str) -> str:
    return " ".join(_english(text).split())


def normalize_zh(text: str) -> str:
    """Simplified script, no punctuation or spaces: one token per character for CER."""
    return "".join(_basic(_to_simplified.convert(text)).split())


def wer(reference: str | list[str], hypothesis: str | list[str]) -> float:
    refs = [reference] if isinstance(reference, str) else reference
    hyps = [hypothesis] if isinstance(hypothesis, str) else hypothesis
    return jiwer.wer([normalize_en(r) for r in refs], [normalize_en(h) or "<empty>" for h in hyps])


def cer(reference: str | list[str], hypothesis: str | list[str]) -> float:
    refs = [reference] if isinstance(reference, str) else reference
    hyps = [hypothesis] if isinstance(hypothesis, str) else hypothesis
    return jiwer.cer([normalize_zh(r) for r in refs], [normalize_zh(h) or "?" for h in hyps])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` held, polled: for state in another process (a server coming up), which
    sends no event to wait on. Raises ``TimeoutError`` naming ``what``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start
