"""Whisper's own decoding checks, used to catch windows that collapsed (e.g. into repetition).

A window fails when its text compresses too well (repetition), is one phrase said twice or more (the
short-text form of the same loop), is a translation that is not in English (Whisper's translate task
sometimes copies the source script), or its average log-probability is too low; a window whose no-speech probability is high *and* whose log-probability is low is silence, not
a failure. Failed windows are re-decoded at full context and then at rising temperatures.
"""

from __future__ import annotations

import enum
import unicodedata
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
    max_non_latin: float = 0.1  # translations: the share of non-Latin letters above which it is not English


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


def non_latin_share(text: str) -> float:
    """The share of the text's letters that are not Latin script (0.0 for a text without letters)."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    latin = sum(1 for ch in letters if ch.isascii() or unicodedata.name(ch, "").startswith("LATIN"))
    return 1.0 - latin / len(letters)


def is_repetitive(text: str, config: GuardConfig) -> bool:
    """The repetition half of the checks: compresses too well, or one phrase said over and over."""
    return score(text, 0.0, 0.0, config).repetitive


@dataclass(frozen=True)
class Attempt:
    """How one decoding of a window scored, for choosing between attempts."""

    verdict: Verdict
    repetitive: bool  # failed by repetition (or ran out of its token budget), not only by low confidence
    avg_logprob: float
    ratio: float = 0.0  # compression ratio of the text
    wrong_language: bool = False  # a translation that is not in English

    @property
    def hard_failure(self) -> bool:
        """Failed in a way a higher log-probability does not redeem."""
        return self.verdict is Verdict.RETRY and (self.repetitive or self.wrong_language)


def score(text: str, avg_logprob: float, no_speech_prob: float, config: GuardConfig, english: bool = False) -> Attempt:
    """Every check on one decoded text, each computed once. ``english``: the text must be English (the
    translate task), so one whose letters are more than ``max_non_latin`` non-Latin fails."""
    ratio = compression_ratio(text)
    if no_speech_prob > config.no_speech_threshold and avg_logprob < config.log_prob_threshold:
        return Attempt(Verdict.SILENCE, False, avg_logprob, ratio)
    if ratio > config.compression_ratio_threshold or is_repeated_phrase(text):
        return Attempt(Verdict.RETRY, True, avg_logprob, ratio)
    if english and non_latin_share(text) > config.max_non_latin:
        return Attempt(Verdict.RETRY, False, avg_logprob, ratio, wrong_language=True)
    verdict = Verdict.RETRY if avg_logprob < config.log_prob_threshold else Verdict.OK
    return Attempt(verdict, False, avg_logprob, ratio)


def assess(text: str, avg_logprob: float, no_speech_prob: float, config: GuardConfig) -> Verdict:
    return score(text, avg_logprob, no_speech_prob, config).verdict


def better(candidate: Attempt, incumbent: Attempt | None) -> bool:
    """Keep the best attempt: passing (or silence) beats failing; among failures, an unsure text beats
    a loop or an untranslated one (faster-whisper's rule: prefer results under the compression-ratio
    threshold), because their log-probability is high exactly when they are wrong; then the higher
    log-prob wins."""
    if incumbent is None:
        return True

    def rank(a: Attempt) -> int:
        return 0 if a.verdict is not Verdict.RETRY else (2 if a.hard_failure else 1)

    if rank(candidate) != rank(incumbent):
        return rank(candidate) < rank(incumbent)
    return candidate.avg_logprob > incumbent.avg_logprob
