"""Decode any FFmpeg-readable audio or video (its audio track) to 16 kHz mono float32, in memory.

PyAV reads straight from bytes or a file-like object (an upload's spooled file), so nothing is written
to disk. ``decode_async`` runs the decode in a worker thread, off the event loop.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO

import anyio.to_thread
import av
import av.error
import numpy as np

from gateway.errors import InvalidRequest, MediaError

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32, mono, 16 kHz
    duration: float  # seconds


def _no_audio(message: str, code: str) -> MediaError:
    return MediaError(message, status_code=400, code=code, param="file")


def decode(source: bytes | BinaryIO, *, max_seconds: float | None = None, format: str | None = None) -> Audio:
    """Decode the first audio stream to 16 kHz mono float32.

    Raises ``MediaError`` (415 for unreadable or unsupported data, 400 for a file with no audio, an
    undecodable audio track or zero samples) and ``InvalidRequest`` when longer than ``max_seconds``.
    Packets that fail to decode in the middle of a stream are skipped, as FFmpeg's CLI does.
    """
    stream_in: BinaryIO = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    if stream_in.seekable():
        empty = stream_in.seek(0, io.SEEK_END) == 0
        stream_in.seek(0)
        if empty:
            raise _no_audio("The file is empty", "empty_file")
    max_samples = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    try:
        container = av.open(stream_in, mode="r", format=format, metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise MediaError(f"Unsupported or corrupt media file: {_reason(exc)}", param="file") from None
    chunks: list[np.ndarray] = []
    total = 0
    failed_packets = 0
    with container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise _no_audio("The file has no audio track", "no_audio_track")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except (av.error.InvalidDataError, av.error.PatchWelcomeError):
                    failed_packets += 1
                    continue
                for frame in [*frames, None] if packet.size == 0 else frames:
                    for out in resampler.resample(frame):
                        chunk = out.to_ndarray().reshape(-1)
                        chunks.append(chunk)
                        total += chunk.size
                if max_samples is not None and total > max_samples:
                    raise InvalidRequest(
                        f"Audio is longer than the limit of {max_seconds:g} seconds",
                        code="audio_too_long", param="file")
        except av.error.FFmpegError as exc:
            if not chunks:
                raise _no_audio(f"The audio track could not be decoded: {_reason(exc)}", "invalid_audio") from None
            # A truncated file: keep what decoded, as FFmpeg would.
    if not chunks:
        if failed_packets:
            raise _no_audio("The audio track could not be decoded", "invalid_audio")
        raise _no_audio("The audio is empty (zero samples)", "empty_audio")
    samples = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    if max_samples is not None and samples.size > max_samples:
        raise InvalidRequest(f"Audio is longer than the limit of {max_seconds:g} seconds",
                             code="audio_too_long", param="file")
    return Audio(samples=np.ascontiguousarray(samples, dtype=np.float32), duration=samples.size / SAMPLE_RATE)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(":")[0].strip() or type(exc).__name__


async def decode_async(source: bytes | BinaryIO, *, max_seconds: float | None = None,
                       format: str | None = None) -> Audio:
    """``decode`` in a worker thread, so the event loop never blocks on FFmpeg."""
    return await anyio.to_thread.run_sync(partial(decode, source, max_seconds=max_seconds, format=format))
