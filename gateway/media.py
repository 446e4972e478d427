"""Decode any FFmpeg-readable audio or video (its audio track) to 16 kHz mono float32, in memory.

PyAV reads straight from bytes or a file-like object (an upload's spooled file), so nothing is written
to disk. ``decode_async`` runs the decode in a worker thread, off the event loop.

Memory stays bounded by ``max_seconds`` whatever the upload: a container whose header declares a
duration over the limit is refused before any decoding (formats whose declared duration is exact, not
guessed from the bit rate), and every decoded frame is counted, in input seconds before resampling (a
1 Hz WAV would otherwise resample one packet to gigabytes) and in output samples after, so decoding
stops at the first frame past the limit: a tiny file that decodes to hours is never held in memory.
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
from whisper_triton.protocol import SAMPLE_RATE


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32, mono, 16 kHz
    duration: float  # seconds


# Demuxers whose declared duration comes from the file's own header or index (sample counts, chunk
# sizes clamped to the file size, the last page's granule), not an estimate from the first frame's bit
# rate (mp3 without a Xing header, ADTS AAC), which can be far off for VBR audio.
EXACT_DURATION_FORMATS = {"wav", "w64", "flac", "ogg", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "aiff",
                          "caf", "au"}
DURATION_SLACK_S = 1.0  # declared vs decoded: encoder padding and priming samples


def _no_audio(message: str, code: str) -> MediaError:
    return MediaError(message, status_code=400, code=code, param="file")


def _too_long(max_seconds: float, declared: float | None = None) -> InvalidRequest:
    detail = f" (the file declares {declared:.0f} seconds)" if declared is not None else ""
    return InvalidRequest(f"Audio is longer than the limit of {max_seconds:g} seconds{detail}",
                          code="audio_too_long", param="file")


def declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    """The audio duration the container's header declares, where the format's declaration is exact."""
    if container.format.name not in EXACT_DURATION_FORMATS:
        return None
    if stream.duration is not None and stream.duration > 0 and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


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
    total = 0  # output samples, 16 kHz
    seconds_in = 0.0  # input seconds, before resampling
    failed_packets = 0
    with container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise _no_audio("The file has no audio track", "no_audio_track")
        if max_seconds is not None:
            declared = declared_seconds(container, stream)
            if declared is not None and declared > max_seconds + DURATION_SLACK_S:
                raise _too_long(max_seconds, declared)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except (av.error.InvalidDataError, av.error.PatchWelcomeError):
                    failed_packets += 1
                    continue
                for frame in [*frames, None] if packet.size == 0 else frames:
                    if frame is not None and max_seconds is not None and frame.sample_rate > 0:
                        seconds_in += frame.samples / frame.sample_rate
                        if seconds_in > max_seconds + DURATION_SLACK_S:
                            raise _too_long(max_seconds)
                    for out in resampler.resample(frame):
                        chunk = out.to_ndarray().reshape(-1)
                        chunks.append(chunk)
                        total += chunk.size
                        if max_samples is not None and total > max_samples:
                            raise _too_long(max_seconds)
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
        raise _too_long(max_seconds)
    return Audio(samples=np.ascontiguousarray(samples, dtype=np.float32), duration=samples.size / SAMPLE_RATE)


# Digital silence: no sample louder than -70 dBFS (a 16-bit file's dither is about -90 dBFS; speech
# peaks far above -40 dBFS). Such an upload has nothing to transcribe and is refused with 400.
SILENCE_PEAK = 10 ** (-70 / 20)


def require_sound(audio: Audio) -> Audio:
    """``audio``, or ``MediaError`` 400 ``silent_audio`` when every sample is below ``SILENCE_PEAK``."""
    if not audio.samples.size or float(np.max(np.abs(audio.samples))) < SILENCE_PEAK:
        raise _no_audio("The audio is silent (no sample above -70 dBFS): there is nothing to transcribe", "silent_audio")
    return audio


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(":")[0].strip() or type(exc).__name__


async def decode_async(source: bytes | BinaryIO, *, max_seconds: float | None = None,
                       format: str | None = None) -> Audio:
    """``decode`` in a worker thread, so the event loop never blocks on FFmpeg."""
    return await anyio.to_thread.run_sync(partial(decode, source, max_seconds=max_seconds, format=format))
