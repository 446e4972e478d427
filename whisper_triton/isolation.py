"""Fault isolation for one ``execute()`` call: a request that crashes the engine fails alone.

Triton's dynamic batcher puts requests of different clients into one ``execute()`` call, and the
engine decodes them together. If the batched call raises (a bug triggered by one request's audio or
options, a transient runtime error), every request is retried on its own; only those that raise again
get an error, the others get their transcription. Kept apart from model.py so it is tested without
Triton (``tests/unit/test_isolation.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar, Union

Request = TypeVar("Request")
Result = TypeVar("Result")

log = logging.getLogger("whisper_triton.isolation")

INTERNAL_MESSAGE = "internal error while transcribing; see the server log"


class EngineFailure(RuntimeError):
    """The engine raised for this request, also when it ran alone: a server-side error, not the client's."""

    def __init__(self, message: str = INTERNAL_MESSAGE) -> None:
        super().__init__(message)


def _checked(results: Sequence, expected: int) -> list:
    results = list(results)
    if len(results) != expected:
        raise RuntimeError(f"the engine returned {len(results)} results for {expected} requests")
    return results


def transcribe_isolated(transcribe: Callable[[list[Request]], Sequence[Result]],
                        requests: list[Request]) -> list[Union[Result, EngineFailure]]:
    """``transcribe(requests)``, one outcome per request, in order.

    When the batched call raises (or returns the wrong number of results), each request is run alone
    with ``transcribe([request])``; a request whose own call raises gets an ``EngineFailure`` in its
    place. Every exception is logged with its traceback. Per-request outcomes the engine returns
    (results or ``InvalidArgument`` objects) are passed through untouched.
    """
    if not requests:
        return []
    try:
        return _checked(transcribe(requests), len(requests))
    except Exception:
        if len(requests) == 1:
            log.exception("transcription failed for a single request")
            return [EngineFailure()]
        log.exception("transcription failed for a batch of %d requests; retrying each request alone", len(requests))

    outcomes: list[Union[Result, EngineFailure]] = []
    failed = 0
    for index, request in enumerate(requests):
        try:
            outcomes.append(_checked(transcribe([request]), 1)[0])
        except Exception:
            failed += 1
            log.exception("transcription failed for request %d of %d, alone", index + 1, len(requests))
            outcomes.append(EngineFailure())
    log.warning("batch of %d requests retried alone: %d failed, %d succeeded", len(requests), failed,
                len(requests) - failed)
    return outcomes
