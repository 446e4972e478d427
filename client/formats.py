"""Segments -> SubRip and WebVTT text: the one implementation, used by the CLI and the gateway's
``response_format=srt|vtt`` (``gateway.formats``). Pure functions with exact output."""

from __future__ import annotations

import re
from typing import Iterable, Optional

from whisper_triton.protocol import Segment


def timestamp(seconds: float, separator: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SRT) or with ``.`` (VTT); hours grow past 99 when needed."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def display(speaker: str) -> str:
    """A speaker as subtitles show it: ``Speaker A`` for an unnamed speaker, else the given name."""
    return f"Speaker {speaker}" if re.fullmatch(r"[A-Z]{1,2}", speaker) else speaker


def _cues(segments: Iterable[Segment]) -> list[tuple[float, float, str, Optional[str]]]:
    cues = []
    for s in segments:
        text = " ".join(s.text.split())
        if text:
            cues.append((s.start, max(s.end, s.start), text, display(s.speaker) if s.speaker else None))
    return cues


def to_srt(segments: Iterable[Segment]) -> str:
    """SubRip cues; a diarized result's cues start with their speaker (``Speaker A: ...``)."""
    blocks = [f"{i}\n{timestamp(start)} --> {timestamp(end)}\n{f'{who}: ' if who else ''}{text}\n"
              for i, (start, end, text, who) in enumerate(_cues(segments), start=1)]
    return "\n".join(blocks)


def to_vtt(segments: Iterable[Segment]) -> str:
    """WebVTT cues; a diarized result's cues carry a voice span (``<v Speaker A>...``)."""
    blocks = [f"{timestamp(start, '.')} --> {timestamp(end, '.')}\n{_voice(who) if who else ''}{text}\n"
              for start, end, text, who in _cues(segments)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _voice(who: str) -> str:
    """A WebVTT voice tag; its annotation may not hold ``>`` or a line break, and ``&``/``<`` are escaped."""
    clean = " ".join(who.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").split())
    return f"<v {clean}>"
