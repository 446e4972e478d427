"""Server VAD turn detection over speech probabilities, as OpenAI's ``server_vad`` describes it: pure state.

A turn starts once ``MIN_SPEECH_FRAMES`` frames in a row reach ``threshold`` (its audio begins
``prefix_padding_ms`` before the first of them, never before the previous turn's end) and stops once
``silence_duration_ms`` of frames fall below ``threshold - 0.15`` (Silero's hysteresis); its audio then
ends where the silence was long enough. A turn that reaches ``max_turn_s`` is cut at its quietest frame
of the last ``CUT_WINDOW_S`` and the speech goes on as a new turn: no turn (so no decode) is longer than
Whisper's window, however long the speaker talks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from gateway.streaming.vad import FRAME
from whisper_triton.protocol import SAMPLE_RATE

MIN_SPEECH_FRAMES = 3  # 96 ms: a click is no turn
HYSTERESIS = 0.15
CUT_WINDOW_S = 3.0


@dataclass(frozen=True)
class ServerVad:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class Boundary:
    """``start``: ``sample`` is the turn's first sample (padding included), ``speech`` its first speech sample.
    ``stop``: ``sample`` is where the turn's audio ends, ``speech`` the end of its last speech frame."""

    kind: Literal["start", "stop"]
    sample: int
    speech: int
    forced: bool = False  # cut at max_turn_s, not at a pause


class TurnDetector:
    def __init__(self, vad: ServerVad, max_turn_s: float = 15.0, origin: int = 0) -> None:
        self.vad = vad
        self.origin = origin  # the session sample of frame 0
        self.max_turn = int(max_turn_s * SAMPLE_RATE)
        self.in_turn = False
        self.turn_start = 0
        self._floor = 0  # a turn never starts before the previous one ended
        self._run = 0  # speech frames in a row, outside a turn
        self._first = 0  # the first of them
        self._silent = 0  # silent frames in a row, inside a turn
        self._speech_end = 0
        self._tail: deque[tuple[int, float]] = deque(maxlen=int(CUT_WINDOW_S * SAMPLE_RATE / FRAME))

    def keep_from(self, received: int) -> int:
        """The first sample still needed when ``received`` samples have arrived."""
        if self.in_turn:
            return self.turn_start
        pad = self.vad.prefix_padding_ms * SAMPLE_RATE // 1000
        first = self.origin + self._first * FRAME if self._run else received - FRAME
        return max(self._floor, min(first, received - FRAME) - pad, 0)

    def feed(self, probs, first_frame: int) -> list[Boundary]:
        out: list[Boundary] = []
        threshold, low = self.vad.threshold, self.vad.threshold - HYSTERESIS
        silence = max(1, -(-self.vad.silence_duration_ms * SAMPLE_RATE // 1000 // FRAME))  # frames, rounded up
        pad = self.vad.prefix_padding_ms * SAMPLE_RATE // 1000
        for k, p in enumerate(probs):
            i = first_frame + k
            end = self.origin + (i + 1) * FRAME
            if not self.in_turn:
                if p >= threshold:
                    if self._run == 0:
                        self._first = i
                    self._run += 1
                    if self._run >= MIN_SPEECH_FRAMES:
                        speech = self.origin + self._first * FRAME
                        self._open(max(self._floor, speech - pad), speech, end, out)
                else:
                    self._run = 0
                continue
            self._tail.append((i, float(p)))
            if p >= low:
                self._silent = 0
                if p >= threshold:
                    self._speech_end = end
            else:
                self._silent += 1
                if self._silent >= silence:
                    self._close(end, out)
                    continue
            if end - self.turn_start >= self.max_turn:
                quietest = min(self._tail, key=lambda item: item[1])[0]
                cut = max(self.origin + (quietest + 1) * FRAME, self.turn_start + FRAME)
                after = [item for item in self._tail if item[0] > quietest]
                self._close(cut, out, forced=True)
                self._open(cut, cut, end, out, forced=True)
                self._tail.extend(after)
        return out

    def _open(self, start: int, speech: int, speech_end: int, out: list[Boundary], forced: bool = False) -> None:
        self.in_turn, self.turn_start, self._silent, self._run = True, start, 0, 0
        self._speech_end = speech_end
        self._tail.clear()
        out.append(Boundary("start", start, speech, forced))

    def _close(self, end: int, out: list[Boundary], forced: bool = False) -> None:
        self.in_turn, self._floor, self._run = False, end, 0
        out.append(Boundary("stop", end, min(self._speech_end, end), forced))

    def close_turn(self, end: int) -> Boundary | None:
        """End the open turn at ``end`` (the stream ended, or the client committed): its stop, or None."""
        if not self.in_turn:
            return None
        out: list[Boundary] = []
        self._close(end, out)
        return out[0]

    def reset(self, at: int) -> None:
        """Forget everything before ``at`` (the buffer was cleared or committed by the client)."""
        self.in_turn, self._run, self._silent = False, 0, 0
        self._floor = at
        self._tail.clear()
