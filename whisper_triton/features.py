"""Log-mel features for a batch of windows, padded to the batch's context rather than to 30 s.

Whisper was trained on 30 s (3000-frame) inputs; CTranslate2's encoder also accepts fewer frames.
Padding a batch only to its longest window (with a floor, because very short contexts make some clips
collapse into repetition) is the largest single speed lever on CPU. The audio itself is zero-padded
before the STFT, as Whisper does, so padded frames look like silence to the model.
"""

from __future__ import annotations

import math

import numpy as np

HOP_LENGTH = 160
FULL_CONTEXT_FRAMES = 3000


def frames_for(samples: int) -> int:
    return math.ceil(samples / HOP_LENGTH)


def context_frames(longest_samples: int, floor_s: float, full: bool = False) -> int:
    """Frames for a batch whose longest window has ``longest_samples`` samples (even, <= 3000)."""
    if full:
        return FULL_CONTEXT_FRAMES
    wanted = max(frames_for(longest_samples), int(floor_s * 100))
    wanted += wanted % 2  # the encoder's stride-2 convolution halves the frames
    return min(wanted, FULL_CONTEXT_FRAMES)


def batch_features(extractor, windows: list[np.ndarray], n_frames: int) -> np.ndarray:
    """Stack features of ``windows`` (float32 audio) into ``[batch, n_mels, n_frames]``."""
    out = []
    n_samples = n_frames * HOP_LENGTH
    for audio in windows:
        padded = np.zeros(n_samples, dtype=np.float32)
        padded[: min(len(audio), n_samples)] = audio[:n_samples]
        mel = extractor(padded, padding=HOP_LENGTH)
        out.append(mel[:, :n_frames])
    return np.ascontiguousarray(np.stack(out).astype(np.float32))
