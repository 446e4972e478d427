"""Typed transcription results, as Triton returns them (times in seconds on the original timeline)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable


@dataclass(frozen=True)
class Options:
    """Per-request decoding options; every field is sent to Triton on every request."""

    language: str = ""  # "" = detect
    task: str = "transcribe"  # or "translate"
    prompt: str = ""
    word_timestamps: bool = False
    beam_size: int = 0  # 0 = the model's default
    temperature: float = 0.0
    vad_filter: bool | None = None  # None = the model's default (config.pbtxt vad_filter)


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float = 0.0


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0
    tokens: tuple[int, ...] = ()
    words: tuple[Word, ...] | None = None
    speaker: str | None = None  # set by diarization (gateway.diarization)

    @classmethod
    def from_dict(cls, data: dict[str, Any], index: int) -> "Segment":
        words = data.get("words")
        return cls(
            id=int(data.get("id", index)),
            start=float(data.get("start", 0.0)),
            end=float(data.get("end", 0.0)),
            text=str(data.get("text", "")),
            avg_logprob=float(data.get("avg_logprob", 0.0)),
            no_speech_prob=float(data.get("no_speech_prob", 0.0)),
            compression_ratio=float(data.get("compression_ratio", 0.0)),
            temperature=float(data.get("temperature", 0.0)),
            tokens=tuple(int(t) for t in data.get("tokens") or ()),
            words=None if words is None else tuple(
                Word(str(w.get("word", "")), float(w.get("start", 0.0)), float(w.get("end", 0.0)),
                     float(w.get("probability", 0.0)))
                for w in words
            ),
            speaker=data.get("speaker") or None,
        )


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    duration: float
    segments: tuple[Segment, ...] = field(default_factory=tuple)
    task: str = "transcribe"
    model: str = ""

    @property
    def speakers(self) -> list[str]:
        """The speakers of the segments, in order of first appearance (empty unless diarized)."""
        return list(dict.fromkeys(s.speaker for s in self.segments if s.speaker))

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or ())]

    def map_text(self, fn: Callable[[str], str]) -> "Transcription":
        """The same result with ``fn`` applied to the text, every segment and every word."""
        segments = tuple(
            replace(
                s,
                text=fn(s.text),
                words=None if s.words is None else tuple(replace(w, word=fn(w.word)) for w in s.words),
            )
            for s in self.segments
        )
        return replace(self, text=fn(self.text), segments=segments)
