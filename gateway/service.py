"""One transcription, shared by every route: decode off the loop, infer, count, convert the script."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from typing import BinaryIO

import anyio
import anyio.to_thread

from gateway import chinese, chunks, diarization, media, metrics
from gateway.config import Settings
from gateway.errors import InvalidRequest, ModelNotFound, ServiceUnavailable
from gateway.languages import normalize
from gateway.results import Options, Transcription
from gateway.triton import TritonClient
from gateway.watchdog import Watchdog

TASKS = ("transcribe", "translate")


def conversion_for(settings: Settings, choice: str | None, language: str | None = None) -> str:
    """The OpenCC conversion for a request; a ``zh-CN``/``zh-Hans`` language asks for Simplified."""
    if not choice and language and language.strip().lower().replace("_", "-") in ("zh-cn", "zh-hans", "zh-sg"):
        choice = "t2s"
    try:
        return chinese.resolve(choice, settings.chinese_default)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="chinese_script", code="invalid_value") from None


def options_for(*, language: str | None = None, task: str = "transcribe", prompt: str | None = None,
                word_timestamps: bool = False, beam_size: int = 0, temperature: float = 0.0,
                vad_filter: bool | None = None) -> Options:
    if task not in TASKS:
        raise InvalidRequest(f"Invalid task '{task}': use transcribe or translate", param="task",
                             code="invalid_value")
    return Options(language=normalize(language), task=task, prompt=prompt or "",
                   word_timestamps=word_timestamps, beam_size=beam_size, temperature=temperature,
                   vad_filter=vad_filter)


def decode_checked(source: bytes | BinaryIO, *, max_seconds: float) -> media.Audio:
    """An upload's sound, decoded, silent or empty refused (blocking: call it from a thread)."""
    return media.require_sound(media.decode(source, max_seconds=max_seconds))


async def _decoded(source: bytes | BinaryIO, settings: Settings, model: str | None) -> tuple[str, media.Audio]:
    """The model's name (checked) and the upload's sound (decoded off the loop; silent or empty refused)."""
    name = settings.resolve_model(model)
    if name == settings.diarization_model:  # the speaker model does not transcribe
        raise ModelNotFound(f"The model '{name}' is not a transcription model", param="model")
    return name, await anyio.to_thread.run_sync(partial(decode_checked, source, max_seconds=settings.max_audio_seconds))


async def infer(triton: TritonClient, name: str, samples, options: Options, conversion: str) -> Transcription:
    """One Triton call, its audio counted once it succeeded, Chinese in the asked-for script (off the loop)."""
    result = await triton.transcribe(name, samples, options)
    metrics.AUDIO_SECONDS.labels(name, options.task).inc(len(samples) / media.SAMPLE_RATE)
    if options.task != "transcribe" or conversion == "none" or result.language not in chinese.CHINESE_LANGUAGES:
        return result
    return await anyio.to_thread.run_sync(chinese.convert, result, conversion)


async def transcribe(source: bytes | BinaryIO, *, settings: Settings, triton: TritonClient, model: str | None,
                     options: Options, conversion: str, diarize: diarization.DiarizeOptions | None = None,
                     references: dict[str, bytes] | None = None) -> Transcription:
    """One upload transcribed; with ``diarize``, with a speaker on every segment (see ``_diarized``).

    Audio longer than ``triton_piece_seconds`` goes to Triton in pieces of about that length, cut at pauses,
    ``sse_chunks_ahead`` at once, and the pieces' results are merged: a single gRPC message of an hour
    (230 MB) would hold the event loop for most of a second while tritonclient and gRPC copy it, and the
    model instances share the work of one long file."""
    name, audio = await _decoded(source, settings, model)
    if diarize is not None:
        return await _diarized(triton, settings, name, audio, options, conversion, diarize, references or {})
    return await _whole(triton, settings, name, audio, options, conversion)


async def _whole(triton: TritonClient, settings: Settings, name: str, audio: media.Audio, options: Options,
                 conversion: str) -> Transcription:
    """The whole audio's transcription: one call, or pieces merged past ``triton_piece_seconds``."""
    if audio.duration <= settings.triton_piece_seconds:
        return await infer(triton, name, audio.samples, options, conversion)
    parts = [part async for part in _pieces(triton, settings, name, audio, options, conversion,
                                            settings.triton_piece_seconds)]
    return await chunks.merge_off_loop(parts, duration=audio.duration, model=name, task=options.task)


def _pieces(triton: TritonClient, settings: Settings, name: str, audio: media.Audio, options: Options,
            conversion: str, seconds: float) -> AsyncIterator[Transcription]:
    """The audio's pieces of about ``seconds``, cut at pauses, transcribed ``sse_chunks_ahead`` at once,
    each result on the file's timeline, in order."""
    async def piece(span: tuple[int, int]) -> Transcription:
        result = await infer(triton, name, audio.samples[span[0]:span[1]], options, conversion)
        return chunks.on_timeline(result, span)

    return chunks.in_order(chunks.split_chunks(audio.samples, seconds), piece, settings.sse_chunks_ahead)


async def together(*calls):
    """The calls' results, run at once; if one fails, the others are cancelled (not left running in Triton)."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _diarized(triton: TritonClient, settings: Settings, name: str, audio: media.Audio, options: Options,
                    conversion: str, diarize: diarization.DiarizeOptions,
                    references: dict[str, bytes]) -> Transcription:
    """The diarization step: Whisper and the speaker model run on the upload at once, with each known
    speaker's reference clip; the windows are clustered into speakers off the loop, named by the
    references, and merged into the transcript's segments (split at Whisper's word times when the
    request asked for words; word times are not forced: they cost about as much again as the text)."""
    clips = {}
    for speaker, data in references.items():  # decoded off the loop, each within the reference limit
        clips[speaker] = media.require_sound(await media.decode_async(data, max_seconds=settings.max_reference_seconds))
    try:
        result, windows, *ref_windows = await together(
            _whole(triton, settings, name, audio, options, conversion),
            triton.speaker_windows(settings.diarization_model, audio.samples),
            *(triton.speaker_windows(settings.diarization_model, clip.samples) for clip in clips.values()))
    except ModelNotFound as exc:
        if exc.message and settings.diarization_model in exc.message:
            raise ServiceUnavailable(f"Diarization is unavailable: the speaker model "
                                     f"'{settings.diarization_model}' is not loaded in Triton") from None
        raise
    named = {speaker: diarization.reference_embedding(w, speaker) for speaker, w in zip(clips, ref_windows)}
    speakers = await anyio.to_thread.run_sync(partial(
        diarization.find_speakers, windows, named, diarize, settings.diarization_threshold))
    return diarization.assign(result, speakers)


async def transcribe_in_pieces(source: bytes | BinaryIO, *, settings: Settings, triton: TritonClient,
                               model: str | None, options: Options, conversion: str) -> AsyncIterator[Transcription]:
    """The same transcription, piece by piece for ``stream=true``: the audio cut at pauses into pieces of
    about ``sse_chunk_seconds``, ``sse_chunks_ahead`` of them in Triton at once, each piece's result
    (on the file's timeline) yielded in order as soon as it is ready. Decoding and the first piece run
    before the first yield, so their errors still become a plain HTTP error."""
    name, audio = await _decoded(source, settings, model)
    async for result in _pieces(triton, settings, name, audio, options, conversion, settings.sse_chunk_seconds):
        yield result


async def transcription_models(triton: TritonClient, settings: Settings) -> list[str]:
    """The ready Triton models that transcribe (all but the speaker model)."""
    return [m for m in await triton.ready_models() if m != settings.diarization_model]


async def health(triton: TritonClient, settings: Settings, watchdog: Watchdog | None = None) -> tuple[bool, dict[str, object]]:
    """Gateway and Triton readiness: ready when Triton is ready and the default model is loaded. With a
    watchdog running, its last verdict is the answer, at once (no call to Triton on the request path)."""
    if watchdog is not None and watchdog.checked:
        problem = watchdog.problem
        ok = problem is None and settings.default_model in watchdog.models
        triton_state: dict[str, object] = {"url": settings.triton_url, "ready": watchdog.ready}
        if problem is not None:
            triton_state["problem"] = problem
        return ok, {"status": "ok" if ok else "unavailable", "gateway": "ok", "triton": triton_state,
                    "default_model": settings.default_model, "models": watchdog.models}
    server_ready = await triton.server_ready()
    models: list[str] = []
    if server_ready:
        try:
            models = await triton.ready_models()
        except Exception:  # readiness must answer, whatever Triton does
            server_ready = False
    ok = server_ready and settings.default_model in models
    return ok, {
        "status": "ok" if ok else "unavailable",
        "gateway": "ok",
        "triton": {"url": settings.triton_url, "ready": server_ready},
        "default_model": settings.default_model,
        "models": models,
    }
