"""Routes of the servers this gateway replaces, with their field names and response shapes.

- ``POST /transcribe/file`` (multipart ``file``, ``model``, ``timestamps``) and ``POST /transcribe/binary?model=&ext=``
  (raw body) -> ``{success, text, process_time, language, segments?}``; failures carry ``success: false``
  and ``error``;
- ``GET /models``;
- ``POST /stt/transcribe/`` (``file``, ``language``, ``beam_size``) and ``GET /stt/health``.

The model names those servers offered (``large-v3``, ``turbo``, ...) run on the default model.
"""

from __future__ import annotations

import io
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from gateway import diarization, service
from gateway.config import Settings
from gateway.deps import (Authenticated, InFlightSlot, SettingsDep, TritonDep, require_token_for_health,
                          unless_client_leaves)
from gateway.results import Transcription

router = APIRouter(tags=["legacy"])

LEGACY_MODEL_NAMES = {"large-v3", "large-v3-turbo", "turbo", "large", "large-v2", "large-v1",
                      "medium", "small", "base", "tiny"}


def _model(settings: Settings, name: str | None) -> str:
    name = (name or "").strip()
    return settings.default_model if name in LEGACY_MODEL_NAMES else settings.resolve_model(name)


def _body(result: Transcription, started: float, timestamps: bool, diarize: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "success": True,
        "text": result.text,
        "process_time": round(time.perf_counter() - started, 3),
        "language": result.language,
        "duration": round(result.duration, 3),
        "model": result.model,
    }
    if timestamps or diarize:
        body["segments"] = [{"id": s.id, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text.strip(),
                             **({"speaker": s.speaker} if diarize else {})} for s in result.segments]
    if diarize:
        body["speakers"] = result.speakers
    return body


async def _transcribe(request: Request, source: Any, settings: Settings, triton: Any, *, model: str | None,
                      language: str | None, chinese_script: str | None, beam_size: int = 0, diarize: bool = False,
                      vad_filter: bool | None = None) -> Transcription:
    conversion = service.conversion_for(settings, chinese_script, language)
    options = service.options_for(language=language, beam_size=beam_size, vad_filter=vad_filter)
    speakers = diarization.DiarizeOptions(max_speakers=settings.max_speakers) if diarize else None
    return await unless_client_leaves(request, service.transcribe(
        source, settings=settings, triton=triton, model=_model(settings, model), options=options,
        conversion=conversion, diarize=speakers))


async def raw_body(request: Request) -> io.BytesIO:
    """The whole body of a raw upload, read before the in-flight slot is taken: a slow upload holds none."""
    buffer = io.BytesIO()  # one copy of the body; the app's body limits stop it early
    async for chunk in request.stream():
        buffer.write(chunk)
    return buffer


@router.post("/transcribe/file", dependencies=[Authenticated, InFlightSlot])
async def transcribe_file(
    request: Request,
    settings: SettingsDep,
    triton: TritonDep,
    file: Annotated[UploadFile, File()],
    model: Annotated[str | None, Form()] = None,
    timestamps: Annotated[bool, Form()] = False,
    language: Annotated[str | None, Form()] = None,
    chinese_script: Annotated[str | None, Form()] = None,
    diarize: Annotated[bool, Form(description="a speaker on every segment, and the speakers found")] = False,
    vad_filter: Annotated[bool | None, Form()] = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    result = await _transcribe(request, file.file, settings, triton, model=model, language=language,
                               chinese_script=chinese_script, diarize=diarize, vad_filter=vad_filter)
    return _body(result, started, timestamps, diarize)


@router.post("/transcribe/binary", dependencies=[Authenticated, Depends(raw_body), InFlightSlot])
async def transcribe_binary(
    request: Request,
    settings: SettingsDep,
    triton: TritonDep,
    body: Annotated[io.BytesIO, Depends(raw_body)],
    model: Annotated[str | None, Query()] = None,
    ext: Annotated[str | None, Query(description="File extension hint; the content is probed anyway")] = None,
    timestamps: Annotated[bool, Query()] = False,
    language: Annotated[str | None, Query()] = None,
    chinese_script: Annotated[str | None, Query()] = None,
    vad_filter: Annotated[bool | None, Query()] = None,
    diarize: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    started = time.perf_counter()
    result = await _transcribe(request, body, settings, triton, model=model, language=language,
                               chinese_script=chinese_script, diarize=diarize, vad_filter=vad_filter)
    return _body(result, started, timestamps, diarize)


@router.get("/models", dependencies=[Authenticated])
async def legacy_models(settings: SettingsDep, triton: TritonDep) -> dict[str, Any]:
    return {"success": True, "models": await service.transcription_models(triton, settings),
            "default": settings.default_model}


@router.post("/stt/transcribe/", dependencies=[Authenticated, InFlightSlot])
@router.post("/stt/transcribe", dependencies=[Authenticated, InFlightSlot], include_in_schema=False)
async def stt_transcribe(
    request: Request,
    settings: SettingsDep,
    triton: TritonDep,
    file: Annotated[UploadFile, File()],
    language: Annotated[str | None, Form()] = None,
    beam_size: Annotated[int, Form(ge=0, le=16)] = 0,
    chinese_script: Annotated[str | None, Form()] = None,
    diarize: Annotated[bool, Form()] = False,
    vad_filter: Annotated[bool | None, Form()] = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    result = await _transcribe(request, file.file, settings, triton, model=None, language=language,
                               chinese_script=chinese_script, beam_size=beam_size, diarize=diarize,
                               vad_filter=vad_filter)
    return _body(result, started, timestamps=True, diarize=diarize)


@router.get("/stt/health", dependencies=[Depends(require_token_for_health)])
async def stt_health(request: Request, settings: SettingsDep, triton: TritonDep) -> JSONResponse:
    ok, body = await service.health(triton, settings, request.app.state.watchdog)
    return JSONResponse(body, status_code=200 if ok else 503)
