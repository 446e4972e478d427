"""Typed requests and results shared by the engine, the Triton model and the tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

SAMPLE_RATE = 16000
TASKS = ("transcribe", "translate")


class InvalidRequest(ValueError):
    """A request that cannot be served as sent; it fails alone (Triton INVALID_ARG)."""


@dataclass(frozen=True)
class DecodeOptions:
    language: Optional[str] = None  # None = detect
    task: str = "transcribe"
    prompt: str = ""
    word_timestamps: bool = False
    beam_size: int = 0  # 0 = the model's default
    temperature: float = 0.0
    vad_filter: Optional[bool] = None  # None = the model's vad_filter parameter


@dataclass
class TranscriptionRequest:
    audio: np.ndarray  # float32 mono, 16 kHz
    options: DecodeOptions = field(default_factory=DecodeOptions)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    words: Optional[list[Word]] = None

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.words is None:
            data.pop("words")
        return data


@dataclass
class Transcription:
    text: str
    segments: list[Segment]
    language: str
    duration: float
    language_probability: float = 1.0
    fallbacks: int = 0  # windows re-decoded because a guard fired
