"""``stream=true`` uploads: the file in pieces, each piece's text sent as soon as it is ready (Triton faked)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from client.audio import encode_wav
from gateway import chunks
from gateway.errors import ServiceUnavailable
from gateway.results import Options, Segment, Transcription
from gateway.routes.openai import _sse
from tests.unit.test_gateway_api import FakeTriton, make_client

RATE = 16000


def phrases_wav(phrases: int, seconds: float = 9.0, gap: float = 1.0) -> bytes:
    """``phrases`` tones of ``seconds`` each, ``gap`` of silence between them: pauses to cut at."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = (0.25 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    silence = np.zeros(int(gap * RATE), dtype=np.float32)
    return encode_wav(np.concatenate([part for _ in range(phrases) for part in (tone, silence)]))


class PieceTriton(FakeTriton):
    """Says which piece it heard: piece k (by its length rank) answers "Piece k." in two segments."""

    def __init__(self, language: str = "en", fail_at: int | None = None) -> None:
        super().__init__()
        self.language, self.fail_at = language, fail_at

    async def transcribe(self, model: str, audio: np.ndarray, options: Options) -> Transcription:
        index = len(self.calls)
        self.calls.append((model, audio.size, options))
        if index == self.fail_at:
            raise ServiceUnavailable("Triton is not reachable")
        duration = audio.size / RATE
        if self.language == "zh":
            segments = (Segment(0, 0.0, 1.0, f"第{index}段"), Segment(1, 1.0, duration, "说完"))
        else:
            segments = (Segment(0, 0.0, 1.0, f" Piece {index}"), Segment(1, 1.0, duration, " done."))
        return Transcription("".join(s.text for s in segments).strip(), self.language, duration, segments,
                             options.task, model)


def sse_events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def post_stream(fake: PieceTriton, body: bytes, **settings):
    client, _ = make_client(triton=fake, **settings)
    with client:
        return client.post("/v1/audio/transcriptions", files={"file": ("a.wav", body, "audio/wav")},
                           data={"stream": "true", "language": fake.language})


def test_a_long_upload_streams_piece_by_piece_on_the_file_timeline():
    fake = PieceTriton()
    # 70 s, a pause every 10 s: cut in the pauses before 20, 40 and 60 s; the last 10.5 s are one piece
    r = post_stream(fake, phrases_wav(7), sse_chunk_seconds=20)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    assert len(fake.calls) == 4, fake.calls
    assert sum(size for _, size, _ in fake.calls) == 70 * RATE  # the pieces cover the file exactly
    assert [d["delta"] for d in deltas] == [
        "Piece 0", " done.", " Piece 1", " done.", " Piece 2", " done.", " Piece 3", " done."]
    assert events[-1] == {"type": "transcript.text.done", "language": "en", "duration": 70.0,
                          "text": "Piece 0 done. Piece 1 done. Piece 2 done. Piece 3 done."}
    starts = [d["start"] for d in deltas]
    assert starts == sorted(starts)
    assert 19 <= starts[2] <= 20 and 39 <= starts[4] <= 40 and 59 <= starts[6] <= 60  # in the pauses
    assert [d["segment_id"] for d in deltas] == [str(i) for i in range(8)]


def test_chinese_pieces_join_without_spaces_and_are_converted():
    fake = PieceTriton(language="zh")
    events = sse_events(post_stream(fake, phrases_wav(5), sse_chunk_seconds=20).text)  # 50 s: 3 pieces
    assert events[-1]["text"] == "第0段說完第1段說完第2段說完" and events[-1]["language"] == "zh"
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"]


def test_a_short_upload_is_one_piece():
    fake = PieceTriton()
    events = sse_events(post_stream(fake, phrases_wav(2)).text)  # 20 s < the 30 s default
    assert len(fake.calls) == 1 and events[-1]["text"] == "Piece 0 done."


def test_a_failure_before_the_first_text_is_a_plain_http_error():
    r = post_stream(PieceTriton(fail_at=0), phrases_wav(7), sse_chunk_seconds=20)
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"


def test_a_later_piece_that_fails_ends_the_stream_with_an_error_event_after_what_was_sent():
    fake = PieceTriton(fail_at=2)
    r = post_stream(fake, phrases_wav(7), sse_chunk_seconds=20)
    events = sse_events(r.text)
    assert r.status_code == 200
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 4 + ["error"]
    assert events[-1]["error"]["message"] == "Triton is not reachable" and set(events[-1]["error"]) == {
        "message", "type", "param", "code"}


async def test_each_piece_is_sent_before_the_next_is_transcribed():
    """The first piece's deltas come out while the second piece is still inside Triton."""
    release = asyncio.Event()
    started: list[int] = []

    all_started = asyncio.Event()

    async def transcribe(span: tuple[int, int]) -> Transcription:
        started.append(span[0])
        if len(started) == 3:
            all_started.set()
        if span[0] > 0:
            await release.wait()
        return Transcription(f"at {span[0]}", "en", 1.0, (Segment(0, 0.0, 1.0, f" at {span[0]}"),))

    pieces = chunks.in_order([(0, 1), (1, 2), (2, 3)], transcribe, ahead=2)
    first = await anext(pieces)
    body = _sse(first, pieces).body_iterator
    assert json.loads((await anext(body))[6:])["delta"] == "at 0"
    await asyncio.wait_for(all_started.wait(), 5)
    assert started == [0, 1, 2]  # the first piece is sent while the next two (ahead=2) wait in "Triton"
    release.set()
    rest = [json.loads(event[6:]) async for event in body]
    assert [e.get("delta") for e in rest] == [" at 1", " at 2", None]
    assert rest[-1]["text"] == "at 0 at 1 at 2"


async def test_closing_the_pieces_early_cancels_the_calls_in_flight():
    started, finished = [], []
    in_triton = asyncio.Event()  # never set: Triton has not answered the later pieces yet

    async def transcribe(i: int) -> int:
        started.append(i)
        if i > 0:
            await in_triton.wait()
        finished.append(i)
        return i

    pieces = chunks.in_order(range(6), transcribe, ahead=3)
    assert await anext(pieces) == 0
    await pieces.aclose()  # a client that went away: returns once the calls in flight are cancelled
    in_triton.set()  # an answer after that reaches no one
    await asyncio.sleep(0)
    assert finished == [0] and set(started) <= {0, 1, 2, 3}


@pytest.mark.parametrize("ahead", [1, 2, 8])
async def test_results_come_in_order_whatever_finishes_first(ahead):
    async def transcribe(i: int) -> int:
        await asyncio.sleep(0.001 * (5 - i))  # later items finish first
        return i

    assert [r async for r in chunks.in_order(range(6), transcribe, ahead)] == list(range(6))


async def test_a_client_that_goes_away_cancels_the_pieces_still_in_triton():
    cancelled, waiting = [], asyncio.Event()
    in_triton = asyncio.Event()  # never set: Triton does not answer pieces 1 and 2

    async def transcribe(span: tuple[int, int]) -> Transcription:
        try:
            if span[0] == 2:
                waiting.set()
            if span[0] > 0:
                await in_triton.wait()
        except asyncio.CancelledError:
            cancelled.append(span[0])
            raise
        return Transcription("first", "en", 1.0, (Segment(0, 0.0, 1.0, " first"),))

    pieces = chunks.in_order([(0, 1), (1, 2), (2, 3), (3, 4)], transcribe, ahead=2)
    first = await anext(pieces)
    body = _sse(first, pieces).body_iterator
    await anext(body)
    await asyncio.wait_for(waiting.wait(), 5)  # pieces 1 and 2 are now waiting inside "Triton"
    await body.aclose()  # what Starlette does when the client disconnects
    assert sorted(cancelled) == [1, 2]
