"""Speech regions (Silero VAD) cut into the encoder's 1.6 s windows, each standing for a span of speech.

Windows start every ``step_s`` inside a region (the last one ends at the region's end); a region
shorter than a window gets one window centred on it, padded with the audio around it. Each window
stands for the speech nearest its centre: the spans of one region meet half-way between two
centres and together cover the region, so a label per window is a label for all the speech.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .encoder import SAMPLE_RATE, WINDOW_SAMPLES


@dataclass(frozen=True)
class Window:
    start: int  # samples of audio fed to the encoder: [start, start + WINDOW_SAMPLES)
    span: tuple[float, float]  # seconds of speech this window's label stands for


def speech_regions(audio: np.ndarray, threshold: float = 0.5, min_silence_ms: int = 300,
                   pad_ms: int = 150) -> list[tuple[int, int]]:
    """Speech as (start, end) samples, from the Silero VAD that ships with faster-whisper."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(threshold=threshold, min_speech_duration_ms=200, min_silence_duration_ms=min_silence_ms,
                         speech_pad_ms=pad_ms)
    stamps = get_speech_timestamps(np.asarray(audio, dtype=np.float32), options, sampling_rate=SAMPLE_RATE)
    return [(int(s["start"]), min(int(s["end"]), len(audio))) for s in stamps]


def plan(regions: list[tuple[int, int]], n_samples: int, step_s: float) -> list[Window]:
    step = max(1, int(step_s * SAMPLE_RATE))
    windows: list[Window] = []
    for start, end in regions:
        if end - start <= WINDOW_SAMPLES:
            first = max(0, min((start + end - WINDOW_SAMPLES) // 2, n_samples - WINDOW_SAMPLES))
            starts = [first]
        else:
            starts = list(range(start, end - WINDOW_SAMPLES, step)) + [end - WINDOW_SAMPLES]
        centres = [s + WINDOW_SAMPLES / 2 for s in starts]
        bounds = [start] + [(a + b) / 2 for a, b in zip(centres, centres[1:])] + [end]
        for i, s in enumerate(starts):
            windows.append(Window(max(0, s), (bounds[i] / SAMPLE_RATE, bounds[i + 1] / SAMPLE_RATE)))
    return windows


def cut(audio: np.ndarray, windows: list[Window]) -> np.ndarray:
    """[n, WINDOW_SAMPLES] audio for the windows (zero-padded past the end of a short clip)."""
    out = np.zeros((len(windows), WINDOW_SAMPLES), dtype=np.float32)
    for i, w in enumerate(windows):
        piece = audio[w.start:w.start + WINDOW_SAMPLES]
        out[i, :len(piece)] = piece
    return out
