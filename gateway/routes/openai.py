"""OpenAI-compatible routes: ``/v1/audio/transcriptions``, ``/v1/audio/translations``, ``/v1/models``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from fastapi.sse import format_sse_event
from pydantic import BaseModel

from gateway import chunks, diarization, errors, formats, protocol, service
from gateway.deps import Authenticated, InFlightSlot, SettingsDep, TritonDep, unless_client_leaves
from gateway.errors import APIError, InvalidRequest, ModelNotFound
from gateway.results import Transcription

log = logging.getLogger("gateway.openai")
router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Authenticated])

Granularity = protocol.Granularity
MODEL_ALIAS = "whisper-1"


def _event(data: BaseModel) -> bytes:
    return format_sse_event(data_str=json.dumps(data.model_dump(), ensure_ascii=False))


def _sse(first: Transcription, rest: AsyncIterator[Transcription]) -> StreamingResponse:
    """``transcript.text.delta`` events, one per segment, each piece's as soon as it is transcribed, then
    ``transcript.text.done`` with the whole text. A piece that fails after the first ends the stream with
    an ``error`` event (OpenAI's error body); what was sent before it stands."""

    async def events() -> AsyncIterator[bytes]:
        parts: list[Transcription] = []
        sent: list[str] = []
        try:
            async for part in _chain(first, rest):
                for i, segment in enumerate(s for s in part.segments if s.text.strip()):
                    delta = segment.text
                    if i == 0:  # a piece's first words: the language's joiner between pieces, none at the start
                        delta = (chunks.joiner(part.language) if sent else "") + delta.lstrip()
                    data = protocol.TranscriptTextDelta(delta=delta, segment_id=str(len(sent)), start=segment.start,
                                                        end=segment.end)
                    sent.append(delta)
                    yield _event(data)
                parts.append(part)
        except Exception as exc:  # the status line is long gone: the failure is reported in the stream
            if not isinstance(exc, APIError):
                log.exception("stream=true transcription failed after %d pieces", len(parts))
            yield _event(protocol.StreamError(**errors.body_of(exc)))
            return
        finally:  # also when the client goes away: the pieces still in Triton are cancelled
            await rest.aclose()
        result = await chunks.merge_off_loop(parts, duration=sum(p.duration for p in parts), model=first.model,
                                             task=first.task)
        yield _event(protocol.TranscriptTextDone(text="".join(sent), language=result.language,
                                                 duration=result.duration))

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _chain(first: Transcription, rest: AsyncIterator[Transcription]) -> AsyncIterator[Transcription]:
    yield first
    async for part in rest:
        yield part


async def _run(request: Request, settings: SettingsDep, triton: TritonDep, *, file: UploadFile, model: str,
               task: str, language: str | None, prompt: str | None, response_format: str, temperature: float,
               granularities: list[str] | None, stream: bool, chinese_script: str | None,
               beam_size: int, vad_filter: bool | None = None,
               speakers: SpeakerFields | None = None) -> Response:
    words = "word" in (granularities or [])
    conversion = service.conversion_for(settings, chinese_script, language)
    options = service.options_for(language=language, task=task, prompt=prompt, word_timestamps=words,
                                  beam_size=beam_size, temperature=temperature, vad_filter=vad_filter)
    if speakers is not None and (speakers.diarize or response_format == "diarized_json"):
        if task != "transcribe":
            raise InvalidRequest("Diarization is only available for transcriptions", param="response_format",
                                 code="invalid_value")
        if stream:
            raise InvalidRequest("stream=true cannot be combined with diarization", param="stream",
                                 code="invalid_value")
        diarize, references = speakers.checked(settings)
        result = await unless_client_leaves(request, service.transcribe(
            file.file, settings=settings, triton=triton, model=model, options=options, conversion=conversion,
            diarize=diarize, references=references))
        return formats.response(result, response_format, words=words)
    if response_format == "diarized_json":
        raise InvalidRequest("diarized_json is only available for transcriptions", param="response_format",
                             code="invalid_value")
    if stream:
        pieces = service.transcribe_in_pieces(file.file, settings=settings, triton=triton, model=model,
                                              options=options, conversion=conversion)
        try:  # decoding and the first piece: their errors are plain HTTP errors
            first = await unless_client_leaves(request, anext(pieces))
        except BaseException:
            await pieces.aclose()  # the pieces already in Triton are cancelled
            raise
        return _sse(first, pieces)  # from here the response itself notices a client that leaves
    result = await unless_client_leaves(request, service.transcribe(
        file.file, settings=settings, triton=triton, model=model, options=options, conversion=conversion))
    return formats.response(result, response_format, words=words)


class SpeakerFields:
    """The diarization fields of a transcription request (``known_speaker_*`` as OpenAI names them)."""

    def __init__(self, diarize: bool, names: list[str] | None, references: list[str] | None,
                 min_speakers: int | None, max_speakers: int | None) -> None:
        self.diarize, self.names, self.references = diarize, names, references
        self.min_speakers, self.max_speakers = min_speakers, max_speakers

    def checked(self, settings: SettingsDep) -> tuple[diarization.DiarizeOptions, dict[str, bytes]]:
        return diarization.request_options(names=self.names, references=self.references,
                                           min_speakers=self.min_speakers, max_speakers=self.max_speakers,
                                           limit_speakers=settings.max_speakers,
                                           limit_references=settings.max_speaker_references)


FileField = Annotated[UploadFile, File(description="Audio or video file (wav, mp3, flac, ogg, m4a, webm, mp4, ...)")]
ModelField = Annotated[str, Form(description="Triton model name; whisper-1 = the default model")]
FormatField = Annotated[protocol.ResponseFormat, Form()]
TemperatureField = Annotated[float, Form(ge=0.0, le=1.0)]
GranularityField = Annotated[list[Granularity] | None, Form(alias="timestamp_granularities[]")]
ScriptField = Annotated[str | None, Form(description="Chinese output: s2twp (default), s2t, s2tw, s2hk, "
                                                     "simplified (t2s), none")]
BeamField = Annotated[int, Form(ge=0, le=16, description="0 = the model's default")]
VadField = Annotated[bool | None, Form(description="true: decode only what the VAD calls speech; false: every "
                                                   "sample (faster-whisper's default); empty: the model's default")]


@router.post("/audio/transcriptions", dependencies=[InFlightSlot], responses=formats.TRANSCRIPTION_RESPONSES)
async def create_transcription(
    request: Request,
    settings: SettingsDep,
    triton: TritonDep,
    file: FileField,
    model: ModelField = MODEL_ALIAS,
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: FormatField = "json",
    temperature: TemperatureField = 0.0,
    timestamp_granularities: GranularityField = None,
    stream: Annotated[bool, Form()] = False,
    chinese_script: ScriptField = None,
    beam_size: BeamField = 0,
    vad_filter: VadField = None,
    diarize: Annotated[bool, Form(description="Speakers on the segments in any format (diarized_json implies it)")] = False,
    known_speaker_names: Annotated[list[str] | None, Form(alias="known_speaker_names[]")] = None,
    known_speaker_references: Annotated[list[str] | None, Form(alias="known_speaker_references[]",
                                                               description="data:audio/...;base64, one per name")] = None,
    min_speakers: Annotated[int | None, Form(ge=1, le=32)] = None,
    max_speakers: Annotated[int | None, Form(ge=1, le=32)] = None,
) -> Response:
    speakers = SpeakerFields(diarize, known_speaker_names, known_speaker_references, min_speakers, max_speakers)
    return await _run(request, settings, triton, file=file, model=model, task="transcribe", language=language,
                      prompt=prompt, response_format=response_format, temperature=temperature,
                      granularities=timestamp_granularities, stream=stream, chinese_script=chinese_script,
                      beam_size=beam_size, vad_filter=vad_filter, speakers=speakers)


@router.post("/audio/translations", dependencies=[InFlightSlot], responses=formats.TRANSCRIPTION_RESPONSES)
async def create_translation(
    request: Request,
    settings: SettingsDep,
    triton: TritonDep,
    file: FileField,
    model: ModelField = MODEL_ALIAS,
    language: Annotated[str | None, Form(description="Source language; empty = detect")] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: FormatField = "json",
    temperature: TemperatureField = 0.0,
    timestamp_granularities: GranularityField = None,
    stream: Annotated[bool, Form()] = False,
    beam_size: BeamField = 0,
    vad_filter: VadField = None,
) -> Response:
    return await _run(request, settings, triton, file=file, model=model, task="translate", language=language,
                      prompt=prompt, response_format=response_format, temperature=temperature,
                      granularities=timestamp_granularities, stream=stream, chinese_script="none",
                      beam_size=beam_size, vad_filter=vad_filter)


async def _model_ids(settings: SettingsDep, triton: TritonDep) -> list[str]:
    ready = await service.transcription_models(triton, settings)
    return ready + ([MODEL_ALIAS] if settings.default_model in ready else [])


@router.get("/models")
async def list_models(settings: SettingsDep, triton: TritonDep) -> protocol.ListModelsResponse:
    return protocol.ListModelsResponse(data=[protocol.Model(id=name) for name in await _model_ids(settings, triton)])


@router.get("/models/{model}", responses=protocol.ERROR_RESPONSES)
async def get_model(model: str, settings: SettingsDep, triton: TritonDep) -> protocol.Model:
    if model not in await _model_ids(settings, triton):
        raise ModelNotFound(f"The model '{model}' does not exist or is not ready", param="model")
    return protocol.Model(id=model)
