"""Long audio in pieces: cut at pauses, each piece's result moved onto the file's timeline, merged.

Used by durable jobs (pieces of ``job_chunk_seconds``, one at a time, each result stored) and by
``stream=true`` uploads (pieces of ``sse_chunk_seconds``, a few in flight, each result sent as soon as
the ones before it are).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from functools import partial
from typing import TypeVar

import anyio.to_thread
import numpy as np

from gateway.media import SAMPLE_RATE
from gateway.results import Segment, Transcription

FRAME_SECONDS = 0.02  # the unit the cut point is chosen in
SEARCH_SECONDS = 5.0  # how far before each boundary the quietest frame is looked for
PAUSE_FRAMES = 15  # frame energies are averaged over 300 ms: a cut lands in a pause, not a plosive's closure
NO_SPACE_LANGUAGES = {"zh", "yue", "ja", "th", "lo", "km", "my", "bo"}  # texts joined without a space

T = TypeVar("T")
R = TypeVar("R")


def split_chunks(samples: np.ndarray, chunk_seconds: float, *, search_seconds: float = SEARCH_SECONDS,
                 frame_seconds: float = FRAME_SECONDS, rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` sample ranges that cover ``samples`` exactly, in order, without overlap.

    Each cut is at the middle of the quietest 20 ms frame in the ``search_seconds`` (at most half a chunk)
    before the nominal boundary, "quietest" being the frames' RMS averaged over ``PAUSE_FRAMES`` around
    each (the middle of the quietest 300 ms: a pause between phrases rather than a gap inside a word);
    among equally quiet frames the latest wins. The last chunk may run up to ``search_seconds`` past
    ``chunk_seconds`` rather than leave a sliver of a few frames.
    """
    n = int(samples.shape[0])
    chunk = max(1, int(chunk_seconds * rate))
    frame = max(1, int(frame_seconds * rate))
    search = min(int(search_seconds * rate), chunk // 2)
    ranges: list[tuple[int, int]] = []
    start = 0
    while n - start > chunk + search:
        target = start + chunk
        low = target - search
        count = (target - low) // frame
        if count < 1:
            cut = target
        else:
            frames = np.asarray(samples[low:low + count * frame], dtype=np.float64).reshape(count, frame)
            rms = np.sqrt(np.mean(frames * frames, axis=1))
            half = min(PAUSE_FRAMES // 2, count - 1)
            if half > 0:
                rms = np.convolve(np.pad(rms, half, mode="edge"), np.full(2 * half + 1, 1 / (2 * half + 1)), "valid")
            quietest = count - 1 - int(np.argmin(rms[::-1]))
            cut = low + quietest * frame + frame // 2
        ranges.append((start, cut))
        start = cut
    ranges.append((start, n))
    return ranges


def shift(result: Transcription, start: float, end: float) -> Transcription:
    """A chunk's result on the file's timeline: times moved by ``start`` and kept within ``[start, end]``."""

    def at(t: float) -> float:
        return min(max(start + t, start), end)

    segments = tuple(
        replace(s, start=at(s.start), end=at(s.end),
                words=None if s.words is None else tuple(replace(w, start=at(w.start), end=at(w.end))
                                                         for w in s.words))
        for s in result.segments
    )
    return replace(result, segments=segments, duration=end - start)


def on_timeline(result: Transcription, span: tuple[int, int], rate: int = SAMPLE_RATE) -> Transcription:
    """A piece's result for the whole file: repeated segments dropped, times moved to the piece's
    place (``span`` in samples)."""
    start, end = span
    return shift(drop_repeats(result), start / rate, end / rate)


def joiner(language: str) -> str:
    """What goes between two pieces of text in ``language``: a space, or nothing (Chinese, Japanese, Thai...)."""
    return "" if language in NO_SPACE_LANGUAGES else " "


def _words_of(text: str) -> tuple[str, ...]:
    return tuple("".join(c for c in word if c.isalnum()) for word in text.lower().split())


def drop_repeats(result: Transcription, min_words: int = 3) -> Transcription:
    """Without segments that repeat the one before word for word (``min_words`` or more words).

    Whisper can loop on audio that ends in the middle of a phrase, as a chunk's end may: the same
    segment again and again. A real speaker rarely says the same whole sentence twice in a row.
    """
    kept: list[Segment] = []
    for segment in result.segments:
        words = _words_of(segment.text)
        if kept and len(words) >= min_words and words == _words_of(kept[-1].text):
            continue
        kept.append(segment)
    if len(kept) == len(result.segments):
        return result
    return replace(result, segments=tuple(kept), text=joiner(result.language).join(s.text.strip() for s in kept).strip())


def merge(parts: Sequence[Transcription], *, duration: float, model: str, task: str) -> Transcription:
    """One result from the chunks' (already shifted) results: ids renumbered, texts joined."""
    language = next((p.language for p in parts if p.text.strip()), parts[0].language if parts else "")
    text = joiner(language).join(p.text.strip() for p in parts if p.text.strip())
    segments = tuple(replace(s, id=i) for i, s in enumerate(s for p in parts for s in p.segments))
    return Transcription(text=text, language=language, duration=duration, segments=segments, task=task,
                         model=model)


async def merge_off_loop(parts: Sequence[Transcription], *, duration: float, model: str, task: str) -> Transcription:
    """``merge`` in a worker thread: an hour has thousands of segments to compare and copy (about 60 ms of
    CPU), which must not hold the event loop."""
    return await anyio.to_thread.run_sync(partial(merge, parts, duration=duration, model=model, task=task))


async def in_order(items: Iterable[T], call: Callable[[T], Awaitable[R]], ahead: int) -> AsyncIterator[R]:
    """``call(item)`` for each item, up to ``ahead`` running at once, the results yielded in the items'
    order as soon as each and those before it are done. Closing the iterator early (a client gone, an
    error) cancels the calls still running."""
    pending = iter(items)
    end = object()
    running: deque[asyncio.Task[R]] = deque()
    try:
        for item in pending:
            running.append(asyncio.ensure_future(call(item)))
            if len(running) >= ahead:
                break
        while running:
            result = await running.popleft()
            item = next(pending, end)
            if item is not end:
                running.append(asyncio.ensure_future(call(item)))  # type: ignore[arg-type]
            yield result
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
