"""Engine settings, read once from the ``parameters`` block of a model's config.pbtxt.

The defaults here are the ones model_repository/whisper/config.pbtxt ships (a unit test compares them).

A bad value fails the model load with a message that names the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Callable, Mapping

from .cpu import CHOICES


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _floats(value: str) -> tuple[float, ...]:
    items = tuple(float(v) for v in value.split(",") if v.strip())
    if not items:
        raise ValueError("expected a comma-separated list of numbers")
    return items


@dataclass(frozen=True)
class EngineConfig:
    model: str = "bundled:base"
    device: str = "auto"  # auto | cpu | cuda
    compute_type: str = "int8"
    cpu_threads: int = 1
    cpu_isa: str = "auto"  # auto | default | AVX512 | AVX2 | AVX | NONE (see whisper_triton/cpu.py)
    beam_size: int = 5
    max_batch_windows: int = 2
    context_floor_s: float = 8.0
    context_margin_s: float = 3.0  # trailing silence kept after the window
    context_step_s: float = 4.0  # contexts are rounded up to multiples of this; only equal contexts share a batch
    max_tokens_per_s: float = 12.0  # decoding budget per second of audio on the first pass; 0 = model's 448
    trim_min_logprob: float = -0.8  # a decode at a shorter context is kept only at this avg log-prob or above
    trim_languages: str = ""  # languages decoded at a trimmed context first ("*" all, "" none); others at 30 s
    vad_filter: bool = False  # True: decode only what the VAD calls speech (per request: VAD_FILTER)
    vad_threshold: float = 0.5
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    fallback_temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    max_audio_s: float = 4 * 3600.0
    best_of: int = 5
    download_root: str = ""

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any], **overrides: Any) -> "EngineConfig":
        """Build from Triton's parameters (``{"key": {"string_value": "..."}}``) or a plain dict."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in parameters.items():
            text = raw.get("string_value", "") if isinstance(raw, Mapping) else str(raw)
            if key not in known:  # a misspelt parameter would otherwise be ignored without a word
                raise ValueError(f"config.pbtxt parameter '{key}' is unknown; known: {', '.join(known)}")
            try:
                values[key] = _parser_for(known[key].type)(text)
            except ValueError as exc:
                raise ValueError(f"config.pbtxt parameter '{key}': {exc}") from None
        values.update(overrides)
        config = cls(**values)
        config.validate()
        return config

    def trims(self, language: str | None) -> bool:
        """Whether a window in ``language`` may be decoded at a trimmed context first. A language still to
        be detected (None) is, when any language is listed: the first pass detects it, and a window in a
        language not listed is then decoded again at 30 s; with none listed, it is detected at 30 s."""
        listed = self._trimmed_languages
        return bool(listed) if language is None else ("*" in listed or language in listed)

    @cached_property
    def _trimmed_languages(self) -> frozenset[str]:
        """``trim_languages`` parsed once (``trims`` is asked for every window of every pass)."""
        return frozenset(code.strip() for code in self.trim_languages.split(",") if code.strip())

    def validate(self) -> None:
        for name, check, why in _CHECKS:
            if not check(getattr(self, name)):
                raise ValueError(f"config.pbtxt parameter '{name}': {why}, got {getattr(self, name)!r}")


def _parser_for(type_name: Any) -> Callable[[str], Any]:
    name = getattr(type_name, "__name__", str(type_name))
    if name == "int":
        return lambda v: int(v.strip())
    if name == "float":
        return lambda v: float(v.strip())
    if name == "bool":
        return _bool
    if name.startswith("tuple"):
        return _floats
    return lambda v: v.strip()


_CHECKS = (
    ("model", lambda v: bool(v), "must name a model"),
    ("device", lambda v: v in ("auto", "cpu", "cuda"), "must be auto, cpu or cuda"),
    ("compute_type", lambda v: bool(v), "must name a CTranslate2 compute type"),
    ("cpu_threads", lambda v: v >= 0, "must be >= 0"),
    ("cpu_isa", lambda v: v in CHOICES, "must be one of " + ", ".join(CHOICES)),
    ("beam_size", lambda v: 1 <= v <= 16, "must be between 1 and 16"),
    ("max_batch_windows", lambda v: 1 <= v <= 256, "must be between 1 and 256"),
    ("best_of", lambda v: 1 <= v <= 16, "must be between 1 and 16"),
    ("context_floor_s", lambda v: 1.0 <= v <= 30.0, "must be between 1 and 30 seconds"),
    ("context_margin_s", lambda v: 0.0 <= v <= 30.0, "must be between 0 and 30 seconds"),
    ("context_step_s", lambda v: 0.0 <= v <= 30.0, "must be between 0 and 30 seconds"),
    ("max_tokens_per_s", lambda v: v == 0 or 2.0 <= v <= 100.0, "must be 0 (off) or between 2 and 100"),
    ("vad_threshold", lambda v: 0.0 < v < 1.0, "must be between 0 and 1"),
    ("trim_min_logprob", lambda v: -10.0 <= v <= 0.0, "must be between -10 (keep every trimmed decode) and 0"),
    ("compression_ratio_threshold", lambda v: v > 1.0, "must be > 1"),
    ("no_speech_threshold", lambda v: 0.0 <= v <= 1.0, "must be between 0 and 1"),
    ("fallback_temperatures", lambda v: all(0.0 <= t <= 1.0 for t in v), "temperatures must be within [0, 1]"),
    ("max_audio_s", lambda v: v > 0, "must be > 0"),
)
