"""Speakers in a transcript: speaker turns (from the speaker model's windows, clustered) assigned to
the transcript's words by time, segments split where the speaker changes, speakers named by
reference clips. Pure functions; ``service.transcribe`` runs the Triton calls around them.

Clustering itself is ``whisper_triton.speaker.clustering`` (numpy only), shared with the benchmarks.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, replace

import numpy as np

from gateway.errors import InvalidRequest
from gateway.results import Segment, Transcription, Word
from gateway.triton import SpeakerWindows
from whisper_triton.speaker import clustering

DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)


@dataclass(frozen=True)
class DiarizeOptions:
    min_speakers: int = 1
    max_speakers: int = 8
    names: tuple[str, ...] = ()  # known_speaker_names[], with one reference clip each


@dataclass(frozen=True)
class Speakers:
    turns: list[clustering.Turn]
    labels: list[str]  # label of speaker index i


def request_options(*, names: list[str] | None, references: list[str] | None, min_speakers: int | None,
                    max_speakers: int | None, limit_speakers: int, limit_references: int
                    ) -> tuple[DiarizeOptions, dict[str, bytes]]:
    """A request's diarization fields, checked: the options and each named reference's file bytes."""
    names, references = list(names or []), list(references or [])
    if len(names) != len(references):
        raise InvalidRequest(f"known_speaker_names[] has {len(names)} entries and known_speaker_references[] "
                             f"{len(references)}: give one reference clip per name",
                             param="known_speaker_names[]", code="invalid_value")
    if len(names) > limit_references:
        raise InvalidRequest(f"At most {limit_references} known speakers per request",
                             param="known_speaker_names[]", code="invalid_value")
    cleaned = [n.strip() for n in names]
    if any(not n or len(n) > 64 or not n.isprintable() for n in cleaned) or len(set(cleaned)) != len(cleaned):
        raise InvalidRequest("known_speaker_names[] must be distinct, non-empty, printable names of at most 64 characters",
                             param="known_speaker_names[]", code="invalid_value")
    low = 1 if min_speakers is None else min_speakers
    high = limit_speakers if max_speakers is None else max_speakers
    if not 1 <= low <= high <= limit_speakers:
        raise InvalidRequest(f"Speakers must satisfy 1 <= min_speakers <= max_speakers <= {limit_speakers}",
                             param="max_speakers" if max_speakers is not None else "min_speakers",
                             code="invalid_value")
    clips = {name: decode_data_url(ref, "known_speaker_references[]") for name, ref in zip(cleaned, references)}
    return DiarizeOptions(min_speakers=low, max_speakers=high, names=tuple(cleaned)), clips


def decode_data_url(value: str, param: str) -> bytes:
    """``data:audio/wav;base64,...`` (as OpenAI takes known_speaker_references[]) -> the file's bytes."""
    match = DATA_URL.match(value.strip())
    if not match or not match.group("b64"):
        raise InvalidRequest("A speaker reference must be a base64 data URL (data:audio/wav;base64,...)",
                             param=param, code="invalid_value")
    try:
        return base64.b64decode(value.strip()[match.end():], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("A speaker reference is not valid base64", param=param, code="invalid_value") from None


def reference_embedding(windows: SpeakerWindows, name: str) -> np.ndarray:
    if len(windows.embeddings) == 0:
        raise InvalidRequest(f"The reference clip for '{name}' has no speech", param="known_speaker_references[]",
                             code="invalid_value")
    mean = np.asarray(windows.embeddings, dtype=np.float64).mean(axis=0)
    return mean / max(np.linalg.norm(mean), 1e-12)


def on_timeline(windows: SpeakerWindows, start_s: float) -> SpeakerWindows:
    """A piece's windows for the whole file: spans moved to the piece's place (``start_s`` seconds in)."""
    return SpeakerWindows(windows.embeddings, np.asarray(windows.spans, dtype=np.float64) + start_s, windows.regions)


def joined(parts: list[SpeakerWindows]) -> SpeakerWindows:
    """The windows of consecutive pieces as one file's (regions numbered apart: no region spans two pieces)."""
    parts = [p for p in parts if len(p.embeddings)]
    if not parts:
        return SpeakerWindows(np.zeros((0, 0), np.float32), np.zeros((0, 2)), np.zeros(0, np.int64))
    regions, offset = [], 0
    for p in parts:
        regions.append(np.asarray(p.regions, dtype=np.int64) + offset)
        offset = int(regions[-1].max()) + 1
    return SpeakerWindows(np.concatenate([p.embeddings for p in parts]), np.concatenate([p.spans for p in parts]),
                          np.concatenate(regions))


def find_speakers(windows: SpeakerWindows, references: dict[str, np.ndarray], options: DiarizeOptions,
                  threshold: float) -> Speakers:
    """Cluster the windows (CPU work: run it in a thread) into turns, and label each speaker."""
    if len(windows.embeddings) == 0:
        return Speakers([], [])
    labels = clustering.cluster(windows.embeddings, threshold=threshold, min_speakers=options.min_speakers,
                                max_speakers=options.max_speakers, regions=windows.regions)
    cents = clustering.centroids(windows.embeddings, labels)
    return Speakers(clustering.turns(windows.spans, labels), clustering.names(cents, references))


def _speaker_at(start: float, end: float, turns: list[clustering.Turn]) -> int | None:
    """The turn speaker overlapping [start, end] most; failing that, the nearest turn's."""
    if not turns:
        return None
    best, best_overlap, nearest, nearest_gap = None, 0.0, None, float("inf")
    for turn in turns:
        overlap = min(end, turn.end) - max(start, turn.start)
        if overlap > best_overlap:
            best, best_overlap = turn.speaker, overlap
        gap = max(turn.start - end, start - turn.end, 0.0)
        if gap < nearest_gap:
            nearest, nearest_gap = turn.speaker, gap
    return best if best is not None else nearest


def _runs(words: tuple[Word, ...], speakers: list[int | None]) -> list[tuple[int | None, list[Word]]]:
    runs: list[tuple[int | None, list[Word]]] = []
    for word, speaker in zip(words, speakers):
        if runs and runs[-1][0] == speaker:
            runs[-1][1].append(word)
        else:
            runs.append((speaker, [word]))
    # one stray word between two runs of the same speaker is a boundary's jitter, not a turn
    i = 1
    while i < len(runs) - 1:
        if len(runs[i][1]) == 1 and runs[i - 1][0] == runs[i + 1][0]:
            runs[i - 1] = (runs[i - 1][0], runs[i - 1][1] + runs[i][1] + runs[i + 1][1])
            del runs[i:i + 2]
        else:
            i += 1
    return runs


MIN_PIECE_S = 0.6  # a turn that covers less of a segment than this does not split it (boundary jitter)


def _estimated_words(segment: Segment, turns: list[clustering.Turn]) -> tuple[Word, ...] | None:
    """Words with times spread over the segment in proportion to their length, when turns of more than one
    speaker cover it (Whisper gives word times only when asked: they cost about as much again as the
    transcription); ``None`` when one speaker has the whole segment."""
    inside = [(max(t.start, segment.start), min(t.end, segment.end), t.speaker) for t in turns
              if min(t.end, segment.end) - max(t.start, segment.start) >= MIN_PIECE_S]
    if len({speaker for *_, speaker in inside}) < 2:
        return None
    pieces = re.findall(r"\s*\S+", segment.text)
    if " " not in segment.text.strip():  # no spaces (Chinese, Japanese): one character at a time
        pieces = list(segment.text)
    total = sum(len(p.strip()) for p in pieces) or 1
    words, done, span = [], 0, max(segment.end - segment.start, 0.0)
    for piece in pieces:
        start = segment.start + span * done / total
        done += len(piece.strip())
        words.append(Word(piece, start, segment.start + span * done / total))
    return tuple(words)


def assign(result: Transcription, speakers: Speakers) -> Transcription:
    """Each segment labelled with its speaker; a segment whose words change speaker is split there
    (at Whisper's word times when the request asked for them, else at times estimated from the text)."""
    segments: list[Segment] = []
    for segment in result.segments:
        words = segment.words or _estimated_words(segment, speakers.turns)
        if words:
            per_word = [_speaker_at(w.start, w.end, speakers.turns) for w in words]
            runs = _runs(words, per_word)
        else:
            runs = [(_speaker_at(segment.start, segment.end, speakers.turns), [])]
        for speaker, words in runs:
            label = speakers.labels[speaker] if speaker is not None else None
            if len(runs) == 1:
                piece = replace(segment, speaker=label)
            else:
                piece = replace(segment, start=words[0].start, end=words[-1].end, speaker=label, tokens=(),
                                text="".join(w.word for w in words),
                                words=tuple(words) if segment.words else None)
            segments.append(replace(piece, id=len(segments)))
    return replace(result, segments=tuple(segments))

