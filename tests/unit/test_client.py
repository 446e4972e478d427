"""``client/``: the tritonclient wrapper, the CLI, subtitles and audio, with Triton faked at the channel."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import client.__main__ as cli
from client import WhisperTritonClient, decode_file, encode_wav
from client.formats import to_srt, to_vtt
from whisper_triton import protocol
from whisper_triton.protocol import Options, Segment, Word

SEGMENTS = (Segment(0, 0.0, 1.25, " Hello  there.", tokens=(1, 2), words=(Word(" Hello", 0.0, 0.5, 0.9),)),
            Segment(1, 3600.0, 3601.5, " Bye.", speaker="B"))


class FakeResult:
    def __init__(self) -> None:
        self.arrays = protocol.result_arrays("Hello there. Bye.", SEGMENTS, "en", 3601.5)

    def as_numpy(self, name: str) -> np.ndarray:
        return self.arrays[name]


class FakeChannel:
    def __init__(self) -> None:
        self.calls = []

    def infer(self, model, inputs, outputs=None, **kwargs):
        self.calls.append((model, inputs, outputs, kwargs))
        return FakeResult()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("protocol_name,timeout_key", [("grpc", "client_timeout"), ("http", "timeout")])
def test_transcribe_sends_the_whole_contract_and_parses_typed_segments(protocol_name, timeout_key):
    with WhisperTritonClient("127.0.0.1:1", "whisper-tiny-en", protocol_name, timeout_s=7) as c:
        channel = c._client = FakeChannel()
        result = c.transcribe(np.zeros(800, np.float64), language="en", prompt="names", word_timestamps=True,
                              vad_filter=True)
    [(model, inputs, outputs, kwargs)] = channel.calls
    assert model == "whisper-tiny-en" and kwargs == {timeout_key: 7}
    assert [(i.name(), i.datatype(), i.shape()) for i in inputs] == [
        (t.name, t.triton_dtype, [1, 800] if t.name == "AUDIO" else [1, 1]) for t in protocol.INPUTS
        if t.name != "CONTEXT"]  # a prompt: all, but the context (the model's own: not set)
    assert [o.name() for o in outputs] == list(protocol.OUTPUT_NAMES)
    assert (result.text, result.language, result.duration) == ("Hello there. Bye.", "en", 3601.5)
    assert result.segments == SEGMENTS


def test_subtitles_are_exact():
    assert to_srt(SEGMENTS) == ("1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n"
                                "2\n01:00:00,000 --> 01:00:01,500\nSpeaker B: Bye.\n")
    assert to_vtt(SEGMENTS) == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n\n"
                                "01:00:00.000 --> 01:00:01.500\n<v Speaker B>Bye.\n")


def test_cli_renders_each_file_and_reports_failures(monkeypatch, capsys, tmp_path):
    class Client:
        def __init__(self, *args) -> None:
            pass

        def transcribe(self, audio, *args):
            if audio.size == 0:
                raise RuntimeError("boom")
            return protocol.Result("Hello there. Bye.", "en", 3601.5, SEGMENTS)

    monkeypatch.setattr(cli, "WhisperTritonClient", Client)
    monkeypatch.setattr(cli, "decode_file", lambda path: np.zeros(0 if "bad" in path else 10, np.float32))
    assert cli.main(["transcribe", "good.wav", "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["text"] == "Hello there. Bye." and protocol.parse_segments(json.dumps(body["segments"])) == SEGMENTS
    assert cli.main(["transcribe", "good.wav", "bad.wav", "--format", "srt"]) == 1
    out = capsys.readouterr()
    assert out.out == f"==> good.wav <==\n{to_srt(SEGMENTS)}\n" and "bad.wav: error: boom" in out.err


def test_wav_round_trip():
    samples = (0.5 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 440)).astype(np.float32)
    decoded = decode_file(io.BytesIO(encode_wav(samples)))
    assert decoded.dtype == np.float32 and decoded.shape == samples.shape
    assert np.max(np.abs(decoded - samples)) < 1e-3
