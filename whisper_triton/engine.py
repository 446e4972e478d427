"""The batched Whisper pipeline: many requests in, one transcription each out.

``WhisperEngine.transcribe(requests)`` takes every request Triton handed to one ``execute()`` call:

1. each request's audio is cut into windows of at most 30 s (``windows``): a clip of up to 30 s is one
   window, as faster-whisper's ``transcribe`` sees it; the VAD only places cuts in longer audio, unless
   the request asks for ``vad_filter``;
2. the windows of *all* requests are grouped into batches (``batching``) and each batch is encoded
   once (``features``: faster-whisper's own features, at the encoder context ``context_frames`` picks);
   the language of windows that need it is detected from the same encoder output; one ``generate`` call
   decodes the whole batch;
3. windows that fail Whisper's guards (``guards``) are re-decoded at full context, then at rising
   temperatures, as faster-whisper's ``generate_with_fallback`` does;
4. a window whose decoding stopped mid-segment is decoded again from its last complete timestamp, with
   the text so far as the prompt (faster-whisper's seek), and speech the decoder skipped is decoded again;
5. segments are mapped back to each request's timeline (``segments``), with word timestamps from
   cross-attention alignment where asked.

One instance of this class is owned by one Triton model instance (one process), so no lock is needed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Optional, Union

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from . import weights
from .batching import plan_batches
from .config import EngineConfig
from .cpu import apply_isa
from .features import FULL_CONTEXT_FRAMES, batch_features, context_frames, frames_for, token_budget
from .guards import Attempt, GuardConfig, Verdict, better, score
from .prompts import build_prompt, encode_prompt, normalize_language, normalize_task
from .segments import split_by_timestamps, unfinished_tail
from .protocol import SAMPLE_RATE, InvalidArgument, Segment, Word
from .types import Transcription, TranscriptionRequest
from .windows import Span, plan_windows, speech_spans, uncovered

log = logging.getLogger("whisper_triton.engine")

# Speech the decoder skipped (its timestamps jumped over it), and the rest of a window whose decoding
# stopped mid-segment, are decoded again in at most this many extra rounds; a skipped stretch counts
# when at least MIN_GAP_S of VAD speech is left uncovered by segments.
MAX_EXTRA_ROUNDS = 3
MIN_GAP_S = 1.5
SAMPLES_PER_TIMESTAMP = int(0.02 * SAMPLE_RATE)  # one timestamp token = 20 ms
MIN_REST_SPEECH = int(0.5 * SAMPLE_RATE)  # VAD speech the rest of an unfinished window needs to be decoded
# Windows whose full-context encoder output is kept for their next fallback temperature, at most (about 3 MB
# each for base, 8 MB for large-v3); past it a window is encoded again, as before (audio that fails the guards
# everywhere, such as music, must not hold a batch's worth of encoder outputs)
KEPT_ENCODINGS = 16

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


@dataclass
class _Job:
    """One window of one request, and the best decoding of it so far."""

    request: int
    start: int  # samples in the request's audio
    end: int
    audio: np.ndarray
    language: Optional[str]
    task: str
    prompt_tokens: list[int]
    beam_size: int
    temperature: float
    word_timestamps: bool
    speech: Optional[list] = None  # VAD speech spans (samples) inside this window; None = the VAD did not run
    language_probability: float = 1.0
    trim: Optional[bool] = None  # the request's CONTEXT: True trimmed, False full, None = trim_languages
    tokens: list[int] = field(default_factory=list)
    attempt: Attempt = Attempt(Verdict.RETRY, False, 0.0)  # how ``tokens`` scored
    full_context: bool = False  # decoded at the full 30 s context at temperature 0
    frames: int = 0  # encoder frames of the decode kept in ``tokens`` (word alignment uses the same)
    no_speech_prob: float = 0.0
    used_temperature: float = 0.0
    retried: bool = False
    # the encoder's output at the full context, kept while the window is still to be decoded again there
    # (its next fallback temperature): faster-whisper encodes a segment once for all its temperatures
    encoded: Optional[np.ndarray] = None

    @property
    def samples(self) -> int:
        return self.end - self.start

    @property
    def verdict(self) -> Verdict:
        return self.attempt.verdict


@dataclass
class EngineStats:
    windows: int = 0
    batches: int = 0
    fallbacks: int = 0
    rechecks: int = 0
    audio_seconds: float = 0.0
    last_batch_sizes: list[int] = field(default_factory=list)


class WhisperEngine:
    def __init__(self, config: EngineConfig, device: str = "cpu", device_index: int = 0, model_dir=None):
        self.config = config
        model_path = weights.resolve(config.model, model_dir)
        if config.device != "auto":
            device = config.device
        self.cpu_isa = "n/a"
        if device == "cpu":
            self.cpu_isa = apply_isa(config.cpu_isa)  # before the first model load of this process
        started = time.perf_counter()
        try:
            self.model = WhisperModel(
                model_path,
                device=device,
                device_index=device_index,
                compute_type=config.compute_type,
                cpu_threads=config.cpu_threads,
                num_workers=1,
                download_root=config.download_root or str(weights.cache_dir() / "hub"),
            )
        except Exception as exc:  # ctranslate2 raises RuntimeError/ValueError with useful text
            raise weights.ModelError(f"cannot load model '{config.model}' ({model_path}): {exc}") from exc
        self.ct2: ctranslate2.models.Whisper = self.model.model
        self._keeps_encodings = device == "cpu"  # on a GPU the encoder is cheap and its output stays there
        self.multilingual = self.model.model.is_multilingual
        self.guard = GuardConfig(config.compression_ratio_threshold, config.log_prob_threshold, config.no_speech_threshold)
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}
        self.stats = EngineStats()
        log.info("loaded %s on %s (%s) in %.1fs", model_path, device, config.compute_type, time.perf_counter() - started)

    # ------------------------------------------------------------------ helpers
    def tokenizer(self, language: Optional[str], task: str) -> Tokenizer:
        key = (language or "en", task)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(self.model.hf_tokenizer, self.multilingual, task=task, language=key[0])
        return self._tokenizers[key]

    def _has_token(self, token: str) -> bool:
        return self.model.hf_tokenizer.token_to_id(token) is not None

    def validate(self, request: TranscriptionRequest) -> TranscriptionRequest:
        audio = request.audio
        if audio.ndim != 1:
            raise InvalidArgument(f"AUDIO must be one mono clip (shape [1, samples]); got shape {list(audio.shape)}")
        if audio.size == 0:
            raise InvalidArgument("AUDIO is empty")
        if not np.isfinite(audio).all():
            raise InvalidArgument("AUDIO contains NaN or infinite samples")
        if request.duration > self.config.max_audio_s:
            raise InvalidArgument(f"AUDIO is {request.duration:.0f} s long; the limit is {self.config.max_audio_s:.0f} s")
        opts = request.options
        language = normalize_language(opts.language, self.multilingual, self._has_token)
        task = normalize_task(opts.task, self.multilingual)
        if not 0 <= opts.beam_size <= 16:
            raise InvalidArgument(f"BEAM_SIZE must be between 0 and 16, got {opts.beam_size}")
        if not 0.0 <= opts.temperature <= 1.0:
            raise InvalidArgument(f"TEMPERATURE must be between 0 and 1, got {opts.temperature}")
        return TranscriptionRequest(audio, replace(opts, language=language, task=task))

    # ------------------------------------------------------------------ pipeline
    def transcribe(self, requests: list[TranscriptionRequest]) -> list[Union[Transcription, InvalidArgument]]:
        results: list[Union[Transcription, InvalidArgument, None]] = [None] * len(requests)
        jobs: list[_Job] = []
        valid: dict[int, TranscriptionRequest] = {}
        for index, raw in enumerate(requests):
            try:
                request = self.validate(raw)
            except InvalidArgument as exc:
                results[index] = exc
                continue
            valid[index] = request
            self.stats.audio_seconds += request.duration
            opts = request.options
            prompt_tokens = encode_prompt(self.tokenizer(opts.language, opts.task), opts.prompt)
            vad_filter = self.config.vad_filter if opts.vad_filter is None else opts.vad_filter
            for span, speech in plan_windows(request.audio, vad_filter, self.config.vad_threshold):
                jobs.append(
                    _Job(
                        request=index, start=span.start, end=span.end, audio=request.audio[span.start:span.end],
                        language=opts.language, task=opts.task, prompt_tokens=prompt_tokens,
                        beam_size=opts.beam_size or self.config.beam_size, temperature=opts.temperature,
                        word_timestamps=opts.word_timestamps, speech=speech,
                        trim=None if not opts.context else opts.context == "trimmed",
                    )
                )
        self.stats.last_batch_sizes = []

        pending = list(jobs)
        for _ in range(1 + MAX_EXTRA_ROUNDS):
            self.stats.windows += len(pending)
            self._decode_with_fallback(pending)
            pending = [extra for job in pending for extra in self._extra_jobs(job)]
            if not pending:
                break
            jobs.extend(pending)

        self._add_word_timestamps([j for j in jobs if j.word_timestamps and j.verdict is not Verdict.SILENCE and j.tokens])

        by_request: dict[int, list[_Job]] = defaultdict(list)
        for job in jobs:
            by_request[job.request].append(job)
        for index, request in valid.items():
            results[index] = self._assemble(request, by_request.get(index, []))
        return results  # type: ignore[return-value]

    def _decode_with_fallback(self, jobs: list[_Job]) -> None:
        """faster-whisper's ``generate_with_fallback``, batched, after a first pass at a shorter context.

        A shorter encoder context is not what Whisper was trained on, so its decode is kept only when it
        passes the guards with an average log-probability of at least ``trim_min_logprob``; every other
        window is decoded again at the full 30 s context, as faster-whisper decodes it. Windows that still
        fail the guards are sampled at the rising fallback temperatures, keeping the best attempt.
        """
        self._decode(jobs, full_context=False, temperature=None)
        for job in jobs:
            job.retried = job.verdict is Verdict.RETRY
        self.stats.fallbacks += sum(1 for j in jobs if j.retried)
        recheck = [j for j in jobs if not j.full_context and not self._confident(j)]
        self.stats.rechecks += sum(1 for j in recheck if not j.retried)
        self._decode(recheck, full_context=True, temperature=None)
        failed = [j for j in jobs if j.verdict is Verdict.RETRY]
        for temperature in self._fallback_schedule():
            failed = [j for j in failed if j.verdict is Verdict.RETRY]
            if not failed:
                break
            for job in failed:
                job.retried = True
            self._decode(failed, full_context=True, temperature=temperature, keep_best=True)
        for job in jobs:
            job.encoded = None
            self._second_look_at_silence(job)

    def _second_look_at_silence(self, job: _Job) -> None:
        """Whisper keeps a window whose no-speech probability is high when its text is confident, and so
        turns silence and noise into "you" or "..." (faster-whisper does the same). Such a window is silence
        when the VAD finds no speech in it either. Whispered speech stays: Whisper's no-speech probability
        on it is low, so the VAD, which misses it, is never asked."""
        if job.verdict is Verdict.SILENCE or not job.tokens or job.no_speech_prob <= self.config.no_speech_threshold:
            return
        if not self._speech(job):
            job.attempt = replace(job.attempt, verdict=Verdict.SILENCE)

    def _speech(self, job: _Job) -> list[Span]:
        """The VAD's speech spans inside the window (on the request's timeline), found once, when first asked
        (a clip of up to 30 s without ``vad_filter`` is decoded before any VAD runs; Silero costs about 2 ms
        per second of audio here, against about 100 ms for decoding)."""
        if job.speech is None:
            job.speech = [Span(s.start + job.start, s.end + job.start) for s in speech_spans(job.audio, self.config.vad_threshold)]
        return job.speech

    def _confident(self, job: _Job) -> bool:
        return (job.verdict is Verdict.OK and job.attempt.avg_logprob >= self.config.trim_min_logprob
                and self._trims(job))

    def _continuation(self, job: _Job) -> list[_Job]:
        """faster-whisper's seek: a window that stopped mid-segment loses the unfinished segment and is
        decoded again from its last complete timestamp, conditioned on the text so far."""
        if job.verdict is Verdict.SILENCE or not job.tokens:
            return []
        tokenizer = self.tokenizer(job.language, job.task)
        cut = unfinished_tail(job.tokens, tokenizer.timestamp_begin)
        if cut is None:
            return []
        start = job.start + (job.tokens[cut - 1] - tokenizer.timestamp_begin) * SAMPLES_PER_TIMESTAMP
        job.tokens = job.tokens[:cut]
        # A rest with no speech in it is not decoded: conditioned on the text so far, Whisper repeats that
        # text over a fraction of a second of silence.
        if start <= job.start or not any(min(s.end, job.end) - max(s.start, start) >= MIN_REST_SPEECH
                                         for s in self._speech(job)):
            return []
        # Whisper resets the prompt after a window that needed a high temperature (prompt_reset_on_temperature)
        previous = [] if job.used_temperature > 0.5 else [*job.prompt_tokens, *job.tokens]
        return [_Job(request=job.request, start=start, end=job.end, audio=job.audio[start - job.start:],
                     language=job.language, task=job.task, prompt_tokens=previous, beam_size=job.beam_size,
                     temperature=job.temperature, word_timestamps=job.word_timestamps,
                     speech=None if job.speech is None else [Span(max(s.start, start), s.end) for s in job.speech if s.end > start],
                     language_probability=job.language_probability, trim=job.trim)]

    def _extra_jobs(self, job: _Job) -> list[_Job]:
        """The next round's work from one decoded window: the rest of it after an unfinished segment, and
        speech before that which no segment covers."""
        rest = self._continuation(job)
        return [*rest, *self._skipped_speech(job, until=rest[0].start if rest else job.end)]

    def _skipped_speech(self, job: _Job, until: int) -> list[_Job]:
        """New jobs for VAD speech inside ``job`` (before ``until``) that none of its segments covers."""
        if job.verdict is Verdict.SILENCE or not job.tokens:
            return []
        tokenizer = self.tokenizer(job.language, job.task)
        covered = [
            Span(job.start + int(s.start * SAMPLE_RATE), job.start + int(s.end * SAMPLE_RATE))
            for s in split_by_timestamps(job.tokens, tokenizer.timestamp_begin, job.samples / SAMPLE_RATE, 0.0)
        ]
        speech = [Span(s.start, min(s.end, until)) for s in self._speech(job) if s.start < until]
        gaps = uncovered(speech, covered, int(MIN_GAP_S * SAMPLE_RATE), int(1.0 * SAMPLE_RATE))
        return [
            _Job(request=job.request, start=g.start, end=g.end, audio=job.audio[g.start - job.start:g.end - job.start],
                 language=job.language, task=job.task, prompt_tokens=job.prompt_tokens, beam_size=job.beam_size,
                 temperature=job.temperature, word_timestamps=job.word_timestamps, speech=[g],
                 language_probability=job.language_probability, trim=job.trim)
            for g in gaps
        ]

    def _fallback_schedule(self) -> list[float]:
        """The sampling temperatures after the full-context greedy decode."""
        return [t for t in self.config.fallback_temperatures if t > 0]

    def _decode(self, jobs: list[_Job], full_context: bool, temperature: Optional[float], keep_best: bool = False) -> None:
        if not jobs:
            return
        temps = [j.temperature if temperature is None else temperature for j in jobs]
        # one generate call takes one beam size and temperature, prompts of one length (CTranslate2 needs
        # <|startoftranscript|> at the same position in every row), and one encoder context: each window's
        # own, so its text does not depend on the windows it shares a batch with
        # (a window whose language is not known yet gets its prompt again once it is detected: same length)
        prompts = [build_prompt(self.tokenizer(j.language, j.task), j.prompt_tokens) for j in jobs]
        keys = [(j.beam_size, t, len(p), self._context(j.samples, full_context or not self._trims(j)))
                for j, t, p in zip(jobs, temps, prompts)]
        for batch_ids in plan_batches(keys, [j.samples for j in jobs], self.config.max_batch_windows):
            beam_size, temp, _, n_frames = keys[batch_ids[0]]
            self._decode_batch([jobs[i] for i in batch_ids], [prompts[i] for i in batch_ids], n_frames, beam_size,
                               temp, keep_best)
            self._release_encodings(jobs)

    @staticmethod
    def _release_encodings(jobs: list[_Job]) -> None:
        """Keeps the encoder outputs of windows that will be decoded again (their verdict is RETRY), at most
        ``KEPT_ENCODINGS`` of them, each as its own array; drops the rest."""
        kept = 0
        for job in jobs:
            if job.encoded is None:
                continue
            if job.verdict is Verdict.RETRY and kept < KEPT_ENCODINGS:
                kept += 1
                if job.encoded.base is not None:  # a row of its batch's output: keep the row, not the whole batch
                    job.encoded = job.encoded.copy()
            else:
                job.encoded = None

    def _trims(self, job: _Job) -> bool:
        """Whether the window is decoded first at a trimmed context: its request's CONTEXT, else the
        model's ``trim_languages`` for its language."""
        return self.config.trims(job.language) if job.trim is None else job.trim

    def _context(self, samples: int, full: bool) -> int:
        c = self.config
        return context_frames(samples, c.context_floor_s, full=full, margin_s=c.context_margin_s, step_s=c.context_step_s)

    def _encode(self, batch: list[_Job], n_frames: int) -> ctranslate2.StorageView:
        """The encoder's output for ``batch`` at ``n_frames``. At the full context (on the CPU), a window
        encoded there before -- its full-context recheck, its previous fallback temperature -- is not
        encoded again: the same features give the same output, and the 30 s encoder is most of the cost of
        each fallback pass."""
        def run(jobs: list[_Job], to_cpu: bool) -> ctranslate2.StorageView:
            features = batch_features(self.model.feature_extractor, [j.audio for j in jobs], n_frames)
            return self.ct2.encode(ctranslate2.StorageView.from_array(features), to_cpu=to_cpu)

        if not (self._keeps_encodings and n_frames == FULL_CONTEXT_FRAMES):
            return run(batch, to_cpu=False)
        missing = [j for j in batch if j.encoded is None]
        if missing:
            fresh = np.array(run(missing, to_cpu=True))
            for job, row in zip(missing, fresh):
                job.encoded = row
            if len(missing) == len(batch):
                return ctranslate2.StorageView.from_array(fresh)
        return ctranslate2.StorageView.from_array(np.stack([j.encoded for j in batch]))

    def _decode_batch(self, batch: list[_Job], prompts: list[list[int]], n_frames: int, beam_size: int,
                      temperature: float, keep_best: bool) -> None:
        longest = max(j.samples for j in batch)
        encoded = self._encode(batch, n_frames)
        for job in batch:
            job.full_context = job.full_context or (n_frames == FULL_CONTEXT_FRAMES and temperature == 0)
        self.stats.batches += 1
        self.stats.last_batch_sizes.append(len(batch))

        if self.multilingual and any(j.language is None for j in batch):
            detected = self.ct2.detect_language(encoded)
            prompts = list(prompts)
            for i, (job, ranking) in enumerate(zip(batch, detected)):
                if job.language is None:
                    token, prob = ranking[0]
                    job.language, job.language_probability = token[2:-2], float(prob)
                    prompts[i] = build_prompt(self.tokenizer(job.language, job.task), job.prompt_tokens)
        suppress = get_suppressed_tokens(self.tokenizer(batch[0].language, batch[0].task), [-1])
        # Every pass decodes under a budget per second of audio: real speech stays far below it, and a window
        # that runs into it has collapsed into a loop (which would otherwise run on to 448 tokens, beam by
        # beam and sample by sample, at every fallback temperature).
        max_length = token_budget(longest, self.config.max_tokens_per_s, max(len(p) for p in prompts), self.model.max_length)
        sampling = {"beam_size": beam_size, "patience": 1.0}
        if temperature > 0:
            sampling = {"beam_size": 1, "num_hypotheses": self.config.best_of, "sampling_topk": 0, "sampling_temperature": temperature}
        results = self.ct2.generate(
            encoded,
            prompts,
            length_penalty=1.0,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(suppress or []),
            max_initial_timestamp_index=50,
            **sampling,
        )
        budgeted = max_length < self.model.max_length
        for job, result, prompt in zip(batch, results, prompts):
            tokenizer = self.tokenizer(job.language, job.task)
            # Sampling returns best_of hypotheses: each is scored by the guards, not only the likeliest.
            best = None
            for tokens, total in zip(result.sequences_ids, result.scores):
                seq_len = len(tokens)
                attempt = score(tokenizer.decode(tokens), total * seq_len / (seq_len + 1), result.no_speech_prob, self.guard,
                                english=job.task == "translate")
                if budgeted and seq_len + len(prompt) >= max_length - 1:
                    # ran out of budget: a runaway (or unusually dense) window
                    attempt = replace(attempt, verdict=Verdict.RETRY, repetitive=True)
                if best is None or better(attempt, best[0]):
                    best = (attempt, tokens)
            attempt, tokens = best
            if keep_best and not better(attempt, job.attempt):
                continue
            job.tokens, job.attempt, job.no_speech_prob, job.frames = tokens, attempt, result.no_speech_prob, n_frames
            job.used_temperature = temperature

    def _add_word_timestamps(self, jobs: list[_Job]) -> None:
        """Cross-attention alignment (faster-whisper's, on CTranslate2's ``align``), batched per language."""
        groups: dict[tuple[Optional[str], str, int], list[_Job]] = defaultdict(list)
        for job in jobs:
            groups[(job.language, job.task, job.frames)].append(job)
        for (language, task, n_frames), members in groups.items():
            tokenizer = self.tokenizer(language, task)
            for batch_ids in plan_batches([0] * len(members), [j.samples for j in members], self.config.max_batch_windows):
                batch = [members[i] for i in batch_ids]
                features = batch_features(self.model.feature_extractor, [j.audio for j in batch], n_frames)
                segments = [
                    [
                        {"tokens": seg.tokens, "start": seg.start, "end": seg.end, "seek": 0}
                        for seg in split_by_timestamps(j.tokens, tokenizer.timestamp_begin, j.samples / SAMPLE_RATE, 0.0)
                    ]
                    for j in batch
                ]
                keep = [i for i, segs in enumerate(segments) if segs]
                if not keep:
                    continue
                self.model.add_word_timestamps(
                    [segments[i] for i in keep],
                    tokenizer,
                    ctranslate2.StorageView.from_array(np.ascontiguousarray(features[keep])),
                    [min(frames_for(batch[i].samples), n_frames) for i in keep],
                    PREPEND_PUNCTUATIONS,
                    APPEND_PUNCTUATIONS,
                    0.0,
                )
                for i in keep:
                    batch[i].aligned = segments[i]  # type: ignore[attr-defined]

    def _assemble(self, request: TranscriptionRequest, jobs: list[_Job]) -> Transcription:
        segments: list[Segment] = []
        durations: Counter = Counter()
        probabilities: dict[str, float] = {}
        for job in sorted(jobs, key=lambda j: j.start):
            if job.verdict is Verdict.SILENCE or not job.tokens:
                continue
            tokenizer = self.tokenizer(job.language, job.task)
            offset = job.start / SAMPLE_RATE
            aligned = getattr(job, "aligned", None)
            pieces = aligned or [
                {"tokens": s.tokens, "start": s.start, "end": s.end}
                for s in split_by_timestamps(job.tokens, tokenizer.timestamp_begin, job.samples / SAMPLE_RATE, 0.0)
            ]
            for piece in pieces:
                text_tokens = tuple(int(t) for t in piece["tokens"] if t < tokenizer.eot)
                text = tokenizer.decode(list(text_tokens))
                if not text.strip() or piece["start"] == piece["end"]:  # as faster-whisper drops them
                    continue
                words = None
                if job.word_timestamps:
                    words = tuple(
                        Word(w["word"], round(offset + float(w["start"]), 3), round(offset + float(w["end"]), 3), round(float(w["probability"]), 4))
                        for w in piece.get("words", [])
                    )
                segments.append(
                    Segment(
                        id=len(segments),
                        start=round(offset + float(piece["start"]), 3),
                        end=round(offset + float(piece["end"]), 3),
                        text=text,
                        avg_logprob=round(float(job.attempt.avg_logprob), 4),
                        no_speech_prob=round(float(job.no_speech_prob), 4),
                        compression_ratio=round(float(job.attempt.ratio), 4),
                        temperature=job.used_temperature,
                        tokens=text_tokens,
                        words=words,
                    )
                )
            if job.language:
                durations[job.language] += job.samples
                probabilities.setdefault(job.language, job.language_probability)
        # gap re-decodes land between a window's segments
        segments = [replace(seg, id=number) for number, seg in enumerate(sorted(segments, key=lambda seg: (seg.start, seg.end)))]
        language = request.options.language or (durations.most_common(1)[0][0] if durations else "en")
        text = "".join(s.text for s in segments).strip()
        return Transcription(
            text=text,
            segments=segments,
            language=language,
            duration=round(request.duration, 3),
            language_probability=probabilities.get(language, 1.0),
            fallbacks=sum(1 for j in jobs if j.retried),
        )

    def warmup(self) -> None:
        """One tiny encode+generate so the first real request does not pay for lazy initialisation."""
        features = np.zeros((1, self.model.feature_extractor.mel_filters.shape[0], 200), dtype=np.float32)
        tokenizer = self.tokenizer("en", "transcribe")
        self.ct2.generate(ctranslate2.StorageView.from_array(features), [build_prompt(tokenizer)], max_length=4)
