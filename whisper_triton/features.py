"""Log-mel features for a batch of windows, padded to the batch's encoder context.

Each window's features are computed exactly as faster-whisper's ``transcribe`` computes a clip's: the
log-mel of the window's audio (with one hop of zero samples after it), the last frame dropped, then
zero-padded *in the feature domain* up to the context (``pad_or_trim``). At the full 30 s context a
window of up to 30 s therefore reaches the encoder bit for bit as faster-whisper sends it.

CTranslate2's encoder also accepts fewer than 3000 frames; a shorter context is cheaper but is not what
Whisper was trained on, so the engine only uses one where it has been shown safe (see ``engine``).
"""

from __future__ import annotations

import math

import numpy as np

from .protocol import SAMPLE_RATE

HOP_LENGTH = 160
FULL_CONTEXT_FRAMES = 3000


def frames_for(samples: int) -> int:
    return math.ceil(samples / HOP_LENGTH)


def context_frames(longest_samples: int, floor_s: float, full: bool = False, margin_s: float = 0.0,
                   step_s: float = 0.0) -> int:
    """Encoder frames for a window of ``longest_samples`` samples (even, <= 3000).

    The context is the window plus ``margin_s`` of trailing silence, at least ``floor_s``, rounded up to a
    multiple of ``step_s``: windows are batched only with others of the same context, so a window's text
    does not depend on which windows share its batch.
    """
    if full:
        return FULL_CONTEXT_FRAMES
    wanted = max(frames_for(longest_samples) + int(margin_s * 100), int(floor_s * 100))
    step = int(step_s * 100)
    if step > 0:
        wanted = -(-wanted // step) * step
    wanted += wanted % 2  # the encoder's stride-2 convolution halves the frames
    return min(wanted, FULL_CONTEXT_FRAMES)


def window_features(extractor, audio: np.ndarray) -> np.ndarray:
    """``[n_mels, frames]`` of one window, as faster-whisper computes a clip's (content frames only)."""
    return extractor(np.asarray(audio, dtype=np.float32), padding=HOP_LENGTH)[:, :-1]


def batch_features(extractor, windows: list[np.ndarray], n_frames: int) -> np.ndarray:
    """Stack features of ``windows`` (float32 audio) into ``[batch, n_mels, n_frames]``, zero-padded."""
    n_mels = extractor.mel_filters.shape[0]
    out = np.zeros((len(windows), n_mels, n_frames), dtype=np.float32)
    for i, audio in enumerate(windows):
        mel = window_features(extractor, audio)[:, :n_frames]
        out[i, :, : mel.shape[1]] = mel
    return out


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
