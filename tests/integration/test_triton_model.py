"""The real tritonserver, the real model_repository/ and the real base weights, driven by tritonclient."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client import WhisperTritonClient, build_inputs
from client.core import OUTPUTS, parse_result
from tests.conftest import model_metric, read_metrics
from tests.utils.helpers import audio_of, cer, clip, wer

pytestmark = pytest.mark.integration

EN_CLIPS = ["en/jfk.flac", "en/LDC93S1.wav", "en/1272-128104-0000.flac", "en/1089-134686-0001.wav",
            "en/1995-1837-0001.wav", "en/6829-68769-0004.flac", "en/LJ002-0020.wav", "en/260-123286-0006.flac"]
ZH_CLIPS = ["zh/BAC009S0724W0121.wav", "zh/BAC009S0002W0122.wav", "zh/BAC009S0002W0123.wav", "zh/BAC009S0002W0124.wav"]


def transcribe_many(triton, items, model="whisper", **options):
    """Send ``items`` (arrays) concurrently, one client per thread, so Triton can batch them."""
    def one(audio):
        with WhisperTritonClient(triton.grpc_url, model) as c:
            return c.transcribe(audio, **options)

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(one, items))


def test_english_wer_and_batching(triton, shared_audio):
    before = read_metrics(triton.metrics_url)
    results = transcribe_many(triton, [audio_of(f) for f in EN_CLIPS])
    after = read_metrics(triton.metrics_url)
    refs = [clip(f)["reference_text"] for f in EN_CLIPS]
    # Each clip gets its own transcript: a mix-up would blow the per-clip WER.
    for file, ref, res in zip(EN_CLIPS, refs, results):
        assert wer(ref, res.text) <= 0.5, (file, ref, res.text)
        assert res.language == "en", (file, res.language)
        assert res.duration == pytest.approx(len(audio_of(file)) / 16000, abs=0.01)
    assert wer(refs, [r.text for r in results]) <= 0.12
    requests = model_metric(after, "nv_inference_request_success", "whisper") - model_metric(before, "nv_inference_request_success", "whisper")
    executions = model_metric(after, "nv_inference_exec_count", "whisper") - model_metric(before, "nv_inference_exec_count", "whisper")
    assert requests == len(EN_CLIPS)
    assert executions < requests, f"{int(requests)} requests ran as {int(executions)} executions: not batched"

    # The model's own metrics on the same endpoint: audio, windows, batches and the batch-size histogram.
    def moved(name: str) -> float:
        return model_metric(after, name, "whisper") - model_metric(before, name, "whisper")

    assert moved("whisper_audio_seconds_total") == pytest.approx(sum(r.duration for r in results), abs=0.01)
    windows, batches = moved("whisper_windows_total"), moved("whisper_generate_batches_total")
    assert windows >= len(EN_CLIPS) and executions <= batches < windows, (windows, batches, executions)
    assert moved("whisper_batch_windows_count") == batches
    assert moved("whisper_batch_windows_sum") >= windows + moved("whisper_fallback_windows_total")  # retries re-batch


def test_mandarin_cer_and_language(triton, shared_audio):
    results = transcribe_many(triton, [audio_of(f) for f in ZH_CLIPS])
    assert all(r.language == "zh" for r in results), [r.language for r in results]
    refs = [clip(f)["reference_text"] for f in ZH_CLIPS]
    assert cer(refs, [r.text for r in results]) <= 0.45


def test_long_mandarin_keeps_every_sentence(triton, shared_audio):
    """Speech the decoder skips inside a window is found (VAD vs segments) and decoded again."""
    with WhisperTritonClient(triton.grpc_url) as c:
        result = c.transcribe(audio_of("long/zh_concat.wav"))
    assert result.language == "zh"
    assert cer(clip("long/zh_concat.wav")["reference_text"], result.text) <= 0.45, result.text
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and len(result.segments) >= 5


def test_translate_mandarin_to_english(triton, shared_audio):
    audio = audio_of("zh/funasr_asr_example_zh.wav")
    with WhisperTritonClient(triton.grpc_url) as c:
        result = c.transcribe(audio, language="zh", task="translate")
    letters = [ch for ch in result.text if ch.isalpha()]
    assert letters, result.text
    ascii_share = sum(ch.isascii() for ch in letters) / len(letters)
    assert ascii_share > 0.9, result.text


def test_silence_gives_empty_text(triton):
    with WhisperTritonClient(triton.grpc_url) as c:
        result = c.transcribe(np.zeros(16000 * 5, dtype=np.float32))
    assert result.text == "" and result.segments == ()
    assert result.duration == pytest.approx(5.0)


def test_long_audio_segments_cover_timeline(triton, shared_audio):
    files = ["en/1089-134686-0000.wav", "en/121-127105-0000.flac", "en/1320-122612-0008.flac", "en/3570-5694-0005.flac",
             "en/2300-131720-0008.flac", "en/8555-284447-0000.flac", "en/7021-79730-0001.flac"]
    gap = np.zeros(int(16000 * 1.0), dtype=np.float32)
    audio = np.concatenate([part for f in files for part in (audio_of(f), gap)])
    assert len(audio) / 16000 > 60
    with WhisperTritonClient(triton.grpc_url) as c:
        result = c.transcribe(audio, language="en")
    starts = [s.start for s in result.segments]
    ends = [s.end for s in result.segments]
    assert starts == sorted(starts) and ends == sorted(ends)
    assert all(s.end >= s.start for s in result.segments)
    assert starts[0] < 2.0 and ends[-1] > result.duration - 4.0, (starts[0], ends[-1], result.duration)
    assert wer(" ".join(clip(f)["reference_text"] for f in files), result.text) <= 0.12


def test_word_timestamps(triton, shared_audio):
    with WhisperTritonClient(triton.grpc_url) as c:
        result = c.transcribe(audio_of("en/jfk.flac"), word_timestamps=True)
    words = [w for s in result.segments for w in s.words]
    assert [w.word.strip(" ,.").lower() for w in words[:4]] == ["and", "so", "my", "fellow"]
    assert all(0 <= w.start <= w.end <= result.duration + 0.5 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert all(0.0 <= w.probability <= 1.0 for w in words)


def test_bad_requests_fail_alone_in_a_batch(triton, shared_audio):
    # Scaled copies: bytes no other test sends, so the response cache cannot answer them and the good
    # requests really share executions with the bad ones.
    good = [audio_of(f) * np.float32(0.97) for f in ("en/jfk.flac", "en/LDC93S1.wav", "en/1089-134686-0001.wav")]
    jobs = [(a, "") for a in good] + [(np.zeros(0, dtype=np.float32), ""), (good[0], "xx")]

    def one(job):
        audio, language = job
        with WhisperTritonClient(triton.grpc_url) as c:
            try:
                return c.transcribe(audio, language=language)
            except InferenceServerException as exc:
                return exc

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(one, jobs))
    for file, res in zip(["en/jfk.flac", "en/LDC93S1.wav", "en/1089-134686-0001.wav"], results[:3]):
        assert not isinstance(res, Exception), res
        assert wer(clip(file)["reference_text"], res.text) <= 0.5
    empty, bad_language = results[3], results[4]
    assert isinstance(empty, InferenceServerException) and "AUDIO is empty" in empty.message()
    assert empty.status() == "StatusCode.INVALID_ARGUMENT"
    assert isinstance(bad_language, InferenceServerException) and "unknown language code 'xx'" in bad_language.message()
    assert "Traceback" not in empty.message() + bad_language.message()


def test_wrong_dtype_and_shape_rejected(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    wrong = grpcclient.InferInput("AUDIO", [1, 16000], "FP64")
    wrong.set_data_from_numpy(np.zeros((1, 16000), dtype=np.float64))
    with pytest.raises(InferenceServerException, match="(?i)data-type|datatype|FP64"):
        client.infer("whisper", [wrong])
    two = build_inputs(grpcclient, np.zeros(16000, dtype=np.float32))
    two[0] = grpcclient.InferInput("AUDIO", [2, 16000], "FP32")
    two[0].set_data_from_numpy(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("whisper", two)


def test_audio_only_request_works(triton, shared_audio):
    """perf_analyzer sends AUDIO alone; every other input is optional."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    audio = audio_of("en/LDC93S1.wav").reshape(1, -1)
    tensor = grpcclient.InferInput("AUDIO", list(audio.shape), "FP32")
    tensor.set_data_from_numpy(audio)
    result = parse_result(client.infer("whisper", [tensor], outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS]))
    assert wer(clip("en/LDC93S1.wav")["reference_text"], result.text) <= 0.5


def test_a_refusal_repeated_is_still_a_refusal(triton, shared_audio):
    """The response cache is off because Triton cached the model's refusals as empty successes; an identical
    refused request must be refused every time, and an identical good one answered every time."""
    audio = audio_of("en/LDC93S1.wav")[: 16000 * 2]
    with WhisperTritonClient(triton.grpc_url, model="whisper-tiny-en") as c:
        for _ in range(3):
            with pytest.raises(InferenceServerException, match="English-only"):
                c.transcribe(audio, task="translate")
        texts = {c.transcribe(audio, language="en").text for _ in range(2)}
    assert len(texts) == 1 and next(iter(texts))


def test_second_model_tiny_en(triton, shared_audio):
    with WhisperTritonClient(triton.grpc_url, model="whisper-tiny-en") as c:
        result = c.transcribe(audio_of("en/jfk.flac"))
        assert result.language == "en"
        assert wer(clip("en/jfk.flac")["reference_text"], result.text) <= 0.2
        with pytest.raises(InferenceServerException, match="English-only"):
            c.transcribe(audio_of("en/jfk.flac"), task="translate")


def test_espeak_speech_without_shared(triton, espeak_wav):
    from client import decode_file

    with WhisperTritonClient(triton.grpc_url, model="whisper-tiny-en") as c:
        result = c.transcribe(decode_file(str(espeak_wav)))
    assert wer("Hello world. The quick brown fox jumps over the lazy dog.", result.text) <= 0.35, result.text


def test_cli_transcribes_a_real_recording(triton, shared_audio):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "client", "transcribe", str(shared_audio / "en/jfk.flac"), "--url", triton.grpc_url],
                         capture_output=True, text=True, timeout=120, check=True)
    assert wer(clip("en/jfk.flac")["reference_text"], out.stdout) <= 0.1, out.stdout
    srt = subprocess.run([sys.executable, "-m", "client", "transcribe", str(shared_audio / "en/LDC93S1.wav"), "--url", triton.grpc_url, "--format", "srt"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    lines = srt.strip().splitlines()
    assert lines[0] == "1" and " --> " in lines[1] and lines[1].startswith("00:00:0")


def test_every_cpu_instance_runs_the_kernels_cpu_isa_chooses(triton):
    """``cpu_isa: auto`` reaches each model instance's process before its model loads (3 CPU instances:
    2 of whisper, 1 of whisper-tiny-en); the log line names what CTranslate2 was told to use."""
    import os
    import re

    from whisper_triton.cpu import cpu_flags, effective_isa

    expected = effective_isa("auto", cpu_flags(), os.environ)
    lines = re.findall(r"cpu_isa=(\S+) -> (.+)", triton.log_path.read_text(errors="replace"))
    assert len(lines) >= 3, lines
    assert {setting for setting, _ in lines} == {"auto"}
    assert {chosen.strip() for _, chosen in lines} == {expected}
