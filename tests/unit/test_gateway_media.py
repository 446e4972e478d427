"""PyAV decoding to 16 kHz mono float32, from containers encoded in memory (no files)."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from gateway import media
from gateway.errors import APIError, MediaError


def encode(container: str, codec: str, *, rate: int = 44100, seconds: float = 1.5, channels: int = 2,
           video: bool = False) -> bytes:
    """A 440 Hz tone in ``container``/``codec``, optionally beside a black video track (PyAV converts
    the float frames to the codec's own sample format)."""
    buffer = io.BytesIO()
    layout = "stereo" if channels == 2 else "mono"
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if video:
            vstream = out.add_stream("mpeg4", rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
            for i in range(int(seconds * 10)):
                vframe = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), dtype=np.uint8), format="rgb24")
                vframe.pts = i
                vframe.time_base = Fraction(1, 10)
                out.mux(vstream.encode(vframe))
            out.mux(vstream.encode(None))
        n = int(rate * seconds)
        tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
        for start in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(np.tile(tone[start:start + 1024], (channels, 1)), format="fltp",
                                               layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


@pytest.mark.parametrize(("container", "codec", "rate"), [
    ("wav", "pcm_s16le", 44100), ("flac", "flac", 48000), ("mp3", "libmp3lame", 44100),
    ("ogg", "libopus", 48000), ("webm", "libopus", 48000), ("ipod", "aac", 22050), ("wav", "pcm_s16le", 8000),
])
def test_audio_formats(container, codec, rate):
    decoded = media.decode(encode(container, codec, rate=rate), max_seconds=60)
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    assert decoded.duration == pytest.approx(1.5, abs=0.08)
    assert decoded.samples.size == pytest.approx(1.5 * 16000, abs=0.08 * 16000)
    # still a 440 Hz tone after down-mixing and resampling
    spectrum = np.abs(np.fft.rfft(decoded.samples[4000:12000]))
    assert np.argmax(spectrum) * 16000 / 8000 == pytest.approx(440, abs=4)


def test_video_container_decodes_its_audio_track():
    decoded = media.decode(io.BytesIO(encode("mp4", "aac", video=True)))
    assert decoded.duration == pytest.approx(1.5, abs=0.08)


def test_video_without_audio_is_400():
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(APIError) as err:
        media.decode(buffer.getvalue())
    assert (err.value.status_code, err.value.code) == (400, "no_audio_track")


@pytest.mark.parametrize(("data", "status", "code"), [
    (b"", 400, "empty_file"),
    (b"plain text, renamed to .mp3\n" * 30, 415, "unsupported_media"),
    (bytes(range(256)) * 20, 415, "unsupported_media"),
])
def test_bad_media(data, status, code):
    with pytest.raises(APIError) as err:
        media.decode(data)
    assert (err.value.status_code, err.value.code, err.value.param) == (status, code, "file")


def test_zero_sample_wav_is_empty_audio():
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    header_only = buffer.getvalue()
    assert len(header_only) == 44
    with pytest.raises(APIError) as err:
        media.decode(header_only)
    assert err.value.status_code == 400 and err.value.code in ("empty_audio", "invalid_audio")


def test_duration_limit():
    with pytest.raises(APIError) as err:
        media.decode(encode("flac", "flac", seconds=3.0), max_seconds=1.0)
    assert (err.value.status_code, err.value.code) == (400, "audio_too_long")


def test_truncated_file_keeps_what_decoded():
    data = encode("wav", "pcm_s16le", rate=16000, channels=1, seconds=2.0)
    decoded = media.decode(data[: len(data) // 2])
    assert decoded.duration == pytest.approx(1.0, abs=0.05)


async def test_decode_async_runs_in_a_worker_thread(monkeypatch):
    import threading

    seen = []
    real = media.decode
    monkeypatch.setattr(media, "decode", lambda *a, **k: seen.append(threading.get_ident()) or real(*a, **k))
    decoded = await media.decode_async(encode("wav", "pcm_s16le"))
    assert decoded.duration == pytest.approx(1.5, abs=0.05)
    assert seen and seen[0] != threading.get_ident()


def _peak_traced_mb(fn) -> float:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 1e6


def test_declared_duration_over_the_limit_is_refused_before_decoding():
    from tests.utils.fuzz_gateway import silent_flac

    ten_hours = silent_flac(10 * 3600)  # 64 KB
    assert len(ten_hours) < 100_000
    errors = []

    def run():
        with pytest.raises(APIError) as err:
            media.decode(ten_hours, max_seconds=3600)
        errors.append(err.value)

    assert _peak_traced_mb(run) < 5
    assert (errors[0].status_code, errors[0].code) == (400, "audio_too_long")
    assert "36000 seconds" in errors[0].message
    assert media.decode(silent_flac(5), max_seconds=10).duration == pytest.approx(5.0)


def test_decompression_bomb_stops_decoding_at_the_limit():
    """No declared length, 10 hours inside: decoding stops at the first frame past the limit."""
    from tests.utils.fuzz_gateway import silent_flac

    bomb = silent_flac(10 * 3600, declare_length=False)

    def run():
        with pytest.raises(APIError) as err:
            media.decode(bomb, max_seconds=60)
        assert err.value.code == "audio_too_long"

    assert _peak_traced_mb(run) < 30  # 60 s of float32 at 16 kHz is 3.8 MB; 10 h would be 2.3 GB


def test_one_hertz_wav_is_refused_before_resampling():
    """One 4096-sample packet at 1 Hz is 68 minutes: counted in input seconds, never resampled."""
    from tests.utils.fuzz_gateway import wav_header

    data = wav_header(rate=1, data_bytes=2 * 20_000) + bytes(2 * 20_000)
    data = data[:40] + (0).to_bytes(4, "little") + data[44:]  # "size unknown": no declared duration

    def run():
        with pytest.raises(APIError) as err:
            media.decode(data, max_seconds=3600)
        assert err.value.code == "audio_too_long"

    assert _peak_traced_mb(run) < 30



def test_silent_audio_is_refused_but_quiet_speech_is_not():
    silent = media.Audio(samples=np.zeros(16000, dtype=np.float32), duration=1.0)
    with pytest.raises(MediaError) as info:
        media.require_sound(silent)
    assert info.value.status_code == 400 and info.value.code == "silent_audio"
    dither = media.Audio(samples=np.full(16000, 3e-5, dtype=np.float32), duration=1.0)  # 1 LSB of 16-bit
    with pytest.raises(MediaError):
        media.require_sound(dither)
    quiet = media.Audio(samples=(0.003 * np.sin(np.arange(16000) / 5)).astype(np.float32), duration=1.0)  # -50 dBFS
    assert media.require_sound(quiet) is quiet
