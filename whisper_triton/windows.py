"""Cutting audio of any length into decoding windows of at most 30 s.

With VAD on, Silero VAD finds the speech; neighbouring speech spans are merged greedily into windows
that span at most ``max_window_s`` of the original timeline, so a window's timestamps map back by
adding its start. Silence yields no window at all, and so no hallucinated words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import SAMPLE_RATE

MAX_WINDOW_S = 30.0


@dataclass(frozen=True)
class Span:
    start: int  # samples
    end: int

    @property
    def samples(self) -> int:
        return self.end - self.start

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE


def merge_spans(spans: list[Span], max_samples: int) -> list[Span]:
    """Greedily merge sorted speech spans into windows no longer than ``max_samples``.

    A span longer than the limit on its own is cut into pieces of ``max_samples``.
    """
    windows: list[Span] = []
    current: Span | None = None
    for span in sorted(spans, key=lambda s: s.start):
        for piece in _split_long(span, max_samples):
            if current is not None and piece.end - current.start <= max_samples:
                current = Span(current.start, max(current.end, piece.end))
            else:
                if current is not None:
                    windows.append(current)
                current = piece
    if current is not None:
        windows.append(current)
    return windows


def _split_long(span: Span, max_samples: int) -> list[Span]:
    return [Span(s, min(s + max_samples, span.end)) for s in range(span.start, span.end, max_samples)]


def fixed_windows(n_samples: int, max_samples: int) -> list[Span]:
    """Windows without VAD: consecutive slices of ``max_samples``."""
    return _split_long(Span(0, n_samples), max_samples) if n_samples else []


def speech_spans(audio: np.ndarray, threshold: float = 0.5) -> list[Span]:
    """Speech spans from Silero VAD (the ONNX model bundled with faster-whisper)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        threshold=threshold,
        min_speech_duration_ms=150,
        min_silence_duration_ms=500,
        speech_pad_ms=400,
        max_speech_duration_s=MAX_WINDOW_S - 1.0,
    )
    stamps = get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)
    return [Span(int(s["start"]), min(int(s["end"]), len(audio))) for s in stamps]


def plan_windows(audio: np.ndarray, vad: bool, threshold: float = 0.5, max_window_s: float = MAX_WINDOW_S) -> list[tuple[Span, list[Span]]]:
    """Windows, each with the speech spans inside it (the window itself when VAD is off)."""
    max_samples = int(max_window_s * SAMPLE_RATE)
    if not vad:
        return [(w, [w]) for w in fixed_windows(len(audio), max_samples)]
    spans = [piece for span in speech_spans(audio, threshold) for piece in _split_long(span, max_samples)]
    return [(w, [s for s in spans if s.start >= w.start and s.end <= w.end]) for w in merge_spans(spans, max_samples)]


def uncovered(speech: list[Span], covered: list[Span], min_samples: int, join_samples: int) -> list[Span]:
    """Parts of ``speech`` outside every ``covered`` span, joined when closer than ``join_samples``,
    keeping only those of at least ``min_samples``: speech the decoder skipped."""
    gaps: list[Span] = []
    for span in speech:
        start = span.start
        for cov in sorted(covered, key=lambda c: c.start):
            if cov.end <= start or cov.start >= span.end:
                continue
            if cov.start > start:
                gaps.append(Span(start, cov.start))
            start = max(start, cov.end)
        if start < span.end:
            gaps.append(Span(start, span.end))
    joined: list[Span] = []
    for gap in gaps:
        if joined and gap.start - joined[-1].end < join_samples:
            joined[-1] = Span(joined[-1].start, gap.end)
        else:
            joined.append(gap)
    return [g for g in joined if g.samples >= min_samples]
