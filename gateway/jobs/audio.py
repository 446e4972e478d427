"""A job's pending audio, kept compressed: each chunk as its own FLAC stream (16 kHz, mono, 16-bit).

Lossless, so a job's chunks reach Triton as the decoded upload would (to 16-bit precision, -96 dBFS),
and a chunk is read and decoded alone, without the rest of the file. Speech takes 17.6 KB per second
(63 MB per hour; the README has the measurement), where the earlier ``.npy`` of float32 took 64 KB.
"""

from __future__ import annotations

import io

import av
import numpy as np

from gateway import media
from whisper_triton.protocol import SAMPLE_RATE

SUFFIX = ".flac"


def encode(samples: np.ndarray) -> bytes:
    """16 kHz mono float32 -> a FLAC file in memory (blocking: call it from a thread)."""
    pcm = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    pcm = np.round(pcm * 32767.0).astype(np.int16).reshape(1, -1)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono", format="s16")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """A stored chunk back to 16 kHz mono float32 (blocking)."""
    return media.decode(data, format="flac").samples


def encode_chunks(samples: np.ndarray, chunks: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> list[bytes]:
    return [encode(samples[start:end]) for start, end in chunks]
