"""Requests' audio -> speech windows -> GE2E embeddings, the windows of all requests of a batch run
through the encoder together (in slices of ``max_windows``, which bounds memory)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import encoder, regions


@dataclass(frozen=True)
class SpeakerConfig:
    step_s: float = 0.8  # between two windows' starts inside a speech region
    vad_threshold: float = 0.35
    max_windows: int = 128  # windows per encoder call
    max_audio_s: float = 4 * 3600.0
    cpu_threads: int = 1  # BLAS threads of the encoder (Whisper's instances keep the other cores)

    @classmethod
    def from_parameters(cls, parameters: dict) -> "SpeakerConfig":
        values = {}
        for key, raw in (parameters or {}).items():
            text = raw.get("string_value", "") if isinstance(raw, dict) else str(raw)
            if key in ("step_s", "vad_threshold", "max_audio_s"):
                values[key] = float(text)
            elif key in ("max_windows", "cpu_threads"):
                values[key] = int(text)
        config = cls(**values)
        if not 0.1 <= config.step_s <= 1.6:
            raise ValueError(f"parameter 'step_s' must be within 0.1..1.6 s, got {config.step_s}")
        if config.max_windows < 1 or config.cpu_threads < 1:
            raise ValueError("parameters 'max_windows' and 'cpu_threads' must be at least 1")
        return config


@dataclass(frozen=True)
class Embedded:
    spans: np.ndarray  # [n, 2] seconds of speech each embedding stands for
    embeddings: np.ndarray  # [n, 256] unit vectors
    regions: np.ndarray  # [n] index of the speech region each window belongs to


def plan_request(audio: np.ndarray, config: SpeakerConfig) -> tuple[np.ndarray, list[regions.Window], np.ndarray]:
    """The request's audio raised to the encoder's level, its windows, and each window's region index."""
    audio = encoder.normalize_volume(audio)
    speech = regions.speech_regions(audio, config.vad_threshold)
    windows, region_ids = [], []
    for index, region in enumerate(speech):
        planned = regions.plan([region], len(audio), config.step_s)
        windows += planned
        region_ids += [index] * len(planned)
    return audio, windows, np.array(region_ids, dtype=np.int32)


class SpeakerEmbedder:
    def __init__(self, network, config: SpeakerConfig = SpeakerConfig()) -> None:
        self.encoder = network  # anything with embed([batch, 160, 40] mels) -> [batch, dim] unit vectors
        self.config = config

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], config: SpeakerConfig = SpeakerConfig()) -> "SpeakerEmbedder":
        return cls(encoder.GE2EEncoder(arrays), config)

    def plan(self, audio: np.ndarray) -> tuple[np.ndarray, list[regions.Window], np.ndarray]:
        return plan_request(audio, self.config)

    def embed(self, audios: list[np.ndarray]) -> list[Embedded]:
        planned = [self.plan(a) for a in audios]
        mels = [encoder.mel_frames(regions.cut(audio, windows).reshape(-1))
                if windows else np.zeros((0, encoder.N_MELS), np.float32) for audio, windows, _ in planned]
        # The windows were cut back to back, so each one's frames are a 160-frame slice (the centred
        # STFT's extra frame at each join is skipped).
        stacks = [np.stack([m[i * encoder.WINDOW_FRAMES:(i + 1) * encoder.WINDOW_FRAMES] for i in range(len(w))])
                  if w else np.zeros((0, encoder.WINDOW_FRAMES, encoder.N_MELS), np.float32)
                  for m, (_, w, _) in zip(mels, planned)]
        allw = np.concatenate(stacks) if stacks else np.zeros((0, encoder.WINDOW_FRAMES, encoder.N_MELS))
        out = np.zeros((len(allw), 256), np.float32)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.config.cpu_threads, user_api="blas"):
            for s in range(0, len(allw), self.config.max_windows):
                out[s:s + self.config.max_windows] = self.encoder.embed(allw[s:s + self.config.max_windows])
        results, offset = [], 0
        for (_, windows, region_ids) in planned:
            n = len(windows)
            spans = np.array([w.span for w in windows], dtype=np.float32).reshape(n, 2)
            results.append(Embedded(spans, out[offset:offset + n], region_ids))
            offset += n
        return results


def parse_audio(array: np.ndarray | None, max_audio_s: float) -> np.ndarray:
    """One request's AUDIO tensor -> 1-D float32 samples; ValueError (the request's INVALID_ARG) if unusable."""
    if array is None:
        raise ValueError("AUDIO is required")
    if array.dtype != np.float32:
        raise ValueError(f"AUDIO must be FP32, got {array.dtype}")
    if array.ndim > 2 or (array.ndim == 2 and array.shape[0] != 1):
        raise ValueError(f"AUDIO must be [1, samples] per request, got shape {list(array.shape)}")
    audio = array.reshape(-1)
    if audio.size == 0:
        raise ValueError("AUDIO is empty")
    if audio.size > max_audio_s * encoder.SAMPLE_RATE:
        raise ValueError(f"AUDIO is longer than max_audio_s ({max_audio_s:g} s)")
    if not np.isfinite(audio).all():
        raise ValueError("AUDIO holds NaN or infinite samples")
    return audio


def result_tensors(result: Embedded) -> dict[str, np.ndarray]:
    """The response's tensors, each with the leading batch dimension of 1."""
    return {"EMBEDDINGS": result.embeddings.astype(np.float32)[None],
            "SPANS": result.spans.astype(np.float32)[None],
            "REGIONS": result.regions.astype(np.int32)[None]}
