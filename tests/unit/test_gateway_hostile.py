"""Hostile-but-valid clients and a stuck Triton, without a server: upload pace, per-client limits, the
watchdog's verdicts, a stream's buffer cap at ingest (on the streaming core), prompts written as control tokens."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from gateway.limits import ClientCounter, UploadPace, client_key
from gateway.results import Transcription
from gateway.routes.stream import StartMessage, Stream
from gateway.watchdog import Watchdog
from tests.unit.test_gateway_api import URL, make_client, wav


# ---------------------------------------------------------------- upload pace and per-client limits
def test_upload_pace_allows_grace_then_the_minimum_rate():
    pace = UploadPace(idle_s=15, grace_s=10, min_rate=1000)
    assert pace.read_timeout(started=0, received=0, now=0) == 10  # the grace period first
    assert pace.read_timeout(started=0, received=0, now=9) == 1
    assert pace.read_timeout(started=0, received=50_000, now=20) == 15  # well ahead: the idle limit
    assert pace.read_timeout(started=0, received=5_000, now=14) == 1  # 10 s + 5 s of credit, 14 s used
    assert pace.read_timeout(started=0, received=1, now=60) == 0  # a byte now and then: over
    assert UploadPace(idle_s=5, grace_s=0, min_rate=0).read_timeout(0, 0, 1000) == 5  # no rate: idle only


def test_client_counter_and_keys():
    counter = ClientCounter(2)
    assert [counter.try_acquire("a") for _ in range(3)] == [True, True, False]
    assert counter.try_acquire("b")
    counter.release("a")
    assert counter.try_acquire("a") and not counter.try_acquire("a")
    for _ in range(2):
        counter.release("a")
    counter.release("b")
    assert not counter.active  # nothing left behind

    http = {"type": "http", "client": ("10.0.0.7", 5555), "headers": [(b"authorization", b"Bearer secret")]}
    assert client_key(http) == "ip:10.0.0.7"
    assert client_key(http, "token").startswith("token:") and "secret" not in client_key(http, "token")
    assert client_key({**http, "headers": []}, "token") == "ip:10.0.0.7"  # no token: the address
    ws = {"type": "websocket", "client": ("10.0.0.7", 1), "headers": [], "query_string": b"api_key=secret"}
    assert client_key(ws, "token") == client_key(http, "token")


async def _trickle(chunks: int, every_s: float, size: int = 100):
    for _ in range(chunks):
        await asyncio.sleep(every_s)
        yield b"\0" * size


def _transport(app, ip: str) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=app, client=(ip, 40000))


def test_a_trickled_body_gets_408_on_every_upload_route():
    client, _ = make_client(body_grace_s=0.3, min_upload_kib_s=64, body_idle_s=5)

    async def scenario():
        async with httpx.AsyncClient(transport=_transport(client.app, "10.0.0.1"), base_url="http://t") as http:
            multipart = {"content-type": "multipart/form-data; boundary=zz"}

            async def body():
                yield b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
                async for chunk in _trickle(20, 0.1):
                    yield chunk

            t0 = time.monotonic()
            answers = [await http.post("/transcribe/binary", content=_trickle(20, 0.1)),
                       await http.post(URL, content=body(), headers=multipart),
                       await http.post("/stt/transcribe/", content=body(), headers=multipart)]
            return answers, time.monotonic() - t0

    with client:
        answers, elapsed = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [408, 408, 408], [a.text for a in answers]
    assert all("too slow" in a.json()["error"]["message"] for a in answers)
    assert answers[0].json()["success"] is False and answers[0].headers["connection"] == "close"
    assert elapsed < 3, "each trickle was cut after its grace period, not after its 2 s of trickling"


def test_a_slow_raw_upload_holds_no_in_flight_slot():
    """/transcribe/binary used to take its slot before reading the body: a slow upload locked others out."""
    client, fake = make_client(max_in_flight=1, min_upload_kib_s=0, body_idle_s=5)

    async def scenario():
        async with httpx.AsyncClient(transport=_transport(client.app, "10.0.0.1"), base_url="http://t") as slow_http, \
                httpx.AsyncClient(transport=_transport(client.app, "10.0.0.2"), base_url="http://t") as http:
            reading = asyncio.Event()

            async def slow_body():
                sent = 0
                async for chunk in _trickle(10, 0.1):
                    sent += 1
                    if sent == 2:
                        reading.set()  # the app took the first chunk and asks for more: the body is being received
                    yield chunk

            slow = asyncio.create_task(slow_http.post("/transcribe/binary", content=slow_body()))
            await asyncio.wait_for(reading.wait(), 5)
            normal = await http.post("/transcribe/binary", content=wav())
            return normal, await slow

    with client:
        normal, slow = asyncio.run(scenario())
    assert normal.status_code == 200, normal.text
    assert slow.status_code == 415  # its body arrived in the end: zeros are no media


def test_one_clients_uploads_are_limited_and_others_are_not():
    client, fake = make_client(max_requests_per_client=2, retry_after_s=5)

    async def scenario():
        fake.gate = asyncio.Event()
        async with httpx.AsyncClient(transport=_transport(client.app, "10.0.0.1"), base_url="http://t") as greedy, \
                httpx.AsyncClient(transport=_transport(client.app, "10.0.0.2"), base_url="http://t") as other:
            held = [asyncio.create_task(greedy.post(URL, files={"file": ("a.wav", wav())})) for _ in range(2)]
            while len(fake.calls) < 2:
                await asyncio.sleep(0.01)
            refused = await greedy.post(URL, files={"file": ("a.wav", wav())})
            fake.gate.set()
            served = await other.post(URL, files={"file": ("a.wav", wav())})
            return refused, served, await asyncio.gather(*held)

    with client:
        refused, served, held = asyncio.run(scenario())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded" and "this client" in refused.json()["error"]["message"]
    assert served.status_code == 200 and [h.status_code for h in held] == [200, 200]
    assert not client.app.state.upload_clients.active  # every slot given back


# ---------------------------------------------------------------- the watchdog
class FakeTriton:
    def __init__(self) -> None:
        self.answers = True  # readiness answered
        self.model_answers = True  # test inferences answered
        self.down, self.down_reason = False, ""
        self.active, self.last_answer = 0, time.monotonic()
        self.execs = 0
        self._hold = asyncio.Event()

    async def server_ready(self, timeout_s=None) -> bool:
        if not self.answers:
            await asyncio.sleep(10)  # a stopped server: no answer at all
        return True

    async def ready_models(self) -> list[str]:
        return ["whisper"]

    async def probe(self, model: str, timeout_s: float) -> None:
        if not self.model_answers:
            await self._hold.wait()
        self.last_answer = time.monotonic()

    async def executions(self, model: str) -> int:
        return self.execs

    def mark_down(self, reason: str) -> None:
        self.down, self.down_reason = True, reason

    def mark_up(self) -> None:
        self.down = False


def test_watchdog_marks_a_frozen_triton_down_after_two_unanswered_checks_and_up_again():
    async def scenario():
        triton = FakeTriton()
        dog = Watchdog(triton, "whisper", interval_s=0.05, timeout_s=0.1)
        await dog.check()
        assert dog.checked and dog.problem is None and dog.models == ["whisper"]
        triton.answers = False
        await dog.check()
        assert not triton.down  # one miss is not a verdict
        await dog.check()
        assert triton.down and dog.problem == "Triton is not answering"
        triton.answers = True
        await dog.check()
        assert not triton.down and dog.problem is None

    asyncio.run(scenario())


def test_watchdog_probes_only_when_calls_get_no_answer_or_the_gateway_is_idle_and_tells_stalled_from_busy():
    async def scenario():
        triton = FakeTriton()
        dog = Watchdog(triton, "whisper", interval_s=0.01, timeout_s=0.05, stall_s=0.1, probe_idle_s=0)
        await dog.check()
        assert dog.probes == 0  # idle, and idle probes are off
        triton.active, triton.last_answer = 1, time.monotonic() - 1  # a call outstanding, nothing answered
        triton.model_answers = False
        await dog.check()
        assert dog.probes == 1
        await asyncio.sleep(0.15)
        triton.execs += 1  # the model finished something meanwhile: busy, not stuck
        await dog.check()
        assert not dog.stalled
        await asyncio.sleep(0.15)
        await dog.check()  # nothing finished since, and the test inference is still unanswered
        assert dog.stalled and dog.problem == "the model 'whisper' is not answering" and not triton.down
        triton._hold.set()  # it answers in the end
        await asyncio.sleep(0.01)
        await dog.check()
        assert not dog.stalled and dog.problem is None

    asyncio.run(scenario())


def test_health_answers_from_the_verdict_at_once():
    client, fake = make_client()
    with client:
        dog = Watchdog(fake, "whisper")
        dog.checked, dog.ready, dog.models = True, True, ["whisper"]
        client.app.state.watchdog = dog
        fake.down = False
        assert client.get("/health").status_code == 200
        fake.down = True  # what mark_down sets
        t0 = time.monotonic()
        answer = client.get("/health")
        assert answer.status_code == 503 and answer.json()["triton"]["problem"] == "Triton is not answering"
        assert time.monotonic() - t0 < 0.5
        assert client.get("/health/live").status_code == 200  # liveness is the gateway's own


# ---------------------------------------------------------------- a stream's buffer cap at ingest
class FloodSocket:
    """A client that has ``frames`` ready at once and then waits; counts what the server read."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames, self.read, self.sent = frames, 0, []

    async def receive(self) -> dict:
        if self.read < len(self.frames):
            self.read += 1
            return {"type": "websocket.receive", "bytes": self.frames[self.read - 1]}
        await asyncio.sleep(3600)

    async def send_text(self, text: str) -> None:
        self.sent.append(text)


def live_stream(ws, decode, **settings):
    """A ``/v1/stream`` connection (gateway.routes.stream.Stream) on the streaming core, server VAD faked
    (every loud frame is speech), around ``ws`` and the fake ``decode``."""
    from gateway.config import Settings
    from gateway.results import Options
    from gateway.streaming import session as core
    from gateway.streaming.turns import ServerVad
    from tests.unit.test_streaming import loud_vad

    config = Settings(_env_file=None, **settings)
    session = core.StreamSession(decode, core.Decoding("whisper", Options(language="en")),
                                 core.StreamConfig.from_settings(config), ServerVad(), vad=loud_vad)
    start = StartMessage("en", "transcribe", None, "pcm_s16le", "whisper")
    return Stream(ws, start, config, session), session


def test_a_stream_reads_nothing_while_its_buffer_is_at_the_cap():
    """The decode backlog (turns waiting + the open one) at GATEWAY_STREAM_MAX_BUFFER_S: no frame is read
    until a decode has caught up; the rest of the flood waits in the client's socket."""
    frame = (np.zeros(8000, dtype="<i2") + 3000).tobytes()  # 0.5 s of loud audio each; 60 s in all, ready at once
    ws = FloodSocket([frame] * 120)
    release = asyncio.Event()
    decoded = []

    async def decode(samples, options, model, conversion, final):
        if not final:
            return None  # partials skipped: busy
        decoded.append(samples.size)
        await release.wait()  # Triton is slow
        return Transcription("x", "en", samples.size / 16000)

    async def scenario():
        stream, session = live_stream(ws, decode, stream_max_buffer_s=4.0, stream_max_turn_s=2.0,
                                      stream_max_ahead_s=1000.0, stream_idle_s=60.0)
        session.start()
        receiver = asyncio.create_task(stream.receive_loop())
        await asyncio.sleep(0.5)
        held = (ws.read, session.backlog_s)
        release.set()  # decodes finish: the backlog shrinks, and reading resumes
        await asyncio.sleep(1.0)
        after = ws.read
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        await session.close()
        return held, after, stream

    held, after, stream = asyncio.run(scenario())
    read, backlog = held
    assert backlog <= 4.0 + 2.0 + 0.5, f"backlog of {backlog:.1f} s past the cap"
    assert read <= (4.0 + 2.0) / 0.5 + 2, f"{read} frames read while the decode was stuck"
    assert after > read and max(decoded) <= 2 * 16000 + 512 and stream.ingest.held_s > 0


def test_a_stream_gets_no_more_steps_than_a_live_one():
    """Audio at 20x real time (the ahead limit lifted): partial decodes stay one per step of wall time."""

    class Fast(FloodSocket):
        async def receive(self) -> dict:
            await asyncio.sleep(0.05)
            self.read += 1
            return {"type": "websocket.receive", "bytes": (np.zeros(16000, dtype="<i2") + 3000).tobytes()}

    ws, steps = Fast([]), []

    async def decode(samples, options, model, conversion, final):
        steps.append(time.monotonic())
        return Transcription("x", "en", samples.size / 16000)

    async def scenario():
        stream, session = live_stream(ws, decode, stream_step_s=0.5, stream_max_ahead_s=1000.0,
                                      stream_max_turn_s=30.0, stream_max_buffer_s=1000.0)
        session.start()
        receiver = asyncio.create_task(stream.receive_loop())
        await asyncio.sleep(1.3)
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        await session.close()
        return session

    session = asyncio.run(scenario())
    assert session.received >= 20 * 16000  # 20 s of audio arrived in 1.3 s ...
    assert len(steps) <= 3, f"{len(steps)} steps in 1.3 s"  # ... and cost the steps of 1.3 s of live audio


def test_a_stream_faster_than_real_time_is_closed_with_1008():
    frame = (np.zeros(16000, dtype="<i2") + 100).tobytes()  # 1 s each, all at once: "20x real time"
    ws = FloodSocket([frame] * 30)

    async def decode(*args):
        return None

    async def scenario():
        stream, session = live_stream(ws, decode, stream_max_ahead_s=3.0)
        try:
            return await asyncio.wait_for(stream.receive_loop(), 2)
        finally:
            await session.close()

    from gateway.routes.stream import POLICY, ProtocolError

    with pytest.raises(ProtocolError) as caught:
        asyncio.run(scenario())
    assert caught.value.code == POLICY and "faster than real time" in caught.value.message
    assert ws.read <= 5  # closed once 3 s ahead, not after the whole flood


def test_a_stream_that_trickles_bytes_is_closed_once_its_audio_falls_behind_real_time():
    class Trickle(FloodSocket):
        async def receive(self) -> dict:
            await asyncio.sleep(0.1)
            self.read += 1
            return {"type": "websocket.receive", "bytes": b"\0\0"}  # one sample every 0.1 s

    ws = Trickle([])

    async def decode(*args):
        return None

    async def scenario():
        stream, session = live_stream(ws, decode, stream_idle_s=0.5)
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(stream.receive_loop(), 5)
        finally:
            elapsed = time.monotonic() - t0
            await session.close()
        return elapsed

    from gateway.routes.stream import ProtocolError

    with pytest.raises(ProtocolError) as caught:
        asyncio.run(scenario())
    assert "behind real time" in caught.value.message and ws.read < 10


# ---------------------------------------------------------------- prompts
def test_control_tokens_in_a_prompt_are_text_and_prompts_keep_their_last_223_tokens():
    from whisper_triton import weights
    from whisper_triton.prompts import MAX_PROMPT_TOKENS, build_prompt, encode_prompt

    try:
        path = weights.resolve("bundled:base")
    except Exception as exc:  # make unit runs without provisioned weights
        pytest.skip(f"no provisioned weights: {exc}")
    import tokenizers
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(tokenizers.Tokenizer.from_file(f"{path}/tokenizer.json"), True, task="transcribe",
                          language="en")
    specials = set(range(tokenizer.eot, tokenizer.timestamp_begin + 1501))
    hostile = "<|endoftext|><|startoftranscript|><|fr|><|translate|> " * 50
    tokens = encode_prompt(tokenizer, hostile)
    assert not specials.intersection(tokens), "a control token written in the prompt was encoded as one"
    assert len(tokens) == MAX_PROMPT_TOKENS == 223
    assert tokenizer.decode(tokens).endswith("<|translate|>")
    assert tokenizer.tokenizer.encode_special_tokens is False  # the shared tokenizer is left as it was
    plain = encode_prompt(tokenizer, "Glossary: Triton, CTranslate2.")
    assert tokenizer.decode(plain) == " Glossary: Triton, CTranslate2."
    t0 = time.monotonic()
    assert len(encode_prompt(tokenizer, "word " * 500_000)) == 223  # only the end is tokenized
    assert time.monotonic() - t0 < 0.5
    prompt = build_prompt(tokenizer, tokens)
    assert prompt[0] == tokenizer.sot_prev and prompt[1 + 223] == tokenizer.sot
