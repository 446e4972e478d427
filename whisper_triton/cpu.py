"""Which vector instruction set CTranslate2 uses on this CPU.

CTranslate2 selects AVX512 only on Intel CPUs; on an AMD CPU that has AVX512 (Zen 4 and later) it
falls back to AVX2. Measured on a 2-core AMD EPYC (Zen 4), base int8, short clips: forcing AVX512 was
about 9% faster at the same WER (``benchmarks/``). ``cpu_isa: auto`` forces AVX512 wherever the CPU has
every AVX512 subset CTranslate2 needs, and otherwise leaves its choice alone.

The choice is made through ``CT2_FORCE_CPU_ISA``, which CTranslate2 reads once per process, before the
first model is loaded. A value the user already exported wins over ``auto``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Optional

log = logging.getLogger("whisper_triton.cpu")

ENV = "CT2_FORCE_CPU_ISA"
CHOICES = ("auto", "default", "AVX512", "AVX2", "AVX", "NONE")
CT2_CHOICE = "ctranslate2's choice"
# The subsets CTranslate2's own AVX512 detection asks for (cpu_features: F, CD, VL, BW, DQ).
AVX512_FLAGS = frozenset({"avx512f", "avx512cd", "avx512vl", "avx512bw", "avx512dq"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo``; empty where there is none (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def choose_isa(setting: str, flags: frozenset[str], env: Mapping[str, str]) -> Optional[str]:
    """The value to put in ``CT2_FORCE_CPU_ISA``, or ``None`` to leave CTranslate2's own choice.

    ``auto``: AVX512 when every needed flag is present and the user did not set the variable;
    ``default``: never touch it; an explicit ISA name: that one.
    """
    if setting not in CHOICES:
        raise ValueError(f"cpu_isa must be one of {', '.join(CHOICES)}, got {setting!r}")
    if setting == "default":
        return None
    if setting == "auto":
        if env.get(ENV):
            return None
        return "AVX512" if AVX512_FLAGS <= flags else None
    return setting


def effective_isa(setting: str, flags: frozenset[str], env: Mapping[str, str]) -> str:
    """What CTranslate2 will use under ``setting``: the ISA forced by it or already exported, else
    "ctranslate2's choice"."""
    return choose_isa(setting, flags, env) or env.get(ENV) or CT2_CHOICE


def apply_isa(setting: str) -> str:
    """Set ``CT2_FORCE_CPU_ISA`` for this process as ``setting`` says; returns ``effective_isa``."""
    chosen = effective_isa(setting, cpu_flags(), os.environ)
    if chosen != CT2_CHOICE:
        os.environ[ENV] = chosen
    log.info("cpu_isa=%s -> %s", setting, chosen)
    return chosen
