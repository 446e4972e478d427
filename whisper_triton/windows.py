"""Cutting audio of any length into decoding windows of at most 30 s.

Two modes, as faster-whisper users know them (``vad_filter``):

- **off** (the default): every sample is decoded, as faster-whisper's ``transcribe`` does. A clip of up to
  30 s is one window, exactly as faster-whisper sees it. Longer audio is cut into windows of at most 30 s
  at pauses that Silero VAD finds (the middle of the last pause before 30 s), so the VAD only *places* the
  cuts and never decides what is speech: whispered or quiet speech the VAD misses is still decoded, and
  silence is left to Whisper's own no-speech probability.
- **on**: only the speech the VAD finds is decoded; neighbouring speech spans are merged greedily into
  windows that span at most ``max_window_s`` of the original timeline, and silence yields no window.

Either way a window's timestamps map back by adding its start, and each window carries the VAD speech
spans inside it, which the engine uses to find speech the decoder skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .protocol import SAMPLE_RATE

MAX_WINDOW_S = 30.0


@dataclass(frozen=True)
class Span:
    start: int  # samples
    end: int

    @property
    def samples(self) -> int:
        return self.end - self.start


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


def cut_at_pauses(n_samples: int, speech: list[Span], max_samples: int, min_samples: int) -> list[Span]:
    """Windows that tile ``[0, n_samples)``, each at most ``max_samples`` long, cut in the middle of the last
    pause (a gap between ``speech`` spans) that leaves a window of at least ``min_samples``; where no pause
    fits, the cut falls at ``max_samples``."""
    windows: list[Span] = []
    spans = sorted(speech, key=lambda s: s.start) + [Span(n_samples, n_samples)]
    start = 0
    while n_samples - start > max_samples:
        limit, cut, speech_end = start + max_samples, start + max_samples, start
        for span in spans:
            if span.end <= start and span.start < n_samples:
                continue
            gap_start, gap_end = max(speech_end, start), min(span.start, limit)
            if gap_end > gap_start and (gap_start + gap_end) // 2 >= start + min_samples:
                cut = (gap_start + gap_end) // 2
            if span.start >= limit:
                break
            speech_end = max(speech_end, span.end)
        windows.append(Span(start, cut))
        start = cut
    if start < n_samples:
        windows.append(Span(start, n_samples))
    return windows


def _inside(spans: list[Span], window: Span) -> list[Span]:
    return [Span(max(s.start, window.start), min(s.end, window.end)) for s in spans if s.end > window.start and s.start < window.end]


def plan_windows(audio: np.ndarray, vad_filter: bool, threshold: float = 0.5,
                 max_window_s: float = MAX_WINDOW_S) -> list[tuple[Span, list[Span] | None]]:
    """Windows, each with the VAD speech spans inside it, or None where no VAD ran (a clip of up to 30 s
    without ``vad_filter``: one window, as faster-whisper decodes it). See the module docstring."""
    max_samples = int(max_window_s * SAMPLE_RATE)
    if not vad_filter and len(audio) <= max_samples:
        return [(Span(0, len(audio)), None)] if len(audio) else []
    spans = [piece for span in speech_spans(audio, threshold) for piece in _split_long(span, max_samples)]
    if vad_filter:
        return [(w, _inside(spans, w)) for w in merge_spans(spans, max_samples)]
    return [(w, _inside(spans, w)) for w in cut_at_pauses(len(audio), spans, max_samples, max_samples // 3)]


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
