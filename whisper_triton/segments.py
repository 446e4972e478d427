"""Timestamp tokens -> segments, in seconds on the original timeline."""

from __future__ import annotations

from dataclasses import dataclass

TIME_PRECISION = 0.02  # seconds per timestamp token


@dataclass
class TokenSegment:
    start: float
    end: float
    tokens: list[int]  # text and timestamp tokens of this segment


def split_by_timestamps(tokens: list[int], timestamp_begin: int, window_duration: float, offset: float) -> list[TokenSegment]:
    """Split a decoded window into segments at pairs of timestamp tokens.

    ``<|0.00|> text <|2.40|><|2.40|> more <|5.00|>`` gives two segments. Text after the last timestamp
    pair runs to the last timestamp seen, or to the window's end. Times are clamped to the window and
    shifted by ``offset`` (the window's start on the original timeline).
    """
    def at(token: int) -> float:
        return min((token - timestamp_begin) * TIME_PRECISION, window_duration)

    segments: list[TokenSegment] = []
    pairs = [i for i in range(1, len(tokens)) if tokens[i] >= timestamp_begin and tokens[i - 1] >= timestamp_begin]
    ends_single = len(tokens) >= 2 and tokens[-2] < timestamp_begin <= tokens[-1]
    cuts = pairs + ([len(tokens)] if ends_single else [])
    last = 0
    for cut in cuts:
        piece = tokens[last:cut]
        if piece and any(t < timestamp_begin for t in piece):
            start = at(piece[0]) if piece[0] >= timestamp_begin else 0.0
            end = at(piece[-1]) if piece[-1] >= timestamp_begin else window_duration
            segments.append(TokenSegment(offset + start, offset + max(end, start), piece))
        last = cut
    rest = tokens[last:]
    if any(t < timestamp_begin for t in rest):
        stamps = [t for t in rest if t >= timestamp_begin]
        start = at(stamps[0]) if stamps and rest[0] >= timestamp_begin else (segments[-1].end - offset if segments else 0.0)
        end = at(stamps[-1]) if stamps and stamps[-1] != rest[0] else window_duration
        segments.append(TokenSegment(offset + start, offset + max(end, start), rest))
    return segments


def unfinished_tail(tokens: list[int], timestamp_begin: int) -> int | None:
    """Where a window's decoding stopped mid-segment: the index just after its last complete segment (the
    last pair of timestamp tokens) when the tokens do not end in a single timestamp, else None.

    faster-whisper's ``transcribe`` drops such an unfinished segment and decodes again from the last
    complete timestamp, with the text so far as the prompt; the engine does the same.
    """
    ends_single = len(tokens) >= 2 and tokens[-2] < timestamp_begin <= tokens[-1]
    pairs = [i for i in range(1, len(tokens)) if tokens[i] >= timestamp_begin and tokens[i - 1] >= timestamp_begin]
    if ends_single or not pairs:
        return None
    return pairs[-1]
