"""The Whisper model's Triton contract, in one place: tensor names and dtypes, the option set, and the
SEGMENTS JSON schema (``Segment``, ``Word``) with its one dump and one parse.

numpy only: the Triton model (``model_repository/*/1/model.py``), the gateway, ``client/`` and the tests
import it without CTranslate2 or tritonclient. ``model_repository/whisper*/config.pbtxt`` declares the same
tensors for Triton; ``tests/unit/test_protocol.py`` checks that they match.

A request is one mono clip (``AUDIO``, FP32 ``[1, samples]`` at 16 kHz) and one value of each option
(``[1, 1]``); the answer is ``TEXT``, ``SEGMENTS`` (JSON), ``LANGUAGE`` and ``DURATION`` (seconds).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Optional

import numpy as np

SAMPLE_RATE = 16000
TASKS = ("transcribe", "translate")


class InvalidArgument(ValueError):
    """A request that breaks the contract or cannot be served as sent; it fails alone with Triton's
    ``INVALID_ARG`` (which the gateway turns into its HTTP 400, ``gateway.errors.InvalidRequest``)."""


@dataclass(frozen=True)
class Tensor:
    name: str
    triton_dtype: str  # as tritonclient and config.pbtxt (TYPE_<...>, STRING = BYTES) name it
    dtype: Any  # the numpy dtype of its array


AUDIO = Tensor("AUDIO", "FP32", np.float32)
INPUTS: tuple[Tensor, ...] = (
    AUDIO,
    Tensor("LANGUAGE", "BYTES", np.object_),  # ISO code; empty or absent = detect
    Tensor("TASK", "BYTES", np.object_),  # "transcribe" (default) or "translate"
    Tensor("PROMPT", "BYTES", np.object_),  # initial prompt text
    Tensor("WORD_TIMESTAMPS", "BOOL", np.bool_),
    Tensor("BEAM_SIZE", "INT32", np.int32),  # 0 = the model's beam_size parameter
    Tensor("TEMPERATURE", "FP32", np.float32),
    Tensor("VAD_FILTER", "BYTES", np.object_),  # "true", "false", or "" = the model's vad_filter parameter
    Tensor("CONTEXT", "BYTES", np.object_),  # "trimmed", "full", or "" = the model's trim_languages parameter
)
CONTEXTS = ("", "trimmed", "full")
OUTPUTS: tuple[Tensor, ...] = (
    Tensor("TEXT", "BYTES", np.object_),
    Tensor("SEGMENTS", "BYTES", np.object_),  # JSON list of Segment.to_dict()
    Tensor("LANGUAGE", "BYTES", np.object_),
    Tensor("DURATION", "FP32", np.float32),
)
INPUT_NAMES = tuple(t.name for t in INPUTS)
OUTPUT_NAMES = tuple(t.name for t in OUTPUTS)
TRITON_DTYPES = {t.name: t.triton_dtype for t in INPUTS}


@dataclass(frozen=True)
class Options:
    """Per-request decoding options; every field travels as its own input tensor."""

    language: Optional[str] = None  # None (or "") = detect
    task: str = "transcribe"  # or "translate"
    prompt: str = ""
    word_timestamps: bool = False
    beam_size: int = 0  # 0 = the model's default
    temperature: float = 0.0
    vad_filter: Optional[bool] = None  # None = the model's vad_filter parameter
    # "trimmed": decoded first at a trimmed encoder context whatever the language (live turns: about twice
    # the throughput, not faster-whisper's exact text); "full": at 30 s; "": the model's trim_languages
    context: str = ""

    def __post_init__(self) -> None:
        if self.language == "":  # one spelling of "detect"
            object.__setattr__(self, "language", None)


# ------------------------------------------------------------------ request tensors
def _text(value: str) -> np.ndarray:
    return np.array([[value.encode("utf-8")]], dtype=np.object_)


def request_arrays(audio: np.ndarray, options: Options) -> dict[str, np.ndarray]:
    """The input arrays of one request, each with a leading batch dimension of 1, in ``INPUTS`` order.

    Every input is sent, defaults included (Triton's dynamic batcher only batches requests that carry the
    same set of inputs), except ``PROMPT`` and ``CONTEXT``, sent only when set: a request with a prompt then never
    shares an execution with one without, whose decode would wait for the prompted one (the engine decodes
    each prompt length as its own group; ``make bench-hostile``: 3.0x idle latency beside prompted uploads
    with every input always sent, 1.5x with PROMPT apart).
    """
    arrays = {
        "AUDIO": np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1),
        "LANGUAGE": _text(options.language or ""),
        "TASK": _text(options.task or "transcribe"),
        "PROMPT": _text(options.prompt),
        "WORD_TIMESTAMPS": np.array([[bool(options.word_timestamps)]], dtype=bool),
        "BEAM_SIZE": np.array([[int(options.beam_size)]], dtype=np.int32),
        "TEMPERATURE": np.array([[float(options.temperature)]], dtype=np.float32),
        "VAD_FILTER": _text("" if options.vad_filter is None else str(bool(options.vad_filter)).lower()),
        "CONTEXT": _text(options.context),
    }
    if not options.prompt:
        del arrays["PROMPT"]
    if not options.context:  # a live session's requests batch with each other, uploads with uploads
        del arrays["CONTEXT"]
    return arrays


Getter = Callable[[str], Optional[np.ndarray]]


def _scalar(array: Optional[np.ndarray], name: str) -> Any:
    if array is None:
        return None
    if array.size != 1:
        raise InvalidArgument(f"{name} must hold one value per request, got shape {list(array.shape)}")
    return array.reshape(-1)[0]


def _string(array: Optional[np.ndarray], name: str) -> str:
    value = _scalar(array, name)
    if value is None:
        return ""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument(f"{name} is not valid UTF-8") from None
    return str(value)


def parse_request(get: Getter) -> tuple[np.ndarray, Options]:
    """One request's audio (mono float32) and options, from ``get(name)`` -> its array or None."""
    audio = get("AUDIO")
    if audio is None:
        raise InvalidArgument("AUDIO is required")
    if audio.dtype != np.float32:
        raise InvalidArgument(f"AUDIO must be FP32, got {audio.dtype}")
    if audio.ndim == 2 and audio.shape[0] == 1:
        audio = audio[0]
    elif audio.ndim != 1:
        raise InvalidArgument(f"AUDIO must be one mono clip of shape [1, samples], got shape {list(audio.shape)}")
    beam = _scalar(get("BEAM_SIZE"), "BEAM_SIZE")
    temperature = _scalar(get("TEMPERATURE"), "TEMPERATURE")
    words = _scalar(get("WORD_TIMESTAMPS"), "WORD_TIMESTAMPS")
    vad_filter = _string(get("VAD_FILTER"), "VAD_FILTER").strip().lower()
    if vad_filter not in ("", "true", "false"):
        raise InvalidArgument(f"VAD_FILTER must be '', 'true' or 'false', got {vad_filter[:20]!r}")
    context = _string(get("CONTEXT"), "CONTEXT").strip().lower()
    if context not in CONTEXTS:
        raise InvalidArgument(f"CONTEXT must be '', 'trimmed' or 'full', got {context[:20]!r}")
    options = Options(
        language=_string(get("LANGUAGE"), "LANGUAGE") or None,
        task=_string(get("TASK"), "TASK") or "transcribe",
        prompt=_string(get("PROMPT"), "PROMPT"),
        word_timestamps=bool(words) if words is not None else False,
        beam_size=int(beam) if beam is not None else 0,
        temperature=float(temperature) if temperature is not None else 0.0,
        vad_filter=None if not vad_filter else vad_filter == "true",
        context=context,
    )
    return np.ascontiguousarray(audio), options


# ------------------------------------------------------------------ the SEGMENTS schema
@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds on the request's timeline
    end: float
    probability: float = 0.0


@dataclass(frozen=True)
class Segment:
    id: int
    start: float  # seconds on the request's timeline
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0
    tokens: tuple[int, ...] = ()  # the segment's text tokens (Whisper's vocabulary)
    words: Optional[tuple[Word, ...]] = None  # only when the request asked for word timestamps
    speaker: Optional[str] = None  # never set by the model: the gateway's diarization adds it

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tokens"] = list(self.tokens)
        if self.words is None:
            data.pop("words")
        else:
            data["words"] = [asdict(w) for w in self.words]
        if self.speaker is None:
            data.pop("speaker")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], index: int = 0) -> "Segment":
        words = data.get("words")
        return cls(
            id=int(data.get("id", index)),
            start=float(data.get("start", 0.0)),
            end=float(data.get("end", 0.0)),
            text=str(data.get("text", "")),
            avg_logprob=float(data.get("avg_logprob", 0.0)),
            no_speech_prob=float(data.get("no_speech_prob", 0.0)),
            compression_ratio=float(data.get("compression_ratio", 0.0)),
            temperature=float(data.get("temperature", 0.0)),
            tokens=tuple(int(t) for t in data.get("tokens") or ()),
            words=None if words is None else tuple(
                Word(str(w.get("word", "")), float(w.get("start", 0.0)), float(w.get("end", 0.0)),
                     float(w.get("probability", 0.0)))
                for w in words),
            speaker=data.get("speaker") or None,
        )


def dump_segments(segments: Any) -> str:
    """The SEGMENTS tensor's JSON text."""
    return json.dumps([s.to_dict() for s in segments], ensure_ascii=False)


def parse_segments(text: str) -> tuple[Segment, ...]:
    """SEGMENTS JSON text -> segments (a segment without an ``id`` gets its index)."""
    return tuple(Segment.from_dict(s, i) for i, s in enumerate(json.loads(text or "[]")))


# ------------------------------------------------------------------ response tensors
@dataclass(frozen=True)
class Result:
    """What one response carries: the model's four outputs."""

    text: str
    language: str
    duration: float
    segments: tuple[Segment, ...] = field(default_factory=tuple)


def result_arrays(text: str, segments: Any, language: str, duration: float) -> dict[str, np.ndarray]:
    """The output arrays of one response, with the batch dimension of one request: ``[1, 1]``."""
    return {
        "TEXT": _text(text),
        "SEGMENTS": _text(dump_segments(segments)),
        "LANGUAGE": _text(language),
        "DURATION": np.array([[duration]], dtype=np.float32),
    }


def _first(array: Any) -> Any:
    return np.asarray(array).reshape(-1)[0]


def _decoded(array: Any) -> str:
    item = _first(array)
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def parse_result(get: Callable[[str], Any]) -> Result:
    """One response's outputs, from ``get(name)`` -> its array (``InferResult.as_numpy``)."""
    return Result(
        text=_decoded(get("TEXT")),
        language=_decoded(get("LANGUAGE")),
        duration=float(_first(get("DURATION"))),
        segments=parse_segments(_decoded(get("SEGMENTS"))),
    )
