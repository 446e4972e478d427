"""What a live session is set up with: its pacing and limits (from the gateway's Settings) and what its
turns are decoded with."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.results import Options


@dataclass(frozen=True)
class StreamConfig:
    partial_s: float = 1.0  # new audio of the open turn between two partial decodes
    min_partial_s: float = 0.5  # no partial of a turn shorter than this
    partial_beam: int = 1  # greedy partials
    final_beam: int = 1  # the turn's one decode (0: the model's default)
    max_turn_s: float = 15.0  # a longer turn is cut at its quietest frame (and a manual buffer committed)
    max_backlog_s: float = 30.0  # audio waiting to be decoded past which the client is no longer read
    prompt_chars: int = 200  # previous turns' text given as the prompt
    context: str = ""  # the decodes' encoder context (protocol.Options.context): "" = the model's setting
    # The VAD hears at most this far ahead of the session's wall clock (None: as fast as audio arrives).
    # A live source never needs more; a client sending faster than real time costs no more VAD than a
    # live one until it is refused (until the end of its audio, when the rest is heard at once).
    vad_lead_s: float | None = None

    @classmethod
    def from_settings(cls, settings) -> "StreamConfig":
        return cls(partial_s=settings.stream_step_s, partial_beam=settings.stream_beam_size,
                   final_beam=settings.stream_final_beam_size, max_turn_s=settings.stream_max_turn_s,
                   context=settings.stream_context,
                   max_backlog_s=max(settings.stream_max_buffer_s, settings.stream_max_turn_s))


@dataclass(frozen=True)
class Decoding:
    """What a session's turns are decoded with; ``options.prompt`` is the client's own prompt."""

    model: str
    options: Options
    conversion: str = "none"
