"""Whisper's own decoding checks, used to catch windows that collapsed (e.g. into repetition).

A window fails when its text compresses too well (repetition), is one phrase said twice or more (the
short-text form of the same loop), or its average log-probability is too low; a window whose no-speech probability is high *and* whose log-probability is low is silence, not
a failure. Failed windows are re-decoded at full context and then at rising temperatures.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass


class Verdict(enum.Enum):
    OK = "ok"
    SILENCE = "silence"
    RETRY = "retry"


@dataclass(frozen=True)
class GuardConfig:
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    if not data:
        return 0.0
    return len(data) / len(zlib.compress(data))


def is_repeated_phrase(text: str, min_words: int = 3) -> bool:
    """True when the whole text is one phrase of at least ``min_words`` words said two or more times
    ("8. The Press Yard 8. The Press Yard"): the short-window form of Whisper's repetition loop, which
    the compression ratio misses because zlib gains nothing on a short string."""
    words = [w.strip(".,!?;:。，！？、\"'").lower() for w in text.split()]
    words = [w for w in words if w]
    n = len(words)
    for size in range(min_words, n // 2 + 1):
        if n % size == 0 and words == words[:size] * (n // size):
            return True
    return False


def assess(text: str, avg_logprob: float, no_speech_prob: float, config: GuardConfig) -> Verdict:
    if no_speech_prob > config.no_speech_threshold and avg_logprob < config.log_prob_threshold:
        return Verdict.SILENCE
    if compression_ratio(text) > config.compression_ratio_threshold or is_repeated_phrase(text):
        return Verdict.RETRY
    if avg_logprob < config.log_prob_threshold:
        return Verdict.RETRY
    return Verdict.OK


def better(candidate: tuple[Verdict, float], incumbent: tuple[Verdict, float] | None) -> bool:
    """Keep the best attempt: passing (or silence) beats failing; then the higher log-prob wins.

    Each tuple is (verdict, avg_logprob).
    """
    if incumbent is None:
        return True
    rank = {Verdict.OK: 0, Verdict.SILENCE: 0, Verdict.RETRY: 1}
    c_verdict, c_logprob = candidate
    i_verdict, i_logprob = incumbent
    if rank[c_verdict] != rank[i_verdict]:
        return rank[c_verdict] < rank[i_verdict]
    return c_logprob > i_logprob
