"""Fault isolation (whisper_triton.isolation) with a fake engine: no Triton, no weights."""

from __future__ import annotations

import logging

import pytest

from whisper_triton.isolation import INTERNAL_MESSAGE, EngineFailure, transcribe_isolated
from whisper_triton.protocol import InvalidArgument


class FakeEngine:
    """``transcribe`` echoes each request upper-cased; a request named in ``poison`` raises, batched or alone."""

    def __init__(self, poison=(), flaky_batches: int = 0):
        self.poison = set(poison)
        self.flaky_batches = flaky_batches  # the first N batched calls raise whatever they hold
        self.calls: list[list[str]] = []

    def transcribe(self, requests):
        self.calls.append(list(requests))
        if len(requests) > 1 and self.flaky_batches:
            self.flaky_batches -= 1
            raise RuntimeError("transient")
        if self.poison & set(requests):
            raise RuntimeError(f"bug triggered by {sorted(self.poison & set(requests))}")
        return [InvalidArgument("bad") if r == "invalid" else r.upper() for r in requests]


def test_a_good_batch_runs_once():
    engine = FakeEngine()
    assert transcribe_isolated(engine.transcribe, ["a", "b", "c"]) == ["A", "B", "C"]
    assert engine.calls == [["a", "b", "c"]]


def test_empty_batch_does_not_call_the_engine():
    engine = FakeEngine()
    assert transcribe_isolated(engine.transcribe, []) == []
    assert engine.calls == []


def test_a_poisoned_request_fails_alone(caplog):
    engine = FakeEngine(poison={"b"})
    with caplog.at_level(logging.INFO, logger="whisper_triton.isolation"):
        out = transcribe_isolated(engine.transcribe, ["a", "b", "c", "invalid"])
    assert out[0] == "A" and out[2] == "C"
    assert isinstance(out[1], EngineFailure) and str(out[1]) == INTERNAL_MESSAGE
    assert isinstance(out[3], InvalidArgument)  # the engine's per-request verdicts pass through untouched
    assert engine.calls == [["a", "b", "c", "invalid"], ["a"], ["b"], ["c"], ["invalid"]]
    # the batch failure and the request's own failure are logged with their tracebacks
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all(r.exc_info for r in errors)
    assert "bug triggered by ['b']" in caplog.text


def test_several_poisoned_requests():
    engine = FakeEngine(poison={"a", "c"})
    out = transcribe_isolated(engine.transcribe, ["a", "b", "c", "d"])
    assert [type(o).__name__ if isinstance(o, Exception) else o for o in out] == [
        "EngineFailure", "B", "EngineFailure", "D"]


def test_a_transient_batch_failure_loses_nothing():
    engine = FakeEngine(flaky_batches=1)
    assert transcribe_isolated(engine.transcribe, ["a", "b"]) == ["A", "B"]


def test_a_single_request_is_not_retried():
    engine = FakeEngine(poison={"a"})
    out = transcribe_isolated(engine.transcribe, ["a"])
    assert len(out) == 1 and isinstance(out[0], EngineFailure)
    assert engine.calls == [["a"]]


def test_a_wrong_number_of_results_counts_as_a_failure():
    def short(requests):
        return [r.upper() for r in requests][:1]  # a bug: drops results of batches

    assert transcribe_isolated(short, ["a", "b"]) == ["A", "B"]  # alone, each gets its one result


def test_every_request_failing_gives_one_failure_each():
    def broken(requests):
        raise MemoryError("boom")

    out = transcribe_isolated(broken, ["a", "b", "c"])
    assert len(out) == 3 and all(isinstance(o, EngineFailure) for o in out)


def test_base_exceptions_are_not_swallowed():
    def interrupted(requests):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        transcribe_isolated(interrupted, ["a", "b"])
