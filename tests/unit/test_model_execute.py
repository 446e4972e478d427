"""``TritonPythonModel.execute`` (model_repository/whisper/1/model.py) with a fake ``triton_python_backend_utils``
and a fake engine: each request's outcome becomes its own response -- outputs, INVALID_ARG for a request the
contract or the engine refuses, INTERNAL for a crash -- in request order, and one bad request never fails
its neighbours."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from whisper_triton import protocol
from whisper_triton.engine import EngineStats
from whisper_triton.protocol import InvalidArgument, Options, Segment
from whisper_triton.telemetry import StatsWatcher
from whisper_triton.types import Transcription

ROOT = Path(__file__).resolve().parents[2]


class TritonError:
    INTERNAL, INVALID_ARG, CANCELLED = "INTERNAL", "INVALID_ARG", "CANCELLED"

    def __init__(self, message: str, code: str = "INTERNAL") -> None:
        self.message, self.code = message, code


class FakeRequest:
    def __init__(self, audio: np.ndarray | None = None, options: Options = Options(), **overrides) -> None:
        arrays = protocol.request_arrays(np.zeros(0) if audio is None else audio, options)
        if audio is None:
            del arrays["AUDIO"]
        self.arrays = {**arrays, **overrides}

    def is_cancelled(self) -> bool:
        return False


def fake_pb_utils() -> SimpleNamespace:
    return SimpleNamespace(
        TritonError=TritonError,
        Tensor=lambda name, array: (name, array),
        InferenceResponse=lambda output_tensors=(), error=None: SimpleNamespace(outputs=dict(output_tensors),
                                                                               error=error),
        get_input_tensor_by_name=lambda request, name: (
            None if name not in request.arrays else SimpleNamespace(as_numpy=lambda: request.arrays[name])),
    )


@pytest.fixture(params=["whisper", "whisper-tiny-en"])
def model(request, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location(f"model_{request.param}",
                                                  ROOT / "model_repository" / request.param / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    instance = module.TritonPythonModel()
    instance.watcher, instance.counters, instance.batch_windows = StatsWatcher(), {}, None
    return instance


class FakeEngine:
    """Answers with the request's own duration; refuses a prompt "bad"; crashes on a prompt "crash"."""

    def __init__(self) -> None:
        self.stats = EngineStats()
        self.batches: list[int] = []

    def transcribe(self, requests):
        self.batches.append(len(requests))
        if any(r.options.prompt == "crash" for r in requests):
            raise RuntimeError("a bug")
        return [InvalidArgument("unknown language code 'xx'") if r.options.prompt == "bad" else
                Transcription(" hi", [Segment(0, 0.0, r.duration, " hi", tokens=(5,))], "en", r.duration)
                for r in requests]


def test_every_request_gets_its_own_outcome_in_order(model):
    model.engine = FakeEngine()
    requests = [
        FakeRequest(np.ones(16000, np.float32)),
        FakeRequest(None),  # no AUDIO: refused by the contract before the engine
        FakeRequest(np.ones(8000, np.float32), Options(prompt="bad")),  # refused by the engine
        FakeRequest(np.ones(4000, np.float32), Options(prompt="crash")),  # crashes the engine, also alone
        FakeRequest(np.ones(800, np.float32), VAD_FILTER=np.array([[b"maybe"]], dtype=object)),
        FakeRequest(np.ones(32000, np.float32)),
    ]
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    ok = [r for r in responses if r.error is None]
    assert [protocol.parse_result(r.outputs.__getitem__).duration for r in ok] == [1.0, 2.0]
    assert protocol.parse_result(ok[0].outputs.__getitem__).segments == (Segment(0, 0.0, 1.0, " hi", tokens=(5,)),)
    errors = [(r.error.code, r.error.message) for r in responses if r.error is not None]
    assert errors == [("INVALID_ARG", "AUDIO is required"), ("INVALID_ARG", "unknown language code 'xx'"),
                      ("INTERNAL", "internal error while transcribing; see the server log"),
                      ("INVALID_ARG", "VAD_FILTER must be '', 'true' or 'false', got 'maybe'")]
    assert [r.error is None for r in responses] == [True, False, False, False, False, True]
    # the four requests that parsed went to the engine together, then alone after the crash
    assert model.engine.batches == [4, 1, 1, 1, 1]
