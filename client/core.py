"""The Whisper model's Triton interface, over gRPC or HTTP."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from whisper_triton import protocol
from whisper_triton.protocol import Options

OUTPUTS = protocol.OUTPUT_NAMES


TritonTranscription = protocol.Result  # text, language, duration, segments


def build_inputs(module: Any, audio: np.ndarray, language: str = "", task: str = "transcribe", prompt: str = "",
                 word_timestamps: bool = False, beam_size: int = 0, temperature: float = 0.0,
                 vad_filter: Optional[bool] = None) -> list:
    """InferInput objects for ``module`` (``tritonclient.grpc``, ``.grpc.aio`` or ``.http``)."""
    options = Options(language=language, task=task, prompt=prompt, word_timestamps=word_timestamps,
                      beam_size=beam_size, temperature=temperature, vad_filter=vad_filter)
    inputs = []
    for name, array in protocol.request_arrays(audio, options).items():
        tensor = module.InferInput(name, list(array.shape), protocol.TRITON_DTYPES[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def parse_result(result: Any) -> TritonTranscription:
    """An ``InferResult`` -> text, language, duration and typed segments."""
    return protocol.parse_result(result.as_numpy)


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
