"""The Triton contract (``whisper_triton.protocol``): defined once, matching config.pbtxt, importable alone."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from whisper_triton import protocol
from whisper_triton.protocol import Options, Segment, Word

ROOT = Path(__file__).resolve().parents[2]
WHISPER_CONFIGS = [ROOT / "model_repository" / name / "config.pbtxt" for name in ("whisper", "whisper-tiny-en")]
SOURCE_DIRS = ("whisper_triton", "gateway", "client", "model_repository", "benchmarks", "deploy")
PBTXT_TYPES = {"FP32": "TYPE_FP32", "BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL", "INT32": "TYPE_INT32"}


def _tensors(config: str, section: str) -> list[tuple[str, str]]:
    body = re.search(rf"^{section} \[(.*?)^\]", config, re.S | re.M).group(1)
    return re.findall(r'name: "(\w+)".*?data_type: (\w+)', body, re.S)


@pytest.mark.parametrize("config", WHISPER_CONFIGS, ids=lambda p: p.parent.name)
def test_config_pbtxt_declares_the_protocols_tensors(config):
    text = config.read_text()
    assert _tensors(text, "input") == [(t.name, PBTXT_TYPES[t.triton_dtype]) for t in protocol.INPUTS]
    assert _tensors(text, "output") == [(t.name, PBTXT_TYPES[t.triton_dtype]) for t in protocol.OUTPUTS]


def test_the_protocol_imports_without_the_engine_or_tritonclient():
    code = ("import sys, whisper_triton.protocol, client.formats; "
            "heavy = {'ctranslate2', 'faster_whisper', 'tritonclient', 'onnxruntime', 'fastapi'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _python_sources():
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != ROOT / "whisper_triton" / "protocol.py":
                yield path


def test_tensor_names_and_the_segment_schema_are_defined_once():
    """Every module takes the tensor names and Segment/Word from ``protocol``; a second definition (a name
    spelled as a string literal, a ``class Segment``) is how the four copies of the contract drifted."""
    names = [n for n in (*protocol.INPUT_NAMES, *protocol.OUTPUT_NAMES) if n != "AUDIO"]  # the speaker model has one too
    literal = re.compile(r"""["'](%s)["']""" % "|".join(sorted(set(names))))
    schema = re.compile(r"^\s*class (Segment|Word)\b", re.M)
    found = []
    for path in _python_sources():
        text = path.read_text()
        found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in (*literal.finditer(text), *schema.finditer(text))]
    assert found == []


def test_request_arrays_round_trip_through_parse_request():
    options = Options(language="zh", task="translate", prompt="Glossary", word_timestamps=True, beam_size=3,
                      temperature=0.2, vad_filter=False, context="trimmed")
    arrays = protocol.request_arrays(np.ones(800, np.float64), options)
    assert list(arrays) == list(protocol.INPUT_NAMES)  # all of them, in order, with a prompt and a context
    assert {n: a.dtype for n, a in arrays.items()} == {t.name: np.dtype(t.dtype) for t in protocol.INPUTS}
    assert arrays["AUDIO"].shape == (1, 800) and all(a.shape == (1, 1) for n, a in arrays.items() if n != "AUDIO")
    audio, parsed = protocol.parse_request(arrays.get)
    assert audio.shape == (800,) and parsed == Options(language="zh", task="translate", prompt="Glossary",
                                                       word_timestamps=True, beam_size=3,
                                                       temperature=pytest.approx(0.2), vad_filter=False,
                                                       context="trimmed")
    plain = protocol.request_arrays(np.ones(10), Options())
    # PROMPT and CONTEXT only when set
    assert list(plain) == [n for n in protocol.INPUT_NAMES if n not in ("PROMPT", "CONTEXT")]
    assert protocol.parse_request(plain.get)[1] == Options()


def test_an_unknown_context_fails_alone():
    arrays = protocol.request_arrays(np.ones(10), Options(context="full"))
    assert protocol.parse_request(arrays.get)[1].context == "full"
    arrays["CONTEXT"] = np.array([[b"half"]], dtype=object)
    with pytest.raises(protocol.InvalidArgument, match="CONTEXT"):
        protocol.parse_request(arrays.get)


def test_detect_is_one_value():
    assert Options(language="").language is None and Options(language="") == Options()


def test_segments_dump_and_parse_are_inverse():
    segments = (Segment(0, 0.0, 1.5, " Hello", -0.2, 0.01, 1.1, 0.0, (50, 51), (Word(" Hello", 0.0, 1.5, 0.9),)),
                Segment(1, 1.5, 2.0, " there"))
    text = protocol.dump_segments(segments)
    assert protocol.parse_segments(text) == segments
    assert '"speaker"' not in text and text.count('"words"') == 1  # left out when absent
    assert protocol.parse_segments("") == () and protocol.parse_segments('[{"text": " x"}]')[0].id == 0


def test_result_arrays_round_trip_through_parse_result():
    segments = [Segment(0, 0.0, 1.0, " hi", tokens=(7,))]
    arrays = protocol.result_arrays(" hi", segments, "en", 1.0)
    assert list(arrays) == list(protocol.OUTPUT_NAMES) and all(a.shape == (1, 1) for a in arrays.values())
    assert protocol.parse_result(arrays.__getitem__) == protocol.Result(" hi", "en", 1.0, tuple(segments))
