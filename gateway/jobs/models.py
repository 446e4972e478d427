"""What a job is: the ``Job`` record, its JSON on the API, its errors, and results to and from JSON."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.diarization import DiarizeOptions
from gateway.errors import APIError, ServiceUnavailable, TooManyRequests
from gateway.results import Options, Segment, Transcription
from gateway.triton import SpeakerWindows

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
FINAL = ("succeeded", "failed", "cancelled")
ID_LENGTH = 32  # uuid4().hex


class JobNotFound(APIError):
    status_code = 404
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"No job with id '{job_id}'", param="job_id")


class JobNotFinished(APIError):
    status_code = 409
    code = "job_not_finished"


class JobsUnavailable(ServiceUnavailable):
    code = "jobs_unavailable"


class JobQuotaExceeded(TooManyRequests):
    """A client's queue or the jobs' storage is full: 429 until jobs finish."""

    code = "job_quota_exceeded"


class JobGone(Exception):
    """The job was cancelled or deleted, or another runner holds it now: stop working on it."""


def valid_id(job_id: str) -> bool:
    return len(job_id) == ID_LENGTH and all(c in "0123456789abcdef" for c in job_id)


def error_dict(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, APIError):
        return {"message": exc.message, "type": exc.type, "code": exc.code}
    return {"message": f"Internal error: {type(exc).__name__}: {exc}", "type": "server_error", "code": "internal_error"}


def result_to_dict(result: Transcription) -> dict[str, Any]:
    return dataclasses.asdict(result)


def result_from_dict(data: dict[str, Any]) -> Transcription:
    return Transcription(
        text=str(data.get("text", "")), language=str(data.get("language", "")),
        duration=float(data.get("duration", 0.0)),
        segments=tuple(Segment.from_dict(s, i) for i, s in enumerate(data.get("segments") or ())),
        task=str(data.get("task", "transcribe")), model=str(data.get("model", "")),
    )


def dump_result(result: Transcription) -> str:
    return json.dumps(result_to_dict(result))


def load_result(text: str) -> Transcription:
    return result_from_dict(json.loads(text))


def dump_windows(windows: SpeakerWindows) -> str:
    """A chunk's speaker windows as JSON (embeddings as base64 float32: a quarter of their size as numbers)."""
    embeddings = np.ascontiguousarray(windows.embeddings, dtype="<f4")
    return json.dumps({"dim": int(embeddings.shape[1]) if embeddings.ndim == 2 else 0,
                       "embeddings": base64.b64encode(embeddings.tobytes()).decode(),
                       "spans": np.asarray(windows.spans, dtype=np.float64).tolist(),
                       "regions": np.asarray(windows.regions, dtype=np.int64).tolist()})


def load_windows(text: str) -> SpeakerWindows:
    data = json.loads(text)
    embeddings = np.frombuffer(base64.b64decode(data["embeddings"]), dtype="<f4").astype(np.float32)
    return SpeakerWindows(embeddings.reshape(-1, data["dim"]) if data["dim"] else embeddings.reshape(0, 0),
                          np.asarray(data["spans"], dtype=np.float64).reshape(-1, 2),
                          np.asarray(data["regions"], dtype=np.int64))


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    created_at: float
    updated_at: float
    finished_at: float | None
    model: str
    options: Options
    conversion: str
    words: bool
    duration: float
    chunks: tuple[tuple[int, int], ...]
    chunks_done: int
    progress_s: float
    attempts: int  # times a runner started it
    interruptions: int  # times a runner died under it (found running at startup, or its lease expired)
    resumed_at_chunk: int  # the chunk the latest attempt started at (0 = from the beginning)
    error: dict[str, Any] | None
    last_error: str | None  # while running: why the current chunk is being retried
    client: str = ""  # who submitted it (per-client queue limit)
    audio_bytes: int = 0  # compressed audio still stored (chunks not yet transcribed)
    callback_url: str | None = None
    callback_metadata: dict[str, Any] | None = None
    lease: str | None = None  # the current claim's token: only its holder may commit chunks
    runner: str | None = None  # host:pid of the process that claimed it last
    diarize: DiarizeOptions | None = None  # speakers wanted: each chunk's speaker windows kept, clustered at the end

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Job":
        metadata, diarize = row["callback_metadata"], row["diarize"]
        return cls(
            id=row["id"], status=row["status"], created_at=row["created_at"], updated_at=row["updated_at"],
            finished_at=row["finished_at"], model=row["model"], options=Options(**json.loads(row["options"])),
            conversion=row["conversion"], words=bool(row["words"]), duration=row["duration"],
            chunks=tuple(tuple(c) for c in json.loads(row["chunks"])),
            chunks_done=row["chunks_done"], progress_s=row["progress_s"], attempts=row["attempts"],
            interruptions=row["interruptions"], resumed_at_chunk=row["resumed_at_chunk"],
            error=json.loads(row["error"]) if row["error"] else None, last_error=row["last_error"],
            client=row["client"], audio_bytes=row["audio_bytes"], callback_url=row["callback_url"],
            callback_metadata=json.loads(metadata) if metadata else None, lease=row["lease"], runner=row["runner"],
            diarize=DiarizeOptions(**json.loads(diarize)) if diarize else None,
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "transcription.job",
            "status": self.status,
            "model": self.model,
            "task": self.options.task,
            "language": self.options.language or None,
            "created_at": int(self.created_at),
            "updated_at": int(self.updated_at),
            "finished_at": None if self.finished_at is None else int(self.finished_at),
            "duration": round(self.duration, 3),
            "progress": {
                "seconds_done": round(self.progress_s, 3),
                "seconds_total": round(self.duration, 3),
                "chunks_done": self.chunks_done,
                "chunk_count": self.chunk_count,
                "fraction": round(self.progress_s / self.duration, 4) if self.duration else 0.0,
            },
            "attempts": self.attempts,
            "interruptions": self.interruptions,
            "resumed_at_chunk": self.resumed_at_chunk,
            "error": self.error,
            "result_url": f"/v1/jobs/{self.id}/result",
            "callback_url": self.callback_url,
            "callback_metadata": self.callback_metadata,
        }
        if self.last_error and self.status == "running":
            body["last_error"] = self.last_error
        return body


@dataclass(frozen=True)
class Delivery:
    """One webhook in the outbox: the signed message is fixed when the job ends, resent as it was."""

    id: str  # the webhook-id header: the same on every attempt, so receivers can drop duplicates
    job_id: str
    url: str
    body: str
    created_at: float
    attempts: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Delivery":
        return cls(id=row["id"], job_id=row["job_id"], url=row["url"], body=row["body"],
                   created_at=row["created_at"], attempts=row["attempts"])
