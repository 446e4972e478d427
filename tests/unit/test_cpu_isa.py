"""The CPU instruction-set choice (whisper_triton/cpu.py): pure functions, no CTranslate2 needed."""

import pytest

from whisper_triton.config import EngineConfig
from whisper_triton.cpu import AVX512_FLAGS, CT2_CHOICE, ENV, choose_isa, cpu_flags, effective_isa

ZEN4 = frozenset({"sse4_1", "avx", "avx2", "fma", *AVX512_FLAGS, "avx512_vnni", "avx512_bf16"})
ZEN3 = frozenset({"sse4_1", "avx", "avx2", "fma"})


def test_auto_forces_avx512_only_where_every_needed_subset_is_present():
    assert choose_isa("auto", ZEN4, {}) == "AVX512"
    assert choose_isa("auto", ZEN3, {}) is None
    assert choose_isa("auto", ZEN4 - {"avx512bw"}, {}) is None  # a partial AVX512 is left to ctranslate2
    assert choose_isa("auto", frozenset(), {}) is None  # no /proc/cpuinfo (not Linux)


def test_auto_respects_a_value_the_user_exported():
    assert choose_isa("auto", ZEN4, {ENV: "AVX2"}) is None
    assert effective_isa("auto", ZEN4, {ENV: "AVX2"}) == "AVX2"
    assert effective_isa("auto", ZEN4, {}) == "AVX512"
    assert effective_isa("auto", ZEN3, {}) == effective_isa("default", ZEN4, {}) == CT2_CHOICE


def test_default_never_touches_and_an_explicit_name_wins():
    assert choose_isa("default", ZEN4, {}) is None
    assert choose_isa("AVX2", ZEN4, {}) == "AVX2"
    assert choose_isa("AVX512", ZEN3, {ENV: "AVX"}) == "AVX512"


def test_unknown_setting_is_refused_by_the_function_and_by_the_config():
    with pytest.raises(ValueError, match="cpu_isa"):
        choose_isa("avx9000", ZEN4, {})
    with pytest.raises(ValueError, match="'cpu_isa'"):
        EngineConfig.from_parameters({"cpu_isa": {"string_value": "avx9000"}})
    assert EngineConfig.from_parameters({"cpu_isa": {"string_value": "AVX2"}}).cpu_isa == "AVX2"
    assert EngineConfig().cpu_isa == "auto"


def test_cpu_flags_reads_the_first_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == frozenset({"fpu", "avx2", "avx512f"})
    assert cpu_flags(tmp_path / "missing") == frozenset()
    info.write_text("processor\t: 0\n")
    assert cpu_flags(info) == frozenset()
