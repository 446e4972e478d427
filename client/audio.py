"""Decode any audio or video file to 16 kHz mono float32 with FFmpeg's libraries (PyAV), and encode such
samples as a WAV file (to upload audio held in memory)."""

from __future__ import annotations

import io
import wave
from typing import BinaryIO, Union

import av
import numpy as np

from whisper_triton.protocol import SAMPLE_RATE


class AudioDecodeError(ValueError):
    """The input is not decodable audio (corrupt, not media, or no audio stream)."""


def decode_file(source: Union[str, BinaryIO], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return the first audio stream of ``source`` as mono float32 at ``sample_rate``."""
    try:
        with av.open(source, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError("the file has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioDecodeError(f"cannot decode audio: {exc}") from exc
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def encode_wav(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Mono float32 samples in [-1, 1] as a 16-bit PCM WAV file (clipped; no samples: the 44-byte header)."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()
