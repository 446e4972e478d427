"""Triton Python-backend model for Whisper: the TritonPythonModel lifecycle and nothing else.

All Whisper logic (windows, batching, prompts, guards, segments) lives in the ``whisper_triton``
package, which is installed in the same environment as this stub and unit-tested without Triton.
"""

import json
import logging
from pathlib import Path

import triton_python_backend_utils as pb_utils

from whisper_triton.config import EngineConfig
from whisper_triton.engine import WhisperEngine
from whisper_triton.isolation import EngineFailure, transcribe_isolated
from whisper_triton.telemetry import BATCH_BUCKETS, BATCH_WINDOWS, BATCH_WINDOWS_HELP, COUNTERS, StatsWatcher
from whisper_triton.triton_io import parse_request, result_tensors

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
log = logging.getLogger("whisper_triton.model")


class Cancelled(Exception):
    """The request's client went away (its gRPC call was cancelled) before the model got to it."""


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        # Settings are read once; a bad value raises here and the model fails to load, with its name.
        self.config = EngineConfig.from_parameters(model_config.get("parameters", {}))
        gpu = args.get("model_instance_kind") == "GPU"
        self.engine = WhisperEngine(
            self.config,
            device="cuda" if gpu else "cpu",
            device_index=int(args.get("model_instance_device_id") or 0),
            model_dir=Path(args["model_repository"]),
        )
        self.engine.warmup()
        self._metrics(args["model_name"], args["model_version"])

    def _metrics(self, model_name, model_version):
        """Counters and a batch-size histogram on Triton's metrics endpoint; none if metrics are off."""
        self.watcher = StatsWatcher()
        self.watcher.movement(self.engine.stats)  # the warm-up is not traffic
        self.counters, self.batch_windows = {}, None
        labels = {"model": model_name, "version": model_version}
        try:
            self.families = [pb_utils.MetricFamily(name=name, description=text, kind=pb_utils.MetricFamily.COUNTER)
                             for name, (_, text) in COUNTERS.items()]
            self.counters = {name: family.Metric(labels=labels) for name, family in zip(COUNTERS, self.families)}
            histogram = pb_utils.MetricFamily(name=BATCH_WINDOWS, description=BATCH_WINDOWS_HELP,
                                              kind=pb_utils.MetricFamily.HISTOGRAM)
            self.families.append(histogram)
            self.batch_windows = histogram.Metric(labels=labels, buckets=BATCH_BUCKETS)
        except Exception as exc:  # e.g. tritonserver --allow-metrics=false
            log.warning("custom metrics unavailable: %s", exc)

    def _observe(self):
        movement = self.watcher.movement(self.engine.stats)
        for name, delta in movement.counters.items():
            if name in self.counters:
                self.counters[name].increment(delta)
        if self.batch_windows is not None:
            for size in movement.batch_sizes:
                self.batch_windows.observe(size)

    def execute(self, requests):
        parsed = []
        for request in requests:
            if request.is_cancelled():  # no work for a client that is gone
                parsed.append(Cancelled("request cancelled by its client"))
                continue
            try:
                parsed.append(parse_request(request))
            except ValueError as exc:
                parsed.append(exc)
        valid = [p for p in parsed if not isinstance(p, Exception)]
        # If the batched call raises, each request is retried alone: a crash fails only its own requests.
        results = iter(transcribe_isolated(self.engine.transcribe, valid))
        self._observe()

        responses = []
        for item in parsed:
            outcome = item if isinstance(item, Exception) else next(results)
            if isinstance(outcome, Cancelled):
                log.info("skipped a request whose client went away")
                error = pb_utils.TritonError(str(outcome), pb_utils.TritonError.CANCELLED)
                responses.append(pb_utils.InferenceResponse(error=error))
            elif isinstance(outcome, EngineFailure):  # a bug must not leak a traceback to clients
                error = pb_utils.TritonError(str(outcome))  # code INTERNAL
                responses.append(pb_utils.InferenceResponse(error=error))
            elif isinstance(outcome, Exception):
                error = pb_utils.TritonError(str(outcome), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                tensors = [pb_utils.Tensor(name, array) for name, array in result_tensors(outcome).items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self):
        # Metric objects go before their families (the stub requires it), then the engine.
        self.counters, self.batch_windows, self.families = {}, None, []
        self.engine = None
