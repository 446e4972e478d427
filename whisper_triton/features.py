"""Log-mel features for a batch of windows, padded to the batch's context rather than to 30 s.

Whisper was trained on 30 s (3000-frame) inputs; CTranslate2's encoder also accepts fewer frames.
Padding a batch only to its longest window (with a floor, because very short contexts make some clips
collapse into repetition) is the largest single speed lever on CPU. The audio itself is zero-padded
before the STFT, as Whisper does, so padded frames look like silence to the model.
"""

from __future__ import annotations

import math

import numpy as np

from .types import SAMPLE_RATE

HOP_LENGTH = 160
FULL_CONTEXT_FRAMES = 3000


def frames_for(samples: int) -> int:
    return math.ceil(samples / HOP_LENGTH)


def context_frames(longest_samples: int, floor_s: float, full: bool = False, margin_s: float = 0.0) -> int:
    """Frames for a batch whose longest window has ``longest_samples`` samples (even, <= 3000).

    The context is the longest window plus ``margin_s`` of trailing silence, and at least ``floor_s``.
    """
    if full:
        return FULL_CONTEXT_FRAMES
    wanted = max(frames_for(longest_samples) + int(margin_s * 100), int(floor_s * 100))
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


def token_budget(window_samples: int, tokens_per_s: float, prompt_tokens: int, model_max: int) -> int:
    """``max_length`` for decoding a window of ``window_samples``: ``tokens_per_s`` per second of audio plus
    the prompt and a little slack, at most the model's own limit; 0 = no budget (the model's limit).

    Real speech stays far below ~12 tokens/s (text and timestamp tokens together); a window that
    collapses into repetition runs on to the model's 448 tokens. A budget stops it early, and the
    engine then re-decodes it as a failed window.
    """
    if tokens_per_s <= 0:
        return model_max
    seconds = window_samples / SAMPLE_RATE
    return min(model_max, prompt_tokens + 16 + math.ceil(seconds * tokens_per_s))
