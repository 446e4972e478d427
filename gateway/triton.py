"""The only module that touches tritonclient: a small async wrapper over one shared gRPC channel,
for the Whisper models (``transcribe``) and the speaker model (``speaker_windows``).

Every request carries the inputs ``whisper_triton.protocol.request_arrays`` gives: all of them, defaults
included, because Triton's dynamic batcher only batches requests that carry the same set of inputs -- except
``PROMPT`` and ``CONTEXT``, sent only when set (a plain upload never waits for another request's prompted
or live decode; see there). Inference requests are built and serialised to bytes in a worker thread and sent as bytes on
the same channel (``_sent``): nothing the size of the audio is copied on the event loop. Errors leave as
``APIError`` subclasses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread
import grpc
import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult, service_pb2
from tritonclient.grpc._utils import _get_inference_request, get_error_grpc
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from gateway import metrics
from gateway.aio import Interrupted, unless
from gateway.errors import APIError, InvalidRequest, ModelNotFound, ServiceUnavailable, TooManyRequests
from gateway.results import Options, Transcription
from whisper_triton import protocol
from whisper_triton.protocol import SAMPLE_RATE

T = TypeVar("T")
OUTPUTS = protocol.OUTPUT_NAMES
OTHER_MODEL = "other"  # the metrics label of every model name that is not a ready model
PROBE_SAMPLES = 8000  # the watchdog's test inference: 0.5 s of silence (no speech: no decoding)
SPEAKER_OUTPUTS = ("EMBEDDINGS", "SPANS", "REGIONS")
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"  # Triton's gRPC method, called with bytes


@dataclass(frozen=True)
class SpeakerWindows:
    """The speaker model's answer: one row per 1.6 s window of speech."""

    embeddings: np.ndarray  # [n, dim] unit vectors
    spans: np.ndarray  # [n, 2] seconds of speech each window stands for
    regions: np.ndarray  # [n] speech region of each window


def build_inputs(audio: np.ndarray, options: Options) -> list[InferInput]:
    """The inputs of ``protocol.request_arrays``, each with a leading batch dimension of 1."""
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


def _unanswered(exc: InferenceServerException) -> bool:
    """The call got no answer from the model: its deadline passed, Triton was unreachable, or it was cancelled."""
    status = str(exc.status() or "")
    return any(code in status for code in ("DEADLINE_EXCEEDED", "UNAVAILABLE", "CANCELLED"))


class TritonClient:
    """One ``tritonclient.grpc.aio`` client (one channel) shared by all requests of the app.

    At most ``max_concurrency`` inference calls are outstanding to Triton at once; further requests
    wait here (FIFO, holding their decoded audio) instead of piling into Triton's queue, whose limit
    (``max_queue_size``) would otherwise turn a burst into 429s. Admission (how many requests the
    gateway holds at all) is the in-flight limit in ``gateway.deps``; keep ``max_concurrency`` below
    the model's ``max_queue_size`` divided by the number of gateways sharing one Triton.

    Every call has a deadline that grows with its audio (``deadline``). A call whose caller is cancelled
    (its client went away) is cancelled in Triton too: a request still in Triton's queue is dropped there.
    While the watchdog (``gateway.watchdog``) says Triton is not answering (``mark_down``), every call,
    waiting or in flight, fails at once with 503.
    """

    def __init__(self, url: str, *, timeout_s: float = 600.0, deadline_s: float = 60.0,
                 deadline_per_audio_s: float = 1.0, health_timeout_s: float = 3.0, retry_after_s: int = 2,
                 max_concurrency: int = 16) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.url = url
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.deadline_per_audio_s = deadline_per_audio_s
        self.health_timeout_s = health_timeout_s
        self.retry_after_s = retry_after_s
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._serialising = asyncio.Lock()  # one request copied at a time: a waiting request holds no copy
        self.active = 0  # inference calls outstanding to Triton now
        self.waiting = 0  # requests waiting for a slot
        self.known_models: frozenset[str] = frozenset()  # the ready models seen last: the metrics labels
        self.last_answer = time.monotonic()  # when an inference call last got Triton's answer (result or error)
        self._down = asyncio.Event()  # set while the watchdog says Triton is not answering
        self.down_reason = ""
        self._client = InferenceServerClient(url)
        # ModelInfer on tritonclient's own channel, taking the request already serialised (no serializer:
        # gRPC sends the bytes as they are), answering with tritonclient's response message
        self._model_infer = self._client._channel.unary_unary(
            MODEL_INFER, request_serializer=None, response_deserializer=service_pb2.ModelInferResponse.FromString)

    async def close(self) -> None:
        await self._client.close()

    def deadline(self, audio_seconds: float) -> float:
        """Seconds one inference call on this much audio may take, queueing in Triton included."""
        return min(self.timeout_s, self.deadline_s + self.deadline_per_audio_s * audio_seconds)

    # -- the watchdog's verdict ------------------------------------------------------------------
    @property
    def down(self) -> bool:
        return self._down.is_set()

    def mark_down(self, reason: str) -> None:
        self.down_reason = reason
        self._down.set()

    def mark_up(self) -> None:
        self.down_reason = ""
        self._down.clear()

    def _refuse_if_down(self) -> None:
        if self.down:
            metrics.TRITON_ERRORS.labels("unavailable").inc()
            raise ServiceUnavailable(f"The inference server is not answering ({self.down_reason}); retry shortly",
                                     headers={"Retry-After": str(self.retry_after_s)})

    async def _unless_down(self, call: Awaitable[T]) -> T:
        """``call``'s result, or 503 as soon as Triton is marked down (``call`` cancelled)."""
        try:
            return await unless(call, self._down.wait())
        except Interrupted:
            self._refuse_if_down()
            raise

    def model_label(self, model: str) -> str:
        """``model`` as a metrics label: a ready model's name, any other name ``other`` (bounded series)."""
        return model if model in self.known_models else OTHER_MODEL

    # -- calls -----------------------------------------------------------------------------------
    async def transcribe(self, model: str, audio: np.ndarray, options: Options) -> Transcription:
        # the inputs are serialised only once a slot is free: a waiting request holds one copy
        result = await self._infer(model, lambda: build_inputs(audio, options), OUTPUTS, audio.size / SAMPLE_RATE)
        return parse_outputs({name: result.as_numpy(name) for name in OUTPUTS}, task=options.task, model=model)

    async def speaker_windows(self, model: str, audio: np.ndarray) -> SpeakerWindows:
        """The speaker model's windows of ``audio``: embeddings, the speech span of each, its region."""
        def inputs() -> list[InferInput]:
            samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1)
            tensor = InferInput(protocol.AUDIO.name, list(samples.shape), protocol.AUDIO.triton_dtype)
            tensor.set_data_from_numpy(samples)
            return [tensor]

        result = await self._infer(model, inputs, SPEAKER_OUTPUTS, audio.size / SAMPLE_RATE)
        return SpeakerWindows(embeddings=result.as_numpy("EMBEDDINGS")[0], spans=result.as_numpy("SPANS")[0],
                              regions=result.as_numpy("REGIONS")[0])

    async def _infer(self, model: str, inputs: Callable[[], list[InferInput]], outputs: tuple[str, ...],
                     audio_seconds: float) -> Any:
        """One inference call, holding one of the ``max_concurrency`` slots while it is at Triton; its
        deadline grows with ``audio_seconds``; 503 at once while the watchdog says Triton is down."""
        self._refuse_if_down()
        self.waiting += 1
        metrics.TRITON_WAITING.inc()
        try:
            await self._unless_down(self._slots.acquire())
        finally:  # also when the request is cancelled while it waits, or Triton goes down
            self.waiting -= 1
            metrics.TRITON_WAITING.dec()
        self.active += 1
        metrics.TRITON_ACTIVE.inc()
        start = time.perf_counter()
        try:
            result = await self._unless_down(self._sent(model, inputs, outputs, self.deadline(audio_seconds)))
            self.last_answer = time.monotonic()
            return result
        except InferenceServerException as exc:
            if not _unanswered(exc):
                self.last_answer = time.monotonic()
            raise map_error(exc, model, self.retry_after_s) from None
        finally:
            self._slots.release()
            self.active -= 1
            metrics.TRITON_ACTIVE.dec()
            metrics.TRITON_LATENCY.labels(self.model_label(model)).observe(time.perf_counter() - start)

    async def _sent(self, model: str, inputs: Callable[[], list[InferInput]], outputs: tuple[str, ...],
                    deadline_s: float) -> InferResult:
        """The call. Its request is built and serialised in a worker thread, one request at a time; the
        event loop only hands the bytes to gRPC (tritonclient's own ``infer`` serialises on the loop: about
        0.1 s for 300 s of audio, during which no other request gets a turn)."""
        def request() -> bytes:
            return _get_inference_request(
                model_name=model, inputs=inputs(), model_version="", request_id="",
                outputs=[InferRequestedOutput(name) for name in outputs], sequence_id=0, sequence_start=False,
                sequence_end=False, priority=0, timeout=None, parameters=None).SerializeToString()

        async with self._serialising:
            payload = await anyio.to_thread.run_sync(request)
        return await self._infer_bytes(payload, deadline_s)  # cancelling this request cancels the call

    async def _infer_bytes(self, payload: bytes, deadline_s: float) -> InferResult:
        """ModelInfer with a serialised request; gRPC errors as tritonclient raises them."""
        try:
            return InferResult(await self._model_infer(payload, timeout=deadline_s))
        except grpc.RpcError as exc:
            raise get_error_grpc(exc) from None

    async def ready_models(self) -> list[str]:
        """Names of the models in the repository index whose state is READY."""
        try:
            index = await self._client.get_model_repository_index(as_json=True,
                                                                  client_timeout=self.health_timeout_s)
        except InferenceServerException as exc:
            raise map_error(exc, "", self.retry_after_s) from None
        names = {m["name"] for m in index.get("models", []) if m.get("state") == "READY"}
        self.known_models = frozenset(names)
        return sorted(names)

    async def server_ready(self, timeout_s: float | None = None) -> bool:
        try:
            return bool(await self._client.is_server_ready(client_timeout=timeout_s or self.health_timeout_s))
        except InferenceServerException:
            return False

    async def probe(self, model: str, timeout_s: float) -> None:
        """The watchdog's test inference: half a second of silence, straight to Triton (no slot, no queue
        here). Returns once the model answered, success or error; raises ``ServiceUnavailable`` when it
        did not answer within ``timeout_s`` or Triton is unreachable."""
        silence = np.zeros(PROBE_SAMPLES, dtype=np.float32)
        try:
            await self._sent(model, lambda: build_inputs(silence, Options()), OUTPUTS, timeout_s)
        except InferenceServerException as exc:
            if _unanswered(exc):
                raise ServiceUnavailable(f"test inference: {exc.status() or exc.message()}") from None
        self.last_answer = time.monotonic()

    async def executions(self, model: str) -> int:
        """How many executions the model has finished since Triton started (its statistics)."""
        try:
            stats = await self._client.get_inference_statistics(model, as_json=True,
                                                                client_timeout=self.health_timeout_s)
        except InferenceServerException as exc:
            raise map_error(exc, model, self.retry_after_s) from None
        return sum(int(m.get("execution_count", 0)) for m in stats.get("model_stats", []))
