"""The streaming core (gateway/streaming): turn detection, hypothesis agreement, and a session with a fake
VAD and a fake decoder (no Triton, no model)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.results import Options, Segment, Transcription
from gateway.streaming import session as core
from gateway.streaming.turns import ServerVad, TurnDetector
from gateway.streaming.vad import FRAME

SR = 16000


def frames(*runs: tuple[float, float]) -> list[float]:
    """(seconds, probability) runs -> one probability per 32 ms frame."""
    out: list[float] = []
    for seconds, p in runs:
        out += [p] * int(round(seconds * SR / FRAME))
    return out


# -- turn detection ------------------------------------------------------------------------------
def test_a_turn_starts_with_its_padding_and_stops_after_the_silence():
    detector = TurnDetector(ServerVad(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500))
    probs = frames((1.024, 0.0), (2.048, 0.9), (1.024, 0.0))
    start, stop = detector.feed(probs, 0)
    assert start.kind == "start" and start.speech == 32 * FRAME and start.sample == 32 * FRAME - 4800
    assert stop.kind == "stop" and stop.speech == 96 * FRAME  # the end of the last speech frame
    assert stop.sample == stop.speech + 16 * FRAME  # 500 ms of silence: 16 frames (15.6 rounded up)
    assert not detector.in_turn


def test_short_pauses_and_clicks_do_not_cut_or_open_a_turn():
    detector = TurnDetector(ServerVad(silence_duration_ms=500))
    click = detector.feed(frames((0.5, 0.0), (0.064, 0.9), (0.5, 0.0)), 0)  # two frames: no turn
    assert click == []
    first = len(frames((0.5, 0.0), (0.064, 0.9), (0.5, 0.0)))
    # speech, a 300 ms pause (under 500 ms), speech, a value between the hysteresis thresholds
    out = detector.feed(frames((1.0, 0.9), (0.3, 0.1), (1.0, 0.9), (0.3, 0.4), (0.6, 0.0)), first)
    assert [b.kind for b in out] == ["start", "stop"]


def test_a_long_turn_is_cut_at_its_quietest_frame_and_goes_on():
    detector = TurnDetector(ServerVad(silence_duration_ms=500), max_turn_s=4.0)
    probs = frames((3.0, 0.9), (0.096, 0.45), (3.0, 0.9))  # a dip, not silence, at 3.0-3.1 s
    out = detector.feed(probs, 0)
    kinds = [(b.kind, b.forced) for b in out]
    assert kinds == [("start", False), ("stop", True), ("start", True)]
    cut = out[1].sample
    assert 3.0 <= cut / SR <= 3.11 and out[2].sample == cut  # inside the dip
    assert detector.in_turn


def test_keep_from_bounds_the_audio_kept_in_silence():
    detector = TurnDetector(ServerVad(prefix_padding_ms=300))
    detector.feed(frames((10.0, 0.0)), 0)
    keep = detector.keep_from(10 * SR)
    assert 10 * SR - keep <= 4800 + 2 * FRAME


# -- agreement -------------------------------------------------------------------------------
def test_stable_prefix_ignores_case_and_punctuation_and_splits_cjk():
    assert core.stable_prefix(core.tokens(" Ask not, what"), core.tokens(" ask not what your")) == 3
    assert core.tokens("广州市 ok") == ["广", "州", "市", " ok"]
    assert "".join(core.tokens(" And so, my fellow")) == " And so, my fellow"


# -- a session -------------------------------------------------------------------------------
def loud_vad():
    """Speech wherever the frame is loud: a stand-in for Silero on synthetic audio."""
    rest = np.zeros(0, dtype=np.float32)

    def probs(samples: np.ndarray) -> np.ndarray:
        nonlocal rest
        audio = np.concatenate([rest, samples])
        n = audio.size // FRAME
        rest = audio[n * FRAME:]
        return (np.abs(audio[: n * FRAME]).reshape(n, FRAME).mean(axis=1) > 0.05).astype(np.float32) * 0.9

    return probs


class FakeDecoder:
    def __init__(self, busy: bool = False, fail: bool = False) -> None:
        self.calls: list[tuple[int, bool, Options]] = []
        self.busy, self.fail = busy, fail
        self.gate: asyncio.Event | None = None

    async def __call__(self, samples, options, model, conversion, final):
        if not final and self.busy:
            return None
        self.calls.append((samples.size, final, options))
        if self.gate is not None:
            await self.gate.wait()
        if final and self.fail:
            raise RuntimeError("boom")
        words = " one two three four five six".split()[: max(1, samples.size // SR)]
        text = " " + " ".join(words)
        return Transcription(text.strip(), "en", samples.size / SR, (Segment(0, 0, samples.size / SR, text),))


def speech(seconds: float) -> np.ndarray:
    return np.full(int(seconds * SR), 0.3, dtype=np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


async def feed(session: core.StreamSession, audio: np.ndarray, chunk_s: float = 0.1, pause_s: float = 0.001) -> None:
    step = int(chunk_s * SR)
    for i in range(0, audio.size, step):
        await session.append(audio[i:i + step])
        await session.heard()  # as live audio would: the VAD keeps up
        await asyncio.sleep(pause_s)


def drain(session: core.StreamSession) -> list:
    out = []
    while not session.events.empty():
        out.append(session.events.get_nowait())
    return out


def make(decoder, turn=ServerVad(), **config) -> core.StreamSession:
    decoding = core.Decoding("whisper", Options(language="en", prompt="Glossary"))
    return core.StreamSession(decoder, decoding, core.StreamConfig(**config), turn, vad=loud_vad)


async def test_each_turn_is_decoded_once_whole_with_partials_while_it_is_spoken():
    decoder = FakeDecoder()
    session = make(decoder, partial_s=0.05)  # the fed audio runs 20 times faster than real time
    session.start()
    await feed(session, np.concatenate([silence(1.0), speech(3.0), silence(1.0), speech(2.0), silence(1.0)]),
               pause_s=0.005)
    await session.finish()
    events = drain(session)
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("SpeechStarted") == kinds.count("Committed") == kinds.count("Completed") == 2
    finals = [size for size, final, _ in decoder.calls if final]
    assert len(finals) == 2  # one decode per turn ...
    assert abs(finals[0] / SR - (0.3 + 3.0 + 0.5)) < 0.1  # ... of the turn: padding, speech, the silence
    completed = [e for e in events if isinstance(e, core.Completed)]
    assert completed[0].start_s == pytest.approx(0.7, abs=0.05) and completed[1].start_s > completed[0].end_s
    partials = [(size, o) for size, final, o in decoder.calls if not final]
    assert partials and all(size <= 4.2 * SR for size, _ in partials)  # the turn so far, never more
    assert all(o.beam_size == 1 and not o.word_timestamps and o.vad_filter is False for _, o in partials)
    # the second turn's prompt carries the client's prompt and the first turn's text
    last = [o for _, final, o in decoder.calls if final][-1]
    assert last.prompt.startswith("Glossary") and "one two three" in last.prompt
    deltas = [e for e in events if isinstance(e, core.Delta) and e.delta]
    assert deltas and deltas[0].delta == "one"  # stable once two hypotheses agree
    started = [e for e in events if isinstance(e, core.SpeechStarted)]
    assert started[0].start_s == pytest.approx(1.0, abs=0.05)


async def test_partials_are_skipped_when_busy_and_finals_never_are():
    decoder = FakeDecoder(busy=True)
    session = make(decoder)
    session.start()
    await feed(session, np.concatenate([speech(3.0), silence(1.0)]))
    await session.finish()
    assert [final for _, final, _ in decoder.calls] == [True]
    assert any(isinstance(e, core.Completed) for e in drain(session))


async def test_manual_commits_and_clear():
    decoder = FakeDecoder()
    session = make(decoder, turn=None)
    session.start()
    with pytest.raises(core.EmptyBuffer):
        await session.commit()
    await feed(session, silence(0.05))
    with pytest.raises(core.EmptyBuffer, match="buffer only has 50ms"):
        await session.commit()
    await feed(session, speech(1.0))
    first = await session.commit()
    await feed(session, speech(2.0))
    session.clear()
    await feed(session, speech(0.5))
    second = await session.commit()
    await session.finish()
    events = drain(session)
    assert not any(isinstance(e, (core.SpeechStarted, core.SpeechStopped)) for e in events)
    committed = [e for e in events if isinstance(e, core.Committed)]
    assert [c.item_id for c in committed] == [first, second] and committed[1].previous_item_id == first
    assert any(isinstance(e, core.Cleared) for e in events)
    assert [round(size / SR, 2) for size, final, _ in decoder.calls if final] == [1.05, 0.5]


async def test_a_manual_buffer_at_the_turn_cap_is_committed_not_dropped():
    decoder = FakeDecoder()
    session = make(decoder, turn=None, max_turn_s=2.0)
    session.start()
    await feed(session, speech(5.0))
    await session.finish()
    sizes = [size for size, final, _ in decoder.calls if final]
    assert sum(sizes) == 5 * SR and max(sizes) <= 2 * SR


async def test_a_full_backlog_holds_the_client_back_until_a_decode_catches_up():
    decoder = FakeDecoder(busy=True)
    decoder.gate = asyncio.Event()  # Triton is slow
    session = make(decoder, max_turn_s=2.0, max_backlog_s=4.0)
    session.start()
    await feed(session, speech(7.0))
    await session.heard()
    assert session.backlog_s > 4.0
    room = asyncio.create_task(session.room())
    await asyncio.sleep(0.05)
    assert not room.done()
    decoder.gate.set()
    await asyncio.wait_for(room, 2)
    await session.finish()
    assert sum(size for size, final, _ in decoder.calls if final) >= 7 * SR - 4800  # nothing dropped


async def test_a_failed_turn_is_reported_and_the_session_goes_on():
    decoder = FakeDecoder(fail=True)
    session = make(decoder, turn=None)
    session.start()
    await feed(session, speech(1.0))
    await session.commit()
    await feed(session, speech(1.0))
    await session.commit()
    await session.finish()
    failed = [e for e in drain(session) if isinstance(e, core.Failed)]
    assert len(failed) == 2 and str(failed[0].error) == "boom"


async def test_close_cancels_the_decode_in_flight():
    decoder = FakeDecoder()
    decoder.gate = asyncio.Event()
    session = make(decoder, turn=None)
    session.start()
    await feed(session, speech(1.0))
    await session.commit()
    while not decoder.calls:
        await asyncio.sleep(0.01)
    await session.close()
    assert session._worker.cancelled()


async def test_switching_between_server_vad_and_manual_commits_mid_session():
    decoder = FakeDecoder()
    session = make(decoder)
    session.start()
    await feed(session, np.concatenate([silence(0.5), speech(1.0)]))  # a VAD turn is open
    session.set_turn_detection(None)
    await feed(session, speech(0.5))
    first = await session.commit()  # the client commits the turn the VAD opened
    session.set_turn_detection(ServerVad())
    await feed(session, np.concatenate([silence(1.0), speech(1.0), silence(1.0)]))
    await session.finish()
    events = drain(session)
    committed = [e for e in events if isinstance(e, core.Committed)]
    assert len(committed) == 2 and committed[0].item_id == first
    assert committed[0].end_s == pytest.approx(2.0, abs=0.01)  # up to the commit
    assert committed[1].start_s == pytest.approx(3.0 - 0.3, abs=0.05)  # the VAD's turn, with its padding
    assert len([e for e in events if isinstance(e, core.Completed)]) == 2


async def test_partials_are_skipped_while_any_sessions_final_is_decoded():
    from gateway.streaming.serving import Admission, triton_decoder

    class SlowTriton:
        waiting = 0

        def __init__(self) -> None:
            self.gate = asyncio.Event()

        async def transcribe(self, model, audio, options):
            await self.gate.wait()
            return Transcription("x", "en", audio.size / SR)

    triton, admission = SlowTriton(), Admission(4, 2.0, partial_slots=1)
    decode = triton_decoder(triton, admission)
    samples = speech(1.0)
    final = asyncio.create_task(decode(samples, Options(), "whisper", "none", True))
    await asyncio.sleep(0)
    assert admission.finals_in_flight == 1
    assert await decode(samples, Options(), "whisper", "none", False) is None  # a final is in flight
    triton.gate.set()
    assert (await final).text == "x" and admission.finals_in_flight == 0
    assert (await decode(samples, Options(), "whisper", "none", False)).text == "x"


async def test_a_client_far_ahead_of_real_time_gets_no_more_partials_than_a_live_one():
    import time

    decoder = FakeDecoder()
    session = make(decoder, partial_s=0.5, max_turn_s=30.0)
    session.start()
    t0 = time.monotonic()
    await feed(session, speech(20.0))  # 20 s of audio in about 0.3 s
    elapsed = time.monotonic() - t0
    await session.finish()
    partials = [size for size, final, _ in decoder.calls if not final]
    assert len(partials) <= elapsed / 0.5 + 1, (len(partials), elapsed)


async def test_a_paced_vad_hears_no_faster_than_real_time_and_the_rest_at_the_end():
    import time

    heard: list[int] = []
    reached = asyncio.Event()

    def counting_vad():
        inner = loud_vad()

        def probs(samples: np.ndarray) -> np.ndarray:
            heard.append(samples.size)
            if sum(heard) >= 1.0 * SR:
                reached.set()
            return inner(samples)

        return probs

    decoder = FakeDecoder()
    decoding = core.Decoding("whisper", Options(language="en"))
    session = core.StreamSession(decoder, decoding, core.StreamConfig(vad_lead_s=0.5), ServerVad(), vad=counting_vad)
    t0 = time.monotonic()
    session.start()
    audio = np.concatenate([silence(1.0), speech(3.0), silence(1.0), speech(3.0), silence(2.0)])
    for i in range(0, audio.size, SR // 10):  # 10 s of audio sent at once
        await session.append(audio[i:i + SR // 10])
    await asyncio.wait_for(reached.wait(), 5)
    elapsed = time.monotonic() - t0
    assert sum(heard) <= (elapsed + 0.5) * SR + FRAME  # a second's worth took at least half a second
    assert elapsed >= 0.5 - 0.05
    await session.finish()  # the client stopped: the rest is heard at once, nothing lost
    assert sum(heard) // FRAME == audio.size // FRAME
    assert [size for size, final, _ in decoder.calls if final] == [pytest.approx(3.3 * SR, abs=0.6 * SR)] * 2
    assert time.monotonic() - t0 < 5


def test_admission_refuses_a_session_that_would_take_turn_decoding_past_capacity(monkeypatch):
    from gateway.streaming import serving

    clock = [1000.0]
    monkeypatch.setattr(serving.time, "monotonic", lambda: clock[0])
    admission = serving.Admission(16, 99.0, final_capacity=1.0)
    first, _ = admission.try_enter("a")
    second, _ = admission.try_enter("b")
    assert first and second and admission.per_session_load() == 0.0
    for t in range(10):  # 10 s: each session had a 0.5 s turn decode every 2 s (0.25 s per second each)
        clock[0] = 1000.0 + 2 * t + 2
        admission.decoded(0.5, first)
        admission.decoded(0.5, second)
    assert admission.per_session_load() == pytest.approx(0.27, abs=0.01)  # 10 s over the 18.5 s since the first began
    third, why = admission.try_enter("c")  # 3 x 0.27 = 0.81: under
    assert third and not why
    fourth, why = admission.try_enter("d")  # 4 x 0.27 = 1.08: refused, although no turn has completed late yet
    assert fourth is None and "capacity" in why
    clock[0] += 60  # the decodes have left the window: nothing known, nothing refused
    assert admission.per_session_load() == 0.0 and admission.try_enter("d")[0] is not None
    assert serving.Admission(16, 99.0).try_enter("a")[0] is not None  # no capacity given: no limit
