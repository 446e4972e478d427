"""Triton tensors <-> engine types. Kept apart from model.py so it can be tested without Triton.

``parse_request`` takes any object with the Python backend's request interface
(``pb_utils.get_input_tensor_by_name`` is looked up lazily, so tests can pass a fake).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

import numpy as np

from .types import DecodeOptions, InvalidRequest, Transcription, TranscriptionRequest

Getter = Callable[[Any, str], Optional[np.ndarray]]


def _triton_getter(request: Any, name: str) -> Optional[np.ndarray]:
    import triton_python_backend_utils as pb_utils

    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _scalar(array: Optional[np.ndarray], name: str) -> Any:
    if array is None:
        return None
    if array.size != 1:
        raise InvalidRequest(f"{name} must hold one value per request, got shape {list(array.shape)}")
    return array.reshape(-1)[0]


def _text(array: Optional[np.ndarray], name: str) -> str:
    value = _scalar(array, name)
    if value is None:
        return ""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"{name} is not valid UTF-8") from None
    return str(value)


def parse_request(request: Any, get: Getter = _triton_getter) -> TranscriptionRequest:
    audio = get(request, "AUDIO")
    if audio is None:
        raise InvalidRequest("AUDIO is required")
    if audio.dtype != np.float32:
        raise InvalidRequest(f"AUDIO must be FP32, got {audio.dtype}")
    if audio.ndim == 2 and audio.shape[0] == 1:
        audio = audio[0]
    elif audio.ndim != 1:
        raise InvalidRequest(f"AUDIO must be one mono clip of shape [1, samples], got shape {list(audio.shape)}")
    beam = _scalar(get(request, "BEAM_SIZE"), "BEAM_SIZE")
    temperature = _scalar(get(request, "TEMPERATURE"), "TEMPERATURE")
    words = _scalar(get(request, "WORD_TIMESTAMPS"), "WORD_TIMESTAMPS")
    vad_filter = _text(get(request, "VAD_FILTER"), "VAD_FILTER").strip().lower()
    if vad_filter not in ("", "true", "false"):
        raise InvalidRequest(f"VAD_FILTER must be '', 'true' or 'false', got {vad_filter[:20]!r}")
    options = DecodeOptions(
        language=_text(get(request, "LANGUAGE"), "LANGUAGE") or None,
        task=_text(get(request, "TASK"), "TASK") or "transcribe",
        prompt=_text(get(request, "PROMPT"), "PROMPT"),
        word_timestamps=bool(words) if words is not None else False,
        beam_size=int(beam) if beam is not None else 0,
        temperature=float(temperature) if temperature is not None else 0.0,
        vad_filter=None if not vad_filter else vad_filter == "true",
    )
    return TranscriptionRequest(np.ascontiguousarray(audio), options)


def result_tensors(result: Transcription) -> dict[str, np.ndarray]:
    """Output arrays with the batch dimension of one request: ``[1, 1]``."""
    segments = json.dumps([s.to_dict() for s in result.segments], ensure_ascii=False)
    return {
        "TEXT": np.array([[result.text.encode("utf-8")]], dtype=np.object_),
        "SEGMENTS": np.array([[segments.encode("utf-8")]], dtype=np.object_),
        "LANGUAGE": np.array([[result.language.encode("utf-8")]], dtype=np.object_),
        "DURATION": np.array([[result.duration]], dtype=np.float32),
    }
