"""LocalAgreement-2 for streaming transcription: pure state, no I/O.

Each step the caller transcribes the current audio buffer (which starts at ``buffer_start`` on the
stream's timeline) and feeds the hypothesis -- timed words already shifted onto the stream timeline --
to :meth:`LocalAgreement.update`. A word is committed once two consecutive hypotheses agree on it: the
longest common prefix of the previous and the current uncommitted hypothesis is committed, the rest
stays tentative.

The committed text that has left the buffer is the prompt for the next step (the words still inside the
buffer are transcribed again, so they must not be in the prompt). After each step the machine decides
where to trim the buffer: once it is longer than ``trim_after_s``, at the last committed sentence end
(a word ending in ``. ? !`` or their CJK forms) or, failing that, at the last committed segment end; past
``max_buffer_s`` it trims at the last committed word whatever it is and, if nothing there is committed
(a hypothesis that never stabilises), force-commits the hypothesis so the buffer cannot grow without
bound. Modelled on whisper_streaming (Machacek et al., 2023) ``HypothesisBuffer``/``OnlineASRProcessor``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

SENTENCE_END = tuple(".?!。？！…")
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)


@dataclass(frozen=True)
class TimedWord:
    word: str  # as the model writes it, leading space included ("" joins words into text)
    start: float  # seconds on the stream timeline
    end: float
    probability: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], offset: float = 0.0) -> "TimedWord":
        return cls(str(data.get("word", "")), float(data.get("start", 0.0)) + offset,
                   float(data.get("end", 0.0)) + offset, float(data.get("probability", 0.0)))

    def as_dict(self) -> dict:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3)}

    @property
    def key(self) -> str:
        return normalize_word(self.word)


def normalize_word(word: str) -> str:
    """Comparison key: case, width and edge punctuation do not make two hypotheses disagree."""
    text = unicodedata.normalize("NFKC", word).strip().lower()
    return _EDGE_PUNCT.sub("", text) or text


def join_words(words: Iterable[TimedWord]) -> str:
    return "".join(w.word for w in words).strip()


def is_sentence_end(word: TimedWord) -> bool:
    return word.word.rstrip().endswith(SENTENCE_END)


@dataclass
class StepResult:
    committed: list[TimedWord]  # newly committed this step, in order
    tentative: list[TimedWord]  # the current uncommitted tail of the hypothesis
    trim_to: float | None = None  # new buffer start (stream seconds), or None to keep the buffer

    @property
    def committed_text(self) -> str:
        return join_words(self.committed)

    @property
    def tentative_text(self) -> str:
        return join_words(self.tentative)


@dataclass
class LocalAgreement:
    """LocalAgreement-2 over timed words, plus the buffer-trimming policy.

    ``trim_after_s``: trim at a committed sentence/segment end once the buffer is longer than this.
    ``max_buffer_s``: hard cap; past it the buffer is cut at the last committed word (force-committing
    the hypothesis when nothing is committed). ``prompt_chars``: how much committed text is the prompt.
    """

    trim_after_s: float = 15.0
    max_buffer_s: float = 30.0
    prompt_chars: int = 200
    overlap_tolerance_s: float = 0.1  # words starting this much before the last commit may still be new
    max_ngram: int = 5

    committed: list[TimedWord] = field(default_factory=list)
    buffer_start: float = 0.0
    _previous: list[TimedWord] = field(default_factory=list)  # the last uncommitted hypothesis

    def __post_init__(self) -> None:
        if self.max_buffer_s < self.trim_after_s:
            raise ValueError("max_buffer_s must be at least trim_after_s")

    # -- reading -------------------------------------------------------------------------------
    @property
    def last_committed_end(self) -> float:
        return self.committed[-1].end if self.committed else 0.0

    @property
    def text(self) -> str:
        return join_words(self.committed)

    @property
    def tentative(self) -> list[TimedWord]:
        return list(self._previous)

    @property
    def prompt(self) -> str:
        """Committed text that is no longer in the buffer, its last ``prompt_chars`` characters."""
        outside = [w for w in self.committed if w.end <= self.buffer_start + 1e-6]
        text = join_words(outside)
        if len(text) <= self.prompt_chars:
            return text
        tail = text[-self.prompt_chars:]
        cut = tail.find(" ")  # do not start the prompt in the middle of a word
        return tail[cut + 1:] if 0 <= cut < len(tail) - 1 else tail

    # -- stepping ------------------------------------------------------------------------------
    def _fresh(self, hypothesis: Sequence[TimedWord]) -> list[TimedWord]:
        """The part of ``hypothesis`` after what is already committed."""
        limit = self.last_committed_end - self.overlap_tolerance_s
        words = [w for w in hypothesis if w.word.strip() and (not self.committed or w.start > limit)]
        if not words or not self.committed:
            return words
        # A word re-transcribed at the buffer edge may straddle the last commit: drop the longest
        # n-gram that repeats the committed tail (whisper_streaming does the same).
        if abs(words[0].start - self.last_committed_end) < 1.0:
            tail = [w.key for w in self.committed[-self.max_ngram:]]
            for n in range(min(len(tail), len(words), self.max_ngram), 0, -1):
                if tail[-n:] == [w.key for w in words[:n]]:
                    return words[n:]
        return words

    def update(self, hypothesis: Sequence[TimedWord], buffer_end: float,
               segment_ends: Sequence[float] = ()) -> StepResult:
        """Feed one hypothesis for the buffer ``[buffer_start, buffer_end]`` (stream seconds).

        ``segment_ends``: the model's segment end times on the stream timeline (trim candidates).
        Returns the newly committed words, the tentative tail and, when the buffer should shrink,
        ``trim_to`` (already applied to ``buffer_start``; the caller drops the audio before it).
        """
        new = self._fresh(hypothesis)
        agreed = 0
        for old, cur in zip(self._previous, new):
            if old.key != cur.key:
                break
            agreed += 1
        newly = list(new[:agreed])  # the newer copy: its timing and punctuation saw more audio
        self.committed.extend(newly)
        self._previous = list(new[agreed:])
        trim_to = self._trim_point(buffer_end, segment_ends)
        if trim_to is not None and trim_to > self.buffer_start:
            forced = [w for w in self._previous if w.end <= trim_to + 1e-6]
            if forced:  # only under the hard cap: the words before the cut are committed as they are
                self.committed.extend(forced)
                newly.extend(forced)
                self._previous = [w for w in self._previous if w.end > trim_to + 1e-6]
            self.buffer_start = trim_to
        else:
            trim_to = None
        return StepResult(newly, list(self._previous), trim_to)

    def _trim_point(self, buffer_end: float, segment_ends: Sequence[float]) -> float | None:
        length = buffer_end - self.buffer_start
        if length <= self.trim_after_s:
            return None
        in_buffer = [w for w in self.committed if w.end > self.buffer_start + 1e-6]
        # 1) the last committed sentence end; 2) the last segment end that is covered by commits.
        sentence_ends = [w.end for w in in_buffer if is_sentence_end(w)]
        if sentence_ends:
            return sentence_ends[-1]
        committed_end = self.last_committed_end
        covered = [e for e in segment_ends if self.buffer_start < e <= committed_end + 0.05]
        if covered:
            return min(max(covered), committed_end)
        if length <= self.max_buffer_s:
            return None
        # 3) hard cap: cut at the last committed word, or force the hypothesis through.
        if in_buffer:
            return in_buffer[-1].end
        if self._previous:
            # Keep the newest few seconds so a word being spoken at the edge is not cut in half.
            keep_from = buffer_end - (self.max_buffer_s - self.trim_after_s) / 2
            ends = [w.end for w in self._previous if w.end <= keep_from]
            if ends:
                return ends[-1]
        return buffer_end - min(self.trim_after_s, 5.0)  # silence or noise: drop the old audio

    def finish(self) -> list[TimedWord]:
        """End of stream: the tentative words of the last hypothesis are committed as they are."""
        rest = self._previous
        self.committed.extend(rest)
        self._previous = []
        return rest

    def flush_final(self, hypothesis: Sequence[TimedWord]) -> list[TimedWord]:
        """End of stream with a last hypothesis over the whole remaining buffer: commit all of it."""
        new = self._fresh(hypothesis)
        self.committed.extend(new)
        self._previous = []
        return new


def words_from_segments(segments: Sequence[Mapping[str, Any]], offset: float) -> tuple[list[TimedWord], list[float]]:
    """Triton's SEGMENTS (times relative to the buffer) -> stream-timeline words and segment ends."""
    words: list[TimedWord] = []
    ends: list[float] = []
    for segment in segments:
        seg_words = segment.get("words") or []
        words.extend(TimedWord.from_dict(w, offset) for w in seg_words)
        if seg_words:
            ends.append(float(segment.get("end", 0.0)) + offset)
    return words, ends
