"""The Whisper model's Triton interface, over gRPC or HTTP."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

# Every request carries every input (see _arrays): Triton's dynamic batcher only batches requests with
# the same set of inputs, so leaving optional ones out would split batches.
OUTPUTS = ("TEXT", "SEGMENTS", "LANGUAGE", "DURATION")


@dataclass
class TritonTranscription:
    text: str
    language: str
    duration: float
    segments: list[dict] = field(default_factory=list)


def _arrays(audio: np.ndarray, language: str, task: str, prompt: str, word_timestamps: bool, beam_size: int, temperature: float,
            vad_filter: Optional[bool]) -> dict[str, np.ndarray]:
    def text(value: str) -> np.ndarray:
        return np.array([[value.encode("utf-8")]], dtype=np.object_)

    return {
        "AUDIO": np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1),
        "LANGUAGE": text(language or ""),
        "TASK": text(task or "transcribe"),
        "PROMPT": text(prompt or ""),
        "WORD_TIMESTAMPS": np.array([[bool(word_timestamps)]], dtype=bool),
        "BEAM_SIZE": np.array([[int(beam_size)]], dtype=np.int32),
        "TEMPERATURE": np.array([[float(temperature)]], dtype=np.float32),
        "VAD_FILTER": text("" if vad_filter is None else str(bool(vad_filter)).lower()),
    }


_DTYPES = {"AUDIO": "FP32", "WORD_TIMESTAMPS": "BOOL", "BEAM_SIZE": "INT32", "TEMPERATURE": "FP32"}


def build_inputs(module: Any, audio: np.ndarray, language: str = "", task: str = "transcribe", prompt: str = "",
                 word_timestamps: bool = False, beam_size: int = 0, temperature: float = 0.0,
                 vad_filter: Optional[bool] = None) -> list:
    """InferInput objects for ``module`` (``tritonclient.grpc``, ``.grpc.aio`` or ``.http``)."""
    inputs = []
    for name, array in _arrays(audio, language, task, prompt, word_timestamps, beam_size, temperature, vad_filter).items():
        tensor = module.InferInput(name, list(array.shape), _DTYPES.get(name, "BYTES"))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def parse_result(result: Any) -> TritonTranscription:
    def first(name: str) -> Any:
        return result.as_numpy(name).reshape(-1)[0]

    return TritonTranscription(
        text=first("TEXT").decode("utf-8"),
        language=first("LANGUAGE").decode("utf-8"),
        duration=float(first("DURATION")),
        segments=json.loads(first("SEGMENTS").decode("utf-8")),
    )


class WhisperTritonClient:
    """Synchronous client; ``url`` is ``host:8001`` for gRPC or ``host:8000`` with ``protocol="http"``."""

    def __init__(self, url: str = "localhost:8001", model: str = "whisper", protocol: str = "grpc", timeout_s: Optional[float] = None):
        if protocol == "grpc":
            import tritonclient.grpc as module
        elif protocol == "http":
            import tritonclient.http as module
        else:
            raise ValueError("protocol must be 'grpc' or 'http'")
        self.module, self.model, self.timeout_s = module, model, timeout_s
        self.protocol = protocol
        self._client = module.InferenceServerClient(url=url)

    def transcribe(self, audio: np.ndarray, language: str = "", task: str = "transcribe", prompt: str = "",
                   word_timestamps: bool = False, beam_size: int = 0, temperature: float = 0.0,
                   vad_filter: Optional[bool] = None) -> TritonTranscription:
        inputs = build_inputs(self.module, audio, language, task, prompt, word_timestamps, beam_size, temperature, vad_filter)
        outputs = [self.module.InferRequestedOutput(name) for name in OUTPUTS]
        kwargs = {}
        if self.timeout_s:
            kwargs["client_timeout" if self.protocol == "grpc" else "timeout"] = self.timeout_s
        result = self._client.infer(self.model, inputs, outputs=outputs, **kwargs)
        return parse_result(result)

    def ready(self) -> bool:
        return bool(self._client.is_model_ready(self.model))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "WhisperTritonClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
