"""Durable jobs for long files: submit, poll, fetch the result in any response format, cancel, delete.

The work and the storage live in ``gateway.jobs``; these routes only parse, check and render.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from gateway import diarization, formats, service
from gateway.deps import Authenticated, SettingsDep, TritonDep
from gateway.errors import InvalidRequest, ModelNotFound, ServiceUnavailable
from gateway.jobs import Jobs, JobsUnavailable
from gateway.jobs.api import JobDeleted, JobList, JobObject
from gateway.limits import client_key

router = APIRouter(prefix="/v1", tags=["jobs"], dependencies=[Authenticated])

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json", "diarized_json"]
Granularity = Literal["segment", "word"]


def get_jobs(request: Request) -> Jobs:
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise JobsUnavailable("Jobs are unavailable: the gateway has not started them")
    return jobs


JobsDep = Annotated[Jobs, Depends(get_jobs)]
MAX_METADATA_BYTES = 4096


def parse_metadata(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidRequest(f"callback_metadata is longer than {MAX_METADATA_BYTES} bytes", param="callback_metadata")
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest("callback_metadata must be a JSON object", param="callback_metadata")
    return value


@router.post("/jobs", status_code=202, responses={202: {"model": JobObject}})
async def create_job(
    request: Request,
    settings: SettingsDep,
    triton: TritonDep,
    jobs: JobsDep,
    file: Annotated[UploadFile, File(description="Audio or video file, up to max_job_audio_seconds long")],
    model: Annotated[str, Form(description="Triton model name; whisper-1 = the default model")] = "whisper-1",
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    task: Annotated[Literal["transcribe", "translate"], Form()] = "transcribe",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    timestamp_granularities: Annotated[list[Granularity] | None, Form(alias="timestamp_granularities[]")] = None,
    chinese_script: Annotated[str | None, Form()] = None,
    beam_size: Annotated[int, Form(ge=0, le=16)] = 0,
    callback_url: Annotated[str | None, Form(description="POSTed the job, signed (Standard Webhooks), when it "
                                                         "ends")] = None,
    callback_metadata: Annotated[str | None, Form(description="A JSON object (at most 4 KB) sent back with "
                                                              "the job")] = None,
    diarize: Annotated[bool, Form(description="Speakers on the result's segments (and diarized_json)")] = False,
    min_speakers: Annotated[int | None, Form(ge=1, le=32)] = None,
    max_speakers: Annotated[int | None, Form(ge=1, le=32)] = None,
) -> JSONResponse:
    words = "word" in (timestamp_granularities or [])
    conversion = "none" if task == "translate" else service.conversion_for(settings, chinese_script, language)
    options = service.options_for(language=language, task=task, prompt=prompt, word_timestamps=words,
                                  beam_size=beam_size, temperature=temperature)
    speakers = None
    if diarize:
        if task != "transcribe":
            raise InvalidRequest("Diarization is only available for transcriptions", param="diarize",
                                 code="invalid_value")
        speakers, _ = diarization.request_options(names=None, references=None, min_speakers=min_speakers,
                                                  max_speakers=max_speakers, limit_speakers=settings.max_speakers,
                                                  limit_references=settings.max_speaker_references)
    name = settings.resolve_model(model)
    try:  # refuse an unknown model now; if Triton is down the job waits for it instead
        ready = await triton.ready_models()
    except ServiceUnavailable:
        ready = None
    if ready is not None and name not in ready:
        raise ModelNotFound(f"The model '{model}' does not exist or is not ready", param="model")
    if speakers is not None and ready is not None and settings.diarization_model not in ready:
        raise ServiceUnavailable(f"Diarization is unavailable: the speaker model '{settings.diarization_model}' "
                                 f"is not loaded in Triton")
    job = await jobs.submit(file.file, model=name, options=options, conversion=conversion, words=words,
                            client=client_key(request.scope, settings.client_key), callback_url=callback_url or None,
                            callback_metadata=parse_metadata(callback_metadata), diarize=speakers)
    return JSONResponse(job.to_json(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("/jobs", responses={200: {"model": JobList}})
async def list_jobs(jobs: JobsDep, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    recent = await jobs.recent(limit + 1)
    return {"object": "list", "data": [job.to_json() for job in recent[:limit]], "has_more": len(recent) > limit}


@router.get("/jobs/{job_id}", responses={200: {"model": JobObject}})
async def get_job(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    return (await jobs.get(job_id)).to_json()


@router.get("/jobs/{job_id}/result")
async def get_job_result(job_id: str, jobs: JobsDep, response_format: ResponseFormat = "json") -> Response:
    job, result = await jobs.result(job_id)
    if response_format == "diarized_json" and job.diarize is None:
        raise InvalidRequest("diarized_json needs a job submitted with diarize=true", param="response_format",
                             code="invalid_value")
    body = formats.render(result, response_format, words=job.words)
    if isinstance(body, dict):
        return JSONResponse(body)
    return Response(body, media_type=formats.MEDIA_TYPES[response_format])


@router.post("/jobs/{job_id}/cancel", responses={200: {"model": JobObject}})
async def cancel_job(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    return (await jobs.cancel(job_id)).to_json()


@router.delete("/jobs/{job_id}", responses={200: {"model": JobDeleted}})
async def delete_job(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    await jobs.delete(job_id)
    return {"id": job_id, "object": "transcription.job.deleted", "deleted": True}
