"""Helpers for the hostile-input tests: hand-made media (a 10-hour silent FLAC, a decompression bomb),
the container corpus the fuzzer mutates, and the memory of a live gateway process (Linux ``/proc``)."""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np

# -- FLAC built by hand: CONSTANT subframes, 14 bytes per 65535 samples -------------------------------


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _utf8_number(n: int) -> bytes:
    """FLAC's frame number coding (UTF-8 extended), for up to 2**21 frames."""
    if n < 0x80:
        return bytes([n])
    if n < 0x800:
        return bytes([0xC0 | n >> 6, 0x80 | n & 0x3F])
    if n < 0x10000:
        return bytes([0xE0 | n >> 12, 0x80 | n >> 6 & 0x3F, 0x80 | n & 0x3F])
    return bytes([0xF0 | n >> 18, 0x80 | n >> 12 & 0x3F, 0x80 | n >> 6 & 0x3F, 0x80 | n & 0x3F])


def silent_flac(seconds: float, *, rate: int = 8000, block: int = 65535, declare_length: bool = True) -> bytes:
    """A valid mono 16-bit FLAC of ``seconds`` of digital silence, about 14 bytes per ``block`` samples.

    Ten hours at 8 kHz is 64 KB, and decodes to 1.15 GB of float32 at 16 kHz. With
    ``declare_length=False`` STREAMINFO says "length unknown", so nothing but decoding finds out how
    long it is: a decompression bomb.
    """
    total = int(seconds * rate)
    info = struct.pack(">HH", block, block) + b"\0" * 6  # block sizes; frame sizes unknown
    info += ((rate << 44) | (15 << 36) | (total if declare_length else 0)).to_bytes(8, "big")  # 1 ch, 16 bit
    info += b"\0" * 16  # MD5 unknown
    out = bytearray(b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info)
    done = frame = 0
    while done < total:
        size = min(block, total - done)
        # sync + fixed block size; block size in 16 bits at the end; rate from STREAMINFO; mono, 16 bit
        header = bytes([0xFF, 0xF8, 0x70, 0x08]) + _utf8_number(frame) + struct.pack(">H", size - 1)
        header += bytes([_crc8(header)])
        body = header + b"\x00\x00\x00"  # CONSTANT subframe, value 0
        out += body + struct.pack(">H", _crc16(body))
        done += size
        frame += 1
    return bytes(out)


def wav_header(*, rate: int, channels: int = 1, bits: int = 16, data_bytes: int) -> bytes:
    """A 44-byte PCM WAV header that declares ``data_bytes`` of samples, whatever follows it."""
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", (36 + data_bytes) & 0xFFFFFFFF) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", data_bytes & 0xFFFFFFFF))


# -- the corpus: one short clip in every container the gateway is expected to read ---------------------

CONTAINERS = {  # name: (PyAV format, codec, sample rate, file suffix)
    "wav": ("wav", "pcm_s16le", 16000, ".wav"),
    "flac": ("flac", "flac", 16000, ".flac"),
    "mp3": ("mp3", "libmp3lame", 22050, ".mp3"),
    "ogg": ("ogg", "libopus", 48000, ".ogg"),
    "webm": ("webm", "libopus", 48000, ".webm"),
    "mp4": ("mp4", "aac", 16000, ".m4a"),
}


def load_clip(path: Path, seconds: float) -> np.ndarray:
    """The first ``seconds`` of a file as 16 kHz mono float32."""
    from gateway import media

    return media.decode(path.read_bytes()).samples[: int(seconds * 16000)]


def encode(samples: np.ndarray, container: str) -> bytes:
    """16 kHz mono float32 -> a file in one of ``CONTAINERS`` (resampled by PyAV where the codec needs it)."""
    import av

    fmt, codec, rate, _ = CONTAINERS[container]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        chunk = 1600
        for start in range(0, samples.size, chunk):
            frame = av.AudioFrame.from_ndarray(samples[start:start + chunk].reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = 16000
            frame.pts = start
            frame.time_base = Fraction(1, 16000)
            for converted in resampler.resample(frame):
                out.mux(stream.encode(converted))
        for converted in resampler.resample(None):
            out.mux(stream.encode(converted))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def corpus(samples: np.ndarray, directory: Path) -> dict[str, bytes]:
    """The clip in every container, also written under ``directory`` (a tmp dir) for a look after a failure."""
    files = {}
    for name, (*_, suffix) in CONTAINERS.items():
        data = encode(samples, name)
        (directory / f"clip{suffix}").write_bytes(data)
        files[name] = data
    return files


# -- a live gateway's memory -----------------------------------------------------------------------------


def gateway_pid(url: str) -> int:
    """The pid of the gateway process (``python -m gateway`` or ``uvicorn``) serving ``url``
    (http://127.0.0.1:PORT), from its command line."""
    port = url.rsplit(":", 1)[1].rstrip("/")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        server = b"uvicorn" in argv or argv[1:3] == [b"-m", b"gateway"]
        if server and b"--port" in argv and argv[argv.index(b"--port") + 1:][:1] == [port.encode()]:
            return int(proc.name)
    raise LookupError(f"no gateway process serving {url}")


def memory_mb(pid: int) -> dict[str, float]:
    """``VmRSS`` (now) and ``VmHWM`` (peak since start) of a process, in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # kB
    return values


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state
