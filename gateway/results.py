"""The gateway's typed transcription result. Its parts (``Segment``, ``Word``) and the request options
(``Options``) are the Triton contract's own, from ``whisper_triton.protocol``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from whisper_triton.protocol import Options, Result, Segment, Word

__all__ = ["Options", "Segment", "Transcription", "Word"]


@dataclass(frozen=True)
class Transcription(Result):
    """A model's answer (the contract's ``Result``: times in seconds on the original timeline), with the
    task and model that made it."""

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
