"""What a live session reports, in order, to its protocol adapter (times in seconds on the session's
timeline: 0 is its first sample), and the decoder it calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from gateway.results import Options, Transcription


@dataclass(frozen=True)
class SpeechStarted:
    item_id: str
    start_s: float


@dataclass(frozen=True)
class SpeechStopped:
    item_id: str
    end_s: float


@dataclass(frozen=True)
class Committed:
    item_id: str
    previous_item_id: str | None
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Delta:
    item_id: str
    delta: str  # newly stable text ("" when nothing new agreed)
    text: str  # the whole current hypothesis of the open turn
    audio_end_s: float
    compute_s: float


@dataclass(frozen=True)
class Completed:
    item_id: str
    result: Transcription  # times relative to start_s
    start_s: float
    end_s: float
    compute_s: float


@dataclass(frozen=True)
class Failed:
    item_id: str
    error: Exception


@dataclass(frozen=True)
class Cleared:
    pass


Event = SpeechStarted | SpeechStopped | Committed | Delta | Completed | Failed | Cleared
# (samples, options, model, conversion, final) -> the transcription, or None: a partial skipped, busy
Decoder = Callable[[np.ndarray, Options, str, str, bool], Awaitable[Transcription | None]]


class EmptyBuffer(ValueError):
    """A commit with less than 100 ms of uncommitted audio."""
