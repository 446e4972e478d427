"""Incoming stream audio -> 16 kHz mono float32: raw PCM frames, or webm/opus from MediaRecorder.

``WebmDecoder`` decodes incrementally: the bytes fed so far are a growing file that one PyAV demuxer
reads from a background thread (blocking until more arrives), so every chunk is decoded once.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import numpy as np

from whisper_triton.protocol import SAMPLE_RATE


class FrameError(ValueError):
    """A frame the stream cannot use (wrong size, not the declared format, undecodable media)."""


def pcm_to_float(data: bytes, fmt: str) -> np.ndarray:
    if fmt == "pcm_s16le":
        if len(data) % 2:
            raise FrameError(f"pcm_s16le frame of {len(data)} bytes: not a whole number of 16-bit samples")
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if fmt == "pcm_f32le":
        if len(data) % 4:
            raise FrameError(f"pcm_f32le frame of {len(data)} bytes: not a whole number of 32-bit samples")
        samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(samples)) or (samples.size and float(np.max(np.abs(samples))) > 64.0):
            raise FrameError("pcm_f32le frame holds non-finite or out-of-range samples (expected -1..1)")
        return np.clip(samples, -1.0, 1.0)
    raise FrameError(f"unknown format {fmt!r}")


class _GrowingFile(io.RawIOBase):
    """A read-only file whose reads block until data arrives or the writer closes it."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._pos = 0
        self._closed_for_write = False
        self._cond = threading.Condition()

    def readable(self) -> bool:
        return True

    def write_more(self, data: bytes) -> None:
        with self._cond:
            self._data.extend(data)
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._closed_for_write = True
            self._cond.notify_all()

    def readinto(self, buffer) -> int:  # type: ignore[override]
        with self._cond:
            while self._pos >= len(self._data) and not self._closed_for_write:
                self._cond.wait()
            n = min(len(buffer), len(self._data) - self._pos)
            buffer[:n] = self._data[self._pos:self._pos + n]
            self._pos += n
            # Drop what the demuxer has consumed (it never seeks back on a non-seekable input).
            if self._pos > (1 << 20):
                del self._data[: self._pos]
                self._pos = 0
            return n


class WebmDecoder:
    """Feed MediaRecorder chunks (webm/ogg with opus); decoded 16 kHz samples come out of ``drain()``.

    ``on_output`` (called from the decoder thread) is told when new samples or an error are ready. At most
    about ``max_pending`` decoded samples wait to be drained: past them the decoder thread waits, so a few
    kilobytes of opus that decode to an hour are never all in memory (until ``close()``).
    """

    def __init__(self, on_output: Callable[[], None] | None = None, container_format: str | None = None,
                 max_pending: int | None = None) -> None:
        self._file = _GrowingFile()
        self._lock = threading.Condition()
        self._chunks: list[np.ndarray] = []
        self._pending = 0
        self._max_pending = max_pending
        self.error: str | None = None
        self.finished = threading.Event()
        self._on_output = on_output or (lambda: None)
        self._format = container_format
        self._thread = threading.Thread(target=self._run, name="webm-decoder", daemon=True)
        self._thread.start()

    def feed(self, data: bytes) -> None:
        if self.error:
            raise FrameError(self.error)
        self._file.write_more(data)

    def drain(self) -> np.ndarray:
        with self._lock:
            chunks, self._chunks, self._pending = self._chunks, [], 0
            self._lock.notify_all()
        if self.error and not chunks:
            raise FrameError(self.error)
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)

    def close(self, wait_s: float = 5.0) -> None:
        """End of input: the thread decodes what is left and stops (``drain()`` afterwards)."""
        with self._lock:
            self._max_pending = None  # whatever is left is decoded now
            self._lock.notify_all()
        self._file.end()
        self._thread.join(wait_s)

    def _emit(self, samples: np.ndarray) -> None:
        if samples.size:
            with self._lock:
                while self._max_pending is not None and self._pending >= self._max_pending:
                    self._lock.wait()
                self._chunks.append(samples.astype(np.float32, copy=False))
                self._pending += samples.size
            self._on_output()

    def _run(self) -> None:
        import av

        try:
            options = {"probesize": "4096", "analyzeduration": "0"}
            with av.open(self._file, mode="r", format=self._format, options=options,
                         metadata_errors="ignore") as container:
                if not container.streams.audio:
                    raise FrameError("the webm stream has no audio track")
                stream = container.streams.audio[0]
                resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        self._emit(out.to_ndarray().reshape(-1))
                for out in resampler.resample(None):
                    self._emit(out.to_ndarray().reshape(-1))
        except FrameError as exc:
            self.error = str(exc)
        except Exception as exc:  # av.error.FFmpegError and anything the demuxer trips on
            self.error = f"cannot decode webm/opus audio: {exc}"
        finally:
            self.finished.set()
            self._on_output()


def pcm16_samples(data: bytes) -> np.ndarray:
    """Little-endian 16-bit PCM -> int16 samples (``FrameError`` for an odd number of bytes)."""
    if len(data) % 2:
        raise FrameError(f"{len(data)} bytes of pcm16: not a whole number of 16-bit samples")
    return np.frombuffer(data, dtype="<i2")


class Resampler:
    """16-bit mono PCM at ``rate`` -> 16 kHz float32, chunk by chunk (libswresample keeps the filter state
    between chunks, so chunk edges leave no clicks)."""

    def __init__(self, rate: int) -> None:
        import av

        self.rate = rate
        self._resampler = None if rate == SAMPLE_RATE else av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._pts = 0

    def __call__(self, pcm: np.ndarray) -> np.ndarray:
        if self._resampler is None:
            return pcm.astype(np.float32) / 32768.0
        import av

        if not pcm.size:
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate, frame.pts = self.rate, self._pts
        self._pts += pcm.size
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, dtype=np.float32)
