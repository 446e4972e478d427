"""The engine's own request and result types; the contract they travel in is ``protocol``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .protocol import SAMPLE_RATE, Options, Segment


@dataclass
class TranscriptionRequest:
    audio: np.ndarray  # float32 mono, 16 kHz
    options: Options = field(default_factory=Options)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass
class Transcription:
    text: str
    segments: list[Segment]
    language: str
    duration: float
    language_probability: float = 1.0
    fallbacks: int = 0  # windows re-decoded because a guard fired
