"""The only module that touches tritonclient: a small async wrapper over one shared gRPC channel,
for the Whisper models (``transcribe``) and the speaker model (``speaker_windows``).

Every request carries all eight inputs (defaults included), because Triton's dynamic batcher only
batches requests that carry the same set of inputs. Errors leave as ``APIError`` subclasses.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable

import anyio.to_thread
import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from gateway import metrics
from gateway.errors import APIError, InvalidRequest, ModelNotFound, ServiceUnavailable, TooManyRequests
from gateway.results import Options, Transcription
from whisper_triton import protocol

OUTPUTS = protocol.OUTPUT_NAMES
SPEAKER_OUTPUTS = ("EMBEDDINGS", "SPANS", "REGIONS")
SERIALISING_STEPS = 2  # loop turns a call takes to copy its request: tritonclient's, then gRPC's


@dataclass(frozen=True)
class SpeakerWindows:
    """The speaker model's answer: one row per 1.6 s window of speech."""

    embeddings: np.ndarray  # [n, dim] unit vectors
    spans: np.ndarray  # [n, 2] seconds of speech each window stands for
    regions: np.ndarray  # [n] speech region of each window


def build_inputs(audio: np.ndarray, options: Options) -> list[InferInput]:
    """All eight inputs, each with a leading batch dimension of 1 (``protocol.request_arrays``)."""
    inputs = []
    for name, array in protocol.request_arrays(audio, options).items():
        tensor = InferInput(name, list(array.shape), protocol.TRITON_DTYPES[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def parse_outputs(outputs: dict[str, Any], *, task: str, model: str) -> Transcription:
    """Triton's TEXT/SEGMENTS/LANGUAGE/DURATION tensors (as numpy) -> ``Transcription``."""
    result = protocol.parse_result(outputs.__getitem__)
    return Transcription(text=result.text.strip(), language=result.language, duration=result.duration,
                         segments=result.segments, task=task, model=model)


def map_error(exc: InferenceServerException, model: str, retry_after_s: int = 2) -> APIError:
    """Triton's per-request error -> the gateway's HTTP error (status, OpenAI type and code)."""
    status = str(exc.status() or "")
    message = str(exc.message() or "").strip() or "Triton request failed"
    low = message.lower()
    if "exceeds maximum queue size" in low or "RESOURCE_EXHAUSTED" in status:
        kind, error = "queue_full", TooManyRequests(
            "The model is busy (queue full); retry shortly", headers={"Retry-After": str(retry_after_s)})
    elif "NOT_FOUND" in status or "unknown model" in low or ("model" in low and "not found" in low):
        kind, error = "model_not_found", ModelNotFound(
            f"The model '{model}' does not exist or is not ready", param="model")
    elif "INVALID_ARGUMENT" in status:
        kind, error = "invalid_argument", InvalidRequest(message, param="language" if "language" in low else None)
    elif "DEADLINE_EXCEEDED" in status:
        kind, error = "timeout", ServiceUnavailable("The model did not answer in time")
    elif "UNAVAILABLE" in status or "failed to connect" in low or "connection refused" in low:
        kind, error = "unavailable", ServiceUnavailable("The inference server is unavailable")
    elif "CANCELLED" in status:
        kind, error = "cancelled", ServiceUnavailable("The inference request was cancelled")
    else:
        kind, error = "internal", APIError(f"Inference failed: {message}", status_code=502,
                                           type="server_error", code="inference_failed")
    metrics.TRITON_ERRORS.labels(kind).inc()
    return error


class TritonClient:
    """One ``tritonclient.grpc.aio`` client (one channel) shared by all requests of the app.

    At most ``max_concurrency`` inference calls are outstanding to Triton at once; further requests
    wait here (FIFO, holding their decoded audio) instead of piling into Triton's queue, whose limit
    (``max_queue_size``) would otherwise turn a burst into 429s. Admission (how many requests the
    gateway holds at all) is the in-flight limit in ``gateway.deps``; keep ``max_concurrency`` below
    the model's ``max_queue_size`` divided by the number of gateways sharing one Triton.
    """

    def __init__(self, url: str, *, timeout_s: float = 600.0, health_timeout_s: float = 3.0,
                 retry_after_s: int = 2, max_concurrency: int = 16) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.url = url
        self.timeout_s = timeout_s
        self.health_timeout_s = health_timeout_s
        self.retry_after_s = retry_after_s
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._serialising = asyncio.Lock()
        self.active = 0  # inference calls outstanding to Triton now
        self.waiting = 0  # requests waiting for a slot
        self._client = InferenceServerClient(url)

    async def close(self) -> None:
        await self._client.close()

    async def transcribe(self, model: str, audio: np.ndarray, options: Options) -> Transcription:
        # the inputs are serialised only once a slot is free: a waiting request holds one copy
        result = await self._infer(model, lambda: build_inputs(audio, options), OUTPUTS)
        return parse_outputs({name: result.as_numpy(name) for name in OUTPUTS}, task=options.task, model=model)

    async def speaker_windows(self, model: str, audio: np.ndarray) -> SpeakerWindows:
        """The speaker model's windows of ``audio``: embeddings, the speech span of each, its region."""
        def inputs() -> list[InferInput]:
            samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1)
            tensor = InferInput(protocol.AUDIO.name, list(samples.shape), protocol.AUDIO.triton_dtype)
            tensor.set_data_from_numpy(samples)
            return [tensor]

        result = await self._infer(model, inputs, SPEAKER_OUTPUTS)
        return SpeakerWindows(embeddings=result.as_numpy("EMBEDDINGS")[0], spans=result.as_numpy("SPANS")[0],
                              regions=result.as_numpy("REGIONS")[0])

    async def _infer(self, model: str, inputs: Callable[[], list[InferInput]], outputs: tuple[str, ...]) -> Any:
        """One inference call, holding one of the ``max_concurrency`` slots while it is at Triton."""
        self.waiting += 1
        metrics.TRITON_WAITING.inc()
        try:
            await self._slots.acquire()
        finally:  # also when the request is cancelled while it waits
            self.waiting -= 1
            metrics.TRITON_WAITING.dec()
        self.active += 1
        metrics.TRITON_ACTIVE.inc()
        start = time.perf_counter()
        try:
            return await self._sent(model, inputs, outputs)
        except InferenceServerException as exc:
            raise map_error(exc, model, self.retry_after_s) from None
        finally:
            self._slots.release()
            self.active -= 1
            metrics.TRITON_ACTIVE.dec()
            metrics.TRITON_LATENCY.labels(model).observe(time.perf_counter() - start)

    async def _sent(self, model: str, inputs: Callable[[], list[InferInput]], outputs: tuple[str, ...]) -> Any:
        """The call, its request serialised one at a time: the inputs are built in a worker thread, then
        tritonclient copies them into its request (the call's first step) and gRPC into its message (the
        next loop turn, in the task gRPC starts for the call). Both steps run before the next request's, one
        per loop turn, so other requests get a turn between two such copies (each of at most a few MB: long
        audio goes in pieces, see ``service.transcribe``)."""
        async with self._serialising:
            tensors = await anyio.to_thread.run_sync(inputs)
            call = asyncio.ensure_future(self._client.infer(
                model, tensors, outputs=[InferRequestedOutput(name) for name in outputs],
                client_timeout=self.timeout_s))
            try:
                for _ in range(SERIALISING_STEPS):
                    await asyncio.sleep(0)
            except BaseException:
                call.cancel()
                raise
        return await call  # cancelling this request cancels the call

    async def ready_models(self) -> list[str]:
        """Names of the models in the repository index whose state is READY."""
        try:
            index = await self._client.get_model_repository_index(as_json=True,
                                                                  client_timeout=self.health_timeout_s)
        except InferenceServerException as exc:
            raise map_error(exc, "", self.retry_after_s) from None
        names = {m["name"] for m in index.get("models", []) if m.get("state") == "READY"}
        return sorted(names)

    async def server_ready(self) -> bool:
        try:
            return bool(await self._client.is_server_ready(client_timeout=self.health_timeout_s))
        except InferenceServerException:
            return False
