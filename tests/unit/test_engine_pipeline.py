"""The engine's orchestration (``WhisperEngine.transcribe``: validation, windows, batched decoding, guards and
fallback, skipped-speech recovery, continuation, assembly) with a scripted generator in place of
CTranslate2: no weights, no Triton. Each window's audio holds its own sample positions, so the fake
generator knows which stretch of which request it is decoding."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from whisper_triton import engine as engine_module
from whisper_triton.config import EngineConfig
from whisper_triton.engine import EngineStats, WhisperEngine
from whisper_triton.features import FULL_CONTEXT_FRAMES
from whisper_triton.guards import GuardConfig
from whisper_triton.protocol import InvalidArgument, Options
from whisper_triton.types import Transcription, TranscriptionRequest
from whisper_triton.windows import Span

SR = 16000
TB = 1000  # the fake vocabulary: text tokens below 999, <|endoftext|> 999, timestamps from 1000 (20 ms each)
LANGUAGE_TOKENS = {"en": 980, "de": 981, "zh": 982}


def ts(seconds: float) -> int:
    return TB + round(seconds / 0.02)


class FakeTokenizer:
    timestamp_begin, eot, sot, sot_prev, sot_lm, no_speech, transcribe, translate, no_timestamps = (
        TB, 999, 990, 991, 992, 993, 994, 995, 996)
    non_speech_tokens = (5,)

    def __init__(self, language: str, task: str) -> None:
        self.sot_sequence = (self.sot, LANGUAGE_TOKENS[language], self.transcribe if task == "transcribe" else self.translate)
        self.tokenizer = SimpleNamespace(encode_special_tokens=False)

    def encode(self, text: str) -> list[int]:
        return [int(word[1:]) for word in text.split()]  # " w12 w13" -> [12, 13]

    def decode(self, tokens) -> str:
        return "".join(f" w{t}" for t in tokens if t < self.eot)


class FakeGenerator:
    """CTranslate2's Whisper ``encode``/``detect_language``/``generate``; ``script(window, call)`` answers.

    ``window`` is ``(request, start_s, seconds)`` of the decoded stretch; ``call`` holds the pass's prompt,
    whether it ran at the full 30 s context, and its temperature. The answer is ``tokens`` or
    ``(tokens, avg_logprob, no_speech_prob)``.
    """

    def __init__(self, script) -> None:
        self.script = script
        self.calls: list[tuple[tuple[int, float, float], SimpleNamespace]] = []
        self.encoded: list[list[tuple[int, float]]] = []  # each encode call's (request, frames) rows

    def encode(self, features, to_cpu=False):
        self.encoded.append([(int(marker // 1_000_000), int(frames)) for marker, _, frames in features])
        return features

    def detect_language(self, encoded):
        return [[("<|de|>", 0.97)] for _ in encoded]

    def generate(self, encoded, prompts, *, max_length, **options):
        temperature = options.get("sampling_temperature", 0.0)
        results = []
        for (marker, samples, frames), prompt in zip(encoded, prompts):
            window = (int(marker // 1_000_000), round(marker % 1_000_000 / SR, 3), round(samples / SR, 3))
            call = SimpleNamespace(prompt=list(prompt), full=frames == FULL_CONTEXT_FRAMES, temperature=temperature)
            self.calls.append((window, call))
            answer = self.script(window, call)
            tokens, logprob, no_speech = answer if isinstance(answer, tuple) else (answer, -0.1, 0.01)
            n = len(tokens)
            results.append(SimpleNamespace(sequences_ids=[tokens], scores=[logprob * (n + 1) / n],
                                           no_speech_prob=no_speech))
        return results


def make_engine(monkeypatch, script, speech=None, **config) -> tuple[WhisperEngine, FakeGenerator]:
    """An engine on the fake generator; ``speech(window_audio)`` plays the VAD (spans in the window's samples)."""
    engine = object.__new__(WhisperEngine)
    engine.config = EngineConfig(**config)
    engine.multilingual = True
    engine.guard = GuardConfig(engine.config.compression_ratio_threshold, engine.config.log_prob_threshold,
                               engine.config.no_speech_threshold)
    engine.stats = EngineStats()
    engine.model = SimpleNamespace(max_length=448, feature_extractor=None,
                                   hf_tokenizer=SimpleNamespace(token_to_id=lambda token: 1))
    generator = engine.ct2 = FakeGenerator(script)
    engine._keeps_encodings = True  # as on the CPU
    engine.tokenizer = lambda language, task: FakeTokenizer(language or "en", task)
    monkeypatch.setattr(engine_module, "batch_features",
                        lambda _extractor, audios, frames: np.array([[a[0], len(a), frames] for a in audios]))
    monkeypatch.setattr(engine_module, "ctranslate2", SimpleNamespace(StorageView=SimpleNamespace(from_array=lambda a: a)))
    monkeypatch.setattr(engine_module, "speech_spans",
                        lambda audio, threshold: speech(audio) if speech else [Span(0, len(audio))])
    return engine, generator


def audio(request: int, seconds: float) -> np.ndarray:
    """Samples that carry their own position (and the request's number in the millions)."""
    return np.arange(int(seconds * SR), dtype=np.float64).astype(np.float32) + request * 1_000_000


def texts(result: Transcription) -> list[tuple[float, float, str]]:
    return [(s.start, s.end, s.text) for s in result.segments]


def test_each_request_gets_its_own_segments_and_a_bad_one_fails_alone(monkeypatch):
    def script(window, call):
        request, _, seconds = window
        half = seconds / 2
        return [ts(0), 10 * request + 1, 10 * request + 2, ts(half), ts(half), 10 * request + 3, ts(seconds)]

    engine, generator = make_engine(monkeypatch, script)
    results = engine.transcribe([
        TranscriptionRequest(audio(0, 10), Options(language="en")),
        TranscriptionRequest(audio(1, 4), Options(beam_size=99)),
        TranscriptionRequest(audio(2, 6), Options()),  # language detected
    ])
    assert isinstance(results[1], InvalidArgument) and "BEAM_SIZE" in str(results[1])
    first, third = results[0], results[2]
    assert texts(first) == [(0.0, 5.0, " w1 w2"), (5.0, 10.0, " w3")]
    assert [s.id for s in first.segments] == [0, 1] and first.text == "w1 w2 w3" and first.language == "en"
    assert [s.tokens for s in first.segments] == [(1, 2), (3,)]  # text tokens, no timestamps
    assert texts(third) == [(0.0, 3.0, " w21 w22"), (3.0, 6.0, " w23")]
    assert (third.language, third.language_probability, third.duration) == ("de", 0.97, 6.0)
    assert sorted(window for window, _ in generator.calls) == [(0, 0.0, 10.0), (2, 0.0, 6.0)]  # not the bad one
    detected = next(call for window, call in generator.calls if window[0] == 2)
    assert detected.prompt == [990, LANGUAGE_TOKENS["de"], 994]  # the prompt in the detected language


def test_a_window_failing_the_guards_is_decoded_again_at_full_context_then_sampled(monkeypatch):
    loop = [ts(0), *[7] * 40, ts(8)]  # one word forty times: compresses far too well

    def script(window, call):
        return [ts(0), 1, 2, 3, ts(8)] if call.temperature == 0.2 else loop

    engine, generator = make_engine(monkeypatch, script, trim_languages="*")  # a trimmed first pass
    [result] = engine.transcribe([TranscriptionRequest(audio(0, 8), Options(language="en"))])
    assert [(c.full, c.temperature) for _, c in generator.calls] == [(False, 0.0), (True, 0.0), (True, 0.2)]
    assert texts(result) == [(0.0, 8.0, " w1 w2 w3")] and result.segments[0].temperature == 0.2
    assert result.fallbacks == 1 and engine.stats.fallbacks == 1


def test_a_window_is_encoded_at_full_context_once_for_all_its_fallback_temperatures(monkeypatch):
    """faster-whisper encodes a segment once and samples every temperature from that output; so does the
    engine (the 30 s encoder is most of each pass's cost): the recheck's encoding serves every temperature,
    and a window that passed is not encoded again for its failing batch partner."""
    loop = [ts(0), *[7] * 40, ts(4)]

    def script(window, call):
        request = window[0]
        if request == 1 and call.temperature < 0.6:
            return loop  # fails until the third fallback temperature
        return [ts(0), 1 + request, ts(4)]

    engine, generator = make_engine(monkeypatch, script, trim_languages="*", max_batch_windows=2)
    results = engine.transcribe([TranscriptionRequest(audio(0, 4), Options(language="en")),
                                 TranscriptionRequest(audio(1, 4), Options(language="en"))])
    assert [r.text for r in results] == ["w1", "w2"] and results[1].segments[0].temperature == 0.6
    assert [c.temperature for w, c in generator.calls if w[0] == 1 and c.full] == [0.0, 0.2, 0.4, 0.6]
    full = [row for call in generator.encoded for row in call if row[1] == FULL_CONTEXT_FRAMES]
    assert full == [(1, FULL_CONTEXT_FRAMES)]  # once, and only the window that needed it


def test_at_most_kept_encodings_windows_keep_their_encoder_output(monkeypatch):
    """Audio that fails the guards everywhere must not hold an encoder output per window: past
    ``KEPT_ENCODINGS`` a window is encoded again at each temperature, as without the cache."""
    monkeypatch.setattr(engine_module, "KEPT_ENCODINGS", 1)

    def script(window, call):
        return [ts(0), *[7] * 40, ts(4)] if call.temperature < 0.6 else [ts(0), 1 + window[0], ts(4)]

    engine, generator = make_engine(monkeypatch, script, trim_languages="*", max_batch_windows=1)
    results = engine.transcribe([TranscriptionRequest(audio(k, 4), Options(language="en")) for k in range(3)])
    assert [r.text for r in results] == ["w1", "w2", "w3"]
    full = [row for call in generator.encoded for row in call if row[1] == FULL_CONTEXT_FRAMES]
    assert len(full) == 3 + 3 * 2  # all three at the recheck, then two of them again at 0.2, 0.4 and 0.6


def test_an_unsure_first_pass_is_checked_at_full_context(monkeypatch):
    def script(window, call):
        return ([ts(0), 1, ts(4)], -0.1, 0.01) if call.full else ([ts(0), 9, ts(4)], -0.9, 0.01)

    engine, generator = make_engine(monkeypatch, script, trim_languages="en")
    [result] = engine.transcribe([TranscriptionRequest(audio(0, 4), Options(language="en"))])
    assert [c.full for _, c in generator.calls] == [False, True] and engine.stats.rechecks == 1
    assert texts(result) == [(0.0, 4.0, " w1")] and result.fallbacks == 0


def test_speech_the_decoder_skipped_is_decoded_again_and_lands_in_order(monkeypatch):
    def script(window, call):
        _, start, seconds = window
        if start == 0.0:
            return [ts(0), 11, 12, ts(4)]  # the window's first 4 s, then nothing: 16 s of speech skipped
        return [ts(0), 31, 32, ts(seconds)]

    engine, generator = make_engine(monkeypatch, script)
    [result] = engine.transcribe([TranscriptionRequest(audio(0, 20), Options(language="en"))])
    assert [w for w, _ in generator.calls] == [(0, 0.0, 20.0), (0, 4.0, 16.0)]
    assert texts(result) == [(0.0, 4.0, " w11 w12"), (4.0, 20.0, " w31 w32")]
    assert [s.id for s in result.segments] == [0, 1]


def test_silence_the_vad_confirms_is_not_recovered_as_skipped_speech(monkeypatch):
    engine, generator = make_engine(monkeypatch, lambda window, call: [ts(0), 11, ts(4)],
                                    speech=lambda a: [Span(0, 4 * SR)])  # the rest is silence
    [result] = engine.transcribe([TranscriptionRequest(audio(0, 20), Options(language="en"))])
    assert len(generator.calls) == 1 and texts(result) == [(0.0, 4.0, " w11")]


def test_a_window_that_stopped_mid_segment_continues_from_its_last_complete_timestamp(monkeypatch):
    def script(window, call):
        _, start, seconds = window
        if start == 0.0:
            return [ts(0), 11, 12, ts(5), ts(5), 13, 14]  # stopped inside its second segment
        return [ts(0), 21, 22, ts(seconds)]

    engine, generator = make_engine(monkeypatch, script)
    [result] = engine.transcribe([TranscriptionRequest(audio(0, 30), Options(language="en", prompt="w7"))])
    assert [w for w, _ in generator.calls] == [(0, 0.0, 30.0), (0, 5.0, 25.0)]
    assert texts(result) == [(0.0, 5.0, " w11 w12"), (5.0, 30.0, " w21 w22")]
    continued = generator.calls[1][1].prompt
    assert continued[:5] == [991, 7, ts(0), 11, 12]  # conditioned on the prompt and the text so far


def test_each_windows_prompt_is_built_once_per_pass(monkeypatch):
    built = []
    real = engine_module.build_prompt
    monkeypatch.setattr(engine_module, "build_prompt", lambda *a, **kw: built.append(1) or real(*a, **kw))
    engine, generator = make_engine(monkeypatch, lambda window, call: [ts(0), 1, ts(window[2])])
    engine.transcribe([TranscriptionRequest(audio(r, 3 + r), Options(language="en")) for r in range(3)])
    assert len(generator.calls) == 3 and len(built) == 3


def test_a_language_that_is_not_trimmed_is_decoded_at_full_context_at_once(monkeypatch):
    engine, generator = make_engine(monkeypatch, lambda window, call: [ts(0), 1, ts(4)], trim_languages="de")
    engine.transcribe([TranscriptionRequest(audio(0, 4), Options(language="en"))])
    assert [c.full for _, c in generator.calls] == [True] and engine.stats.rechecks == 0


def test_a_requests_context_overrides_trim_languages(monkeypatch):
    """CONTEXT "trimmed" (live turns) gets the trimmed first pass on a model that decodes every window at
    30 s; "full" gets 30 s on a model that trims; both in one batch, each window on its own terms."""
    engine, generator = make_engine(monkeypatch, lambda window, call: [ts(0), 1, ts(4)])  # trim_languages ""
    engine.transcribe([TranscriptionRequest(audio(0, 4), Options(language="en", context="trimmed")),
                       TranscriptionRequest(audio(1, 5), Options(language="en"))])
    assert sorted(c.full for _, c in generator.calls) == [False, True] and engine.stats.rechecks == 0
    engine, generator = make_engine(monkeypatch, lambda window, call: [ts(0), 1, ts(4)], trim_languages="*")
    engine.transcribe([TranscriptionRequest(audio(0, 4), Options(language="en", context="full"))])
    assert [c.full for _, c in generator.calls] == [True]


def test_a_kept_encoder_output_is_its_own_array_not_a_row_of_its_batch():
    """The ``KEPT_ENCODINGS`` bound is in memory, not only in count: a window kept for a retry must not hold
    its batch partners' outputs alive through a view of the batch's array."""
    batch = np.zeros((2, 4, 3), np.float32)
    retry, done = (engine_module._Job(request=k, start=0, end=16000, audio=np.zeros(16000, np.float32), language="en",
                                      task="transcribe", prompt_tokens=[], beam_size=5, temperature=0.0,
                                      word_timestamps=False, encoded=batch[k]) for k in range(2))
    done.attempt = engine_module.Attempt(engine_module.Verdict.OK, False, -0.1)
    engine_module.WhisperEngine._release_encodings([retry, done])
    assert done.encoded is None
    assert retry.encoded.base is None and np.array_equal(retry.encoded, batch[0])
