"""Triton's Python-backend requests <-> engine types, through the contract in ``protocol``.

``parse_request`` takes any object with the Python backend's request interface
(``pb_utils.get_input_tensor_by_name`` is looked up lazily, so tests can pass a fake).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from . import protocol
from .types import Transcription, TranscriptionRequest

Getter = Callable[[Any, str], Optional[np.ndarray]]


def _triton_getter(request: Any, name: str) -> Optional[np.ndarray]:
    import triton_python_backend_utils as pb_utils

    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def parse_request(request: Any, get: Getter = _triton_getter) -> TranscriptionRequest:
    audio, options = protocol.parse_request(lambda name: get(request, name))
    return TranscriptionRequest(audio, options)


def result_tensors(result: Transcription) -> dict[str, np.ndarray]:
    """Output arrays with the batch dimension of one request: ``[1, 1]``."""
    return protocol.result_arrays(result.text, result.segments, result.language, result.duration)
