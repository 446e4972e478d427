"""The Triton wrapper without a server: inputs, output parsing and the error map."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from gateway.errors import InvalidRequest, ModelNotFound, ServiceUnavailable, TooManyRequests
from gateway.results import Options
from gateway import metrics
from gateway.triton import TritonClient, build_inputs, map_error, parse_outputs


def test_every_input_of_the_model_is_sent_and_the_prompt_only_when_there_is_one():
    """Triton batches only requests with the same set of inputs: the gateway sends every input the model
    declares, defaults included -- except PROMPT and CONTEXT (sent when set), so that a request with a prompt never shares an execution
    with one without (a plain upload never waits for a stream step's or a long prompt's decode)."""
    import re
    from pathlib import Path

    config = (Path(__file__).resolve().parents[2] / "model_repository" / "whisper" / "config.pbtxt").read_text()
    declared = re.findall(r'name:\s*"([A-Z_]+)"', config.split("output [")[0])
    without = build_inputs(np.zeros(16000, dtype=np.float32), Options())
    assert [i.name() for i in without] == [name for name in declared if name not in ("PROMPT", "CONTEXT")]
    inputs = build_inputs(np.zeros(16000, dtype=np.float64), Options(prompt="Glossary: CTranslate2.", context="trimmed"))
    by_name = {i.name(): i for i in inputs}
    assert list(by_name) == declared == ["AUDIO", "LANGUAGE", "TASK", "PROMPT", "WORD_TIMESTAMPS", "BEAM_SIZE",
                                         "TEMPERATURE", "VAD_FILTER", "CONTEXT"]
    assert by_name["VAD_FILTER"].datatype() == "BYTES"
    assert by_name["AUDIO"].shape() == [1, 16000] and by_name["AUDIO"].datatype() == "FP32"
    assert {n: by_name[n].datatype() for n in ("LANGUAGE", "TASK", "PROMPT", "WORD_TIMESTAMPS", "BEAM_SIZE",
                                               "TEMPERATURE")} == {
        "LANGUAGE": "BYTES", "TASK": "BYTES", "PROMPT": "BYTES", "WORD_TIMESTAMPS": "BOOL",
        "BEAM_SIZE": "INT32", "TEMPERATURE": "FP32"}
    assert all(by_name[n].shape() == [1, 1] for n in by_name if n != "AUDIO")


def test_parse_outputs():
    segments = [{"id": 0, "start": 0.0, "end": 1.5, "text": " hi", "avg_logprob": -0.1, "no_speech_prob": 0.0,
                 "compression_ratio": 1.0, "words": [{"word": " hi", "start": 0.1, "end": 1.4, "probability": 0.9}]}]
    result = parse_outputs({
        "TEXT": np.array([[b" hi"]], dtype=object),
        "SEGMENTS": np.array([[json.dumps(segments).encode()]], dtype=object),
        "LANGUAGE": np.array([[b"en"]], dtype=object),
        "DURATION": np.array([[1.5]], dtype=np.float32),
    }, task="transcribe", model="whisper")
    assert result.text == "hi" and result.language == "en" and result.duration == 1.5
    assert result.segments[0].words[0].word == " hi" and result.words[0].probability == pytest.approx(0.9)


@pytest.mark.parametrize(("status", "message", "expected", "http"), [
    ("StatusCode.INVALID_ARGUMENT", "unknown language code 'xx'", InvalidRequest, 400),
    ("StatusCode.INVALID_ARGUMENT", "AUDIO is empty", InvalidRequest, 400),
    ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", TooManyRequests, 429),
    ("StatusCode.RESOURCE_EXHAUSTED", "queue full", TooManyRequests, 429),
    ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", ServiceUnavailable, 503),
    ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", ServiceUnavailable, 503),
    ("StatusCode.NOT_FOUND", "Request for unknown model: 'foo' is not found", ModelNotFound, 404),
    ("StatusCode.UNAVAILABLE", "Request for unknown model: 'foo' has no available versions", ModelNotFound, 404),
])
def test_error_map(status, message, expected, http):
    error = map_error(InferenceServerException(msg=message, status=status), "foo", retry_after_s=3)
    assert isinstance(error, expected) and error.status_code == http
    if http == 400:
        assert error.message == message  # the model's message is passed through
    if http == 429:
        assert error.headers == {"Retry-After": "3"}
    if http == 404:
        assert error.code == "model_not_found" and error.param == "model"


def test_unexpected_triton_error_is_not_a_500():
    error = map_error(InferenceServerException(msg="boom", status="StatusCode.INTERNAL"), "whisper")
    assert error.status_code == 502 and "boom" in error.message


# ---------------------------------------------------------------- bounded concurrency towards Triton
class _FakeResult:
    def as_numpy(self, name):
        return {"TEXT": np.array([[b" ok"]], dtype=object), "SEGMENTS": np.array([[b"[]"]], dtype=object),
                "LANGUAGE": np.array([[b"en"]], dtype=object), "DURATION": np.array([[1.0]], dtype=np.float32)}[name]


class _FakeGrpc:
    """Stands in for ``TritonClient._infer_bytes`` (the call with the serialised request): ``infer`` blocks
    until released; records how many calls were outstanding at once."""

    def __init__(self, fail: set[int] = frozenset()):
        self.outstanding = 0
        self.peak = 0
        self.started: list[int] = []
        self.release = None
        self.fail = fail
        self.arrived = asyncio.Event()
        self.idle = asyncio.Event()  # set whenever no call is outstanding

    async def until_outstanding(self, count: int) -> None:
        """Wait until ``count`` calls are at the fake Triton (their inputs are built in worker threads)."""
        async with asyncio.timeout(5):
            while self.outstanding < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def infer(self, payload, timeout):
        n = len(self.started)  # call order
        self.started.append(n)
        self.outstanding += 1
        self.peak = max(self.peak, self.outstanding)
        self.arrived.set()
        try:
            await self.release.wait()
            if n in self.fail:
                raise InferenceServerException(msg="AUDIO is empty", status="StatusCode.INVALID_ARGUMENT")
            return _FakeResult()
        finally:
            self.outstanding -= 1
            if not self.outstanding:
                self.idle.set()


def test_client_holds_requests_past_max_concurrency():
    async def scenario():
        client = TritonClient("127.0.0.1:1", max_concurrency=3)
        fake = _FakeGrpc(fail={1})
        client._infer_bytes = fake.infer
        fake.release = asyncio.Event()
        tasks = [asyncio.create_task(client.transcribe("whisper", np.zeros(160, np.float32), Options()))
                 for _ in range(10)]
        await fake.until_outstanding(3)
        assert (client.active, client.waiting, fake.outstanding) == (3, 7, 3)
        assert metrics.TRITON_WAITING._value.get() == 7 and metrics.TRITON_ACTIVE._value.get() == 3
        fake.release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        # every request reached Triton, never more than 3 at once, and an error frees its slot too
        assert fake.peak == 3 and len(fake.started) == 10
        assert isinstance(outcomes[1], InvalidRequest)
        assert [o.text for i, o in enumerate(outcomes) if i != 1] == ["ok"] * 9
        assert (client.active, client.waiting) == (0, 0)
        assert metrics.TRITON_WAITING._value.get() == 0 and metrics.TRITON_ACTIVE._value.get() == 0

    asyncio.run(scenario())


def test_a_cancelled_waiter_frees_nothing_it_did_not_take():
    async def scenario():
        client = TritonClient("127.0.0.1:1", max_concurrency=1)
        fake = _FakeGrpc()
        client._infer_bytes = fake.infer
        fake.release = asyncio.Event()
        first = asyncio.create_task(client.transcribe("whisper", np.zeros(160, np.float32), Options()))
        second = asyncio.create_task(client.transcribe("whisper", np.zeros(160, np.float32), Options()))
        await fake.until_outstanding(1)
        assert (client.active, client.waiting) == (1, 1)
        second.cancel()  # the HTTP client went away while it waited
        with pytest.raises(asyncio.CancelledError):
            await second
        assert (client.active, client.waiting) == (1, 0) and metrics.TRITON_WAITING._value.get() == 0
        fake.release.set()
        assert (await first).text == "ok"
        assert (client.active, client.waiting) == (0, 0) and len(fake.started) == 1

    asyncio.run(scenario())


def test_max_concurrency_must_be_positive():
    with pytest.raises(ValueError):
        TritonClient("127.0.0.1:1", max_concurrency=0)


# ---------------------------------------------------------------- deadlines, the watchdog's verdict, labels
def test_every_call_has_a_deadline_that_grows_with_its_audio():
    seen = []

    class Grpc(_FakeGrpc):
        async def infer(self, payload, timeout):
            seen.append(timeout)
            return _FakeResult()

    async def scenario():
        client = TritonClient("127.0.0.1:1", deadline_s=30, deadline_per_audio_s=0.5, timeout_s=100)
        client._infer_bytes = Grpc().infer
        for seconds in (1, 60, 1000):
            await client.transcribe("whisper", np.zeros(16000 * seconds, np.float32), Options())

    asyncio.run(scenario())
    assert seen == [30.5, 60.0, 100.0]  # 30 s + 0.5 s per second of audio, at most timeout_s


def test_marked_down_fails_calls_in_flight_and_waiting_at_once_and_new_ones_until_up():
    async def scenario():
        client = TritonClient("127.0.0.1:1", max_concurrency=1)
        fake = _FakeGrpc()
        client._infer_bytes = fake.infer
        fake.release = asyncio.Event()  # Triton never answers: a stopped server
        calls = [asyncio.create_task(client.transcribe("whisper", np.zeros(160, np.float32), Options()))
                 for _ in range(3)]
        await fake.until_outstanding(1)
        assert (client.active, client.waiting) == (1, 2)
        client.mark_down("2 readiness checks unanswered")
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 1)
        assert all(isinstance(o, ServiceUnavailable) and "not answering" in o.message for o in outcomes), outcomes
        assert (client.active, client.waiting) == (0, 0) and metrics.TRITON_ACTIVE._value.get() == 0
        with pytest.raises(ServiceUnavailable):  # refused before it waits for anything
            await client.transcribe("whisper", np.zeros(160, np.float32), Options())
        client.mark_up()
        fake.release.set()
        assert (await client.transcribe("whisper", np.zeros(160, np.float32), Options())).text == "ok"

    asyncio.run(scenario())


def test_a_caller_that_goes_away_cancels_its_grpc_call():
    async def scenario():
        client = TritonClient("127.0.0.1:1")
        fake = _FakeGrpc()
        client._infer_bytes = fake.infer
        fake.release = asyncio.Event()
        call = asyncio.create_task(client.transcribe("whisper", np.zeros(160, np.float32), Options()))
        await fake.until_outstanding(1)
        assert fake.outstanding == 1
        call.cancel()  # the client disconnected: unless_client_leaves cancels the work
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(fake.idle.wait(), 5)
        assert fake.outstanding == 0 and client.active == 0  # the fake infer was cancelled, not left running

    asyncio.run(scenario())


def test_latency_labels_are_only_ready_models():
    async def scenario():
        client = TritonClient("127.0.0.1:1")
        client.known_models = frozenset({"whisper", "whisper-tiny-en"})
        return [client.model_label(m) for m in ("whisper", "whisper-tiny-en", "no-such-model", "x" * 100)]

    assert asyncio.run(scenario()) == ["whisper", "whisper-tiny-en", "other", "other"]
