"""The shapes ``/v1/jobs`` answers with, as pydantic models for the OpenAPI page (``/docs``).

``Job.to_json`` builds the bodies; a unit test checks that they validate against these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobProgress(BaseModel):
    seconds_done: float
    seconds_total: float
    chunks_done: int
    chunk_count: int
    fraction: float


class JobError(BaseModel):
    message: str
    type: str
    code: str | None


class JobObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    object: Literal["transcription.job"]
    status: Status
    model: str
    task: Literal["transcribe", "translate"]
    language: str | None
    created_at: int
    updated_at: int
    finished_at: int | None
    duration: float
    progress: JobProgress
    attempts: int
    interruptions: int
    resumed_at_chunk: int
    error: JobError | None
    result_url: str
    callback_url: str | None
    callback_metadata: dict[str, Any] | None
    last_error: str | None = None  # only while running, when the current chunk is being retried


class JobList(BaseModel):
    object: Literal["list"]
    data: list[JobObject]
    has_more: bool


class JobDeleted(BaseModel):
    id: str
    object: Literal["transcription.job.deleted"]
    deleted: bool


class WebhookMessage(BaseModel):
    """The body POSTed to a job's ``callback_url`` when it ends."""

    type: Literal["transcription.job.succeeded", "transcription.job.failed", "transcription.job.cancelled"]
    timestamp: str
    data: JobObject
