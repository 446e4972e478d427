"""Triton Python-backend model for speaker embeddings: the TritonPythonModel lifecycle and nothing else.

The work (VAD regions, 1.6 s windows, the GE2E encoder in numpy) lives in ``whisper_triton.speaker``,
unit-tested without Triton. The windows of every request in a dynamic batch go through the encoder together.
"""

import json
import logging
from pathlib import Path

import triton_python_backend_utils as pb_utils

from whisper_triton.speaker import weights
from whisper_triton.speaker.embedder import SpeakerConfig, SpeakerEmbedder, parse_audio, result_tensors

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
log = logging.getLogger("whisper_triton.speaker.model")


def _load(spec: str, repository: Path, gpu: bool):
    """``bundled:ge2e`` (the PyPI weights, numpy) or a hub model for users with internet and a GPU."""
    if spec == "bundled:ge2e":
        return SpeakerEmbedder.from_arrays(weights.load())
    from whisper_triton.speaker.hub import HubEmbedder

    return HubEmbedder(spec, device="cuda" if gpu else "cpu")


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        parameters = model_config.get("parameters", {})
        self.config = SpeakerConfig.from_parameters(parameters)
        spec = (parameters.get("model") or {}).get("string_value", "bundled:ge2e")
        self.embedder = _load(spec, Path(args["model_repository"]), args.get("model_instance_kind") == "GPU")
        self.embedder.config = self.config
        log.info("speaker model %s ready (step %.2f s)", spec, self.config.step_s)

    def execute(self, requests):
        parsed = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "AUDIO")
            try:
                parsed.append(parse_audio(None if tensor is None else tensor.as_numpy(), self.config.max_audio_s))
            except ValueError as exc:
                parsed.append(exc)
        valid = [p for p in parsed if not isinstance(p, Exception)]
        try:
            results = iter(self.embedder.embed(valid))
        except Exception as exc:  # a bug fails this batch's requests with a message, not a traceback
            log.exception("speaker embedding failed")
            error = pb_utils.TritonError(f"speaker embedding failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        for item in parsed:
            if isinstance(item, Exception):
                error = pb_utils.TritonError(str(item), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                tensors = [pb_utils.Tensor(name, array) for name, array in result_tensors(next(results)).items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self):
        self.embedder = None
