"""Conversations with known speaker turns, built from real recordings of different speakers.

Each speaker's clips (LibriSpeech utterances by speaker id, and single-speaker recordings such as
LJ Speech, JFK or VoxPopuli) are joined into a pool; a conversation takes turns from the pools in a
random order of speakers, each turn a stretch of that speaker's real speech cut at a quiet point, with
pauses between turns, some short turns, and some turns that start before the previous one ends
(overlap). The ground truth is where each speaker's speech landed, its pauses left out (energy of
the clip itself), so it is known by construction.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_AUDIO

SR = 16000
FRAME = 320  # 20 ms
MIN_POOL_S = 8.0
# Recordings of one speaker each that are not LibriSpeech (speaker = the name before the first digit).
SINGLE = {"en/jfk.flac": "jfk", "en/voxpopuli_en_000.ogg": "voxpopuli", "en/LJ050-0131.wav": "lj",
          "en/LJ002-0020.wav": "lj", "en/LJ002-0035.wav": "lj",
          "en/mfa_cold_corpus3.flac": "mfa_cold"}
LIBRISPEECH = re.compile(r"en/(\d+)-\d+-\d+\.(flac|wav)$")


@dataclass
class Conversation:
    audio: np.ndarray
    reference: list[tuple[float, float, str]]  # speech turns (start, end, speaker)
    speakers: list[str]
    pieces: list[tuple[float, str, str]] = field(default_factory=list)  # (start, speaker, source file)

    @property
    def duration(self) -> float:
        return len(self.audio) / SR


def speaker_files(audio_dir: Path = DEFAULT_AUDIO) -> dict[str, list[str]]:
    """Speaker -> their clips (only speakers with at least ``MIN_POOL_S`` of speech)."""
    with open(Path(audio_dir) / "manifest.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    by_speaker: dict[str, list[tuple[str, float]]] = {}
    for row in rows:
        name = row["file"]
        match = LIBRISPEECH.match(name)
        speaker = f"ls{match.group(1)}" if match else SINGLE.get(name)
        if speaker:
            by_speaker.setdefault(speaker, []).append((name, float(row["duration_seconds"])))
    return {s: [f for f, _ in files] for s, files in sorted(by_speaker.items())
            if sum(d for _, d in files) >= MIN_POOL_S}


@lru_cache(maxsize=64)
def _decode(path: str) -> np.ndarray:
    from client.audio import decode_file

    return decode_file(path)


def activity(audio: np.ndarray, floor_db: float = 35.0, fill_s: float = 0.3) -> np.ndarray:
    """Per-sample speech flags of one clean clip: 20 ms frames within ``floor_db`` of its loudest,
    pauses shorter than ``fill_s`` filled."""
    n = len(audio) // FRAME
    if n == 0:
        return np.zeros(len(audio), dtype=bool)
    energy = 10 * np.log10(np.mean(audio[:n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-12)
    active = energy > energy.max() - floor_db
    fill = int(fill_s * SR / FRAME)
    idx = np.flatnonzero(active)
    for a, b in zip(idx, idx[1:]):
        if 1 < b - a <= fill:
            active[a:b] = True
    flags = np.repeat(active, FRAME)
    return np.pad(flags, (0, len(audio) - len(flags)))


def pool(speaker: str, files: list[str], audio_dir: Path = DEFAULT_AUDIO) -> tuple[np.ndarray, np.ndarray]:
    """A speaker's clips joined (leading/trailing silence trimmed), with their speech flags."""
    audios, flags = [], []
    for name in files:
        audio = _decode(str(Path(audio_dir) / name))
        active = activity(audio)
        idx = np.flatnonzero(active)
        if idx.size:
            audios.append(audio[idx[0]:idx[-1] + 1])
            flags.append(active[idx[0]:idx[-1] + 1])
    return np.concatenate(audios), np.concatenate(flags)


def _quiet_cut(audio: np.ndarray, target: int, search: int) -> int:
    lo, hi = max(FRAME, target - search), min(len(audio) - FRAME, target + search)
    if hi <= lo:
        return min(max(target, 0), len(audio))
    starts = np.arange(lo, hi, FRAME // 2)
    energy = [float(np.mean(audio[s:s + FRAME] ** 2)) for s in starts]
    return int(starts[int(np.argmin(energy))])


def build(speakers: list[str], files: dict[str, list[str]], *, seconds: float, seed: int,
          overlap_rate: float = 0.12, short_rate: float = 0.2, audio_dir: Path = DEFAULT_AUDIO) -> Conversation:
    """About ``seconds`` of conversation among ``speakers``: turns of 2-8 s (``short_rate`` of them
    0.6-1.5 s), pauses of 0.2-0.8 s, and ``overlap_rate`` of turns starting 0.3-1.0 s before the
    previous one ends."""
    rng = np.random.default_rng(seed)
    pools = {s: pool(s, files[s], audio_dir) for s in speakers}
    cursor = {s: int(rng.integers(0, len(pools[s][0]) // 2)) for s in speakers}
    total = int(seconds * SR)
    out = np.zeros(total + 10 * SR, dtype=np.float32)
    truth = {s: np.zeros(len(out), dtype=bool) for s in speakers}
    pieces: list[tuple[float, str, str]] = []
    position, previous = int(0.5 * SR), None
    while position < total:
        speaker = rng.choice([s for s in speakers if s != previous] if len(speakers) > 1 else speakers)
        length = rng.uniform(0.6, 1.5) if rng.random() < short_rate else rng.uniform(2.0, 8.0)
        audio, flags = pools[speaker]
        start = cursor[speaker]
        if start + int(length * SR) + SR >= len(audio):
            start = 0
        stop = _quiet_cut(audio, start + int(length * SR), int(0.3 * SR))
        piece, active = audio[start:stop], flags[start:stop]
        cursor[speaker] = stop
        idx = np.flatnonzero(active)
        if idx.size == 0:
            continue
        piece, active = piece[idx[0]:idx[-1] + 1], active[idx[0]:idx[-1] + 1]
        end = min(position + len(piece), len(out))
        out[position:end] += piece[:end - position]
        truth[speaker][position:end] |= active[:end - position]
        pieces.append((position / SR, speaker, ""))
        previous = speaker
        if rng.random() < overlap_rate and len(speakers) > 1:
            position = end - int(rng.uniform(0.3, 1.0) * SR)
        else:
            position = end + int(rng.uniform(0.2, 0.8) * SR)
    length = min(len(out), position + int(0.5 * SR))
    return Conversation(audio=out[:length], reference=turns_of(truth, length), speakers=list(speakers),
                        pieces=pieces)


def turns_of(truth: dict[str, np.ndarray], length: int) -> list[tuple[float, float, str]]:
    turns = []
    for speaker, flags in truth.items():
        edges = np.flatnonzero(np.diff(np.concatenate([[0], flags[:length].astype(np.int8), [0]])))
        turns += [(a / SR, b / SR, speaker) for a, b in zip(edges[::2], edges[1::2])]
    return sorted(turns)


def from_clips(sequence: list[tuple[str, str]], *, gap_s: float = 0.6, audio_dir: Path = DEFAULT_AUDIO) -> Conversation:
    """Whole clips one after another (``(speaker, file)`` pairs), ``gap_s`` of silence between them."""
    parts, truth_parts, owners, pieces = [], [], [], []
    position = 0
    for speaker, name in sequence:
        audio = _decode(str(Path(audio_dir) / name))
        gap = np.zeros(int(gap_s * SR), dtype=np.float32)
        parts += [audio, gap]
        truth_parts += [activity(audio), np.zeros(len(gap), dtype=bool)]
        owners += [speaker, None]
        pieces.append((position / SR, speaker, name))
        position += len(audio) + len(gap)
    audio = np.concatenate(parts)
    speakers = list(dict.fromkeys(s for s, _ in sequence))
    truth = {s: np.concatenate([t if o == s else np.zeros(len(t), dtype=bool) for t, o in zip(truth_parts, owners)])
             for s in speakers}
    return Conversation(audio=audio, reference=turns_of(truth, len(audio)), speakers=speakers, pieces=pieces)
