"""Settings, read once from the environment (prefix ``GATEWAY_``) and an optional ``.env`` file."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.errors import ModelNotFound

ChineseScript = Literal["s2twp", "s2t", "s2tw", "s2hk", "t2s", "none"]
# A Triton model name as this gateway accepts it; anything else (paths, URL escapes, control or
# non-ASCII characters, over-long names) is refused with 404 before it reaches Triton.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_by_name=True,
    )

    triton_url: str = "localhost:8001"  # gRPC host:port
    default_model: str = "whisper"  # "whisper-1" is an alias for it
    host: str = "0.0.0.0"
    port: int = 8080

    max_upload_mb: float = Field(100.0, gt=0)  # whole request body, MiB
    max_audio_seconds: float = Field(3600.0, gt=0)  # decoded audio; longer uploads get 400
    # Requests one gateway holds at once (decoding, waiting for Triton, or in Triton); more get an
    # immediate 429. A held request keeps its decoded audio (64 KB per second of audio): 256 one-minute
    # clips are about 1 GB. Only max_triton_concurrency of them are sent to Triton at a time.
    max_in_flight: int = Field(256, ge=1)
    # Inference calls one gateway has outstanding to Triton; the other held requests wait in the gateway.
    # Keep it at most the model's max_queue_size (64) divided by the gateways sharing one Triton.
    max_triton_concurrency: int = Field(16, ge=1)
    # Every inference call has a deadline of triton_deadline_s plus triton_deadline_per_audio_s per second of
    # its audio, at most triton_timeout_s; past it the call is cancelled in Triton and the request gets 503.
    triton_deadline_s: float = Field(60.0, gt=0)
    triton_deadline_per_audio_s: float = Field(1.0, ge=0)
    triton_timeout_s: float = Field(600.0, gt=0)
    health_timeout_s: float = Field(3.0, gt=0)
    retry_after_s: int = Field(2, ge=0)  # Retry-After on 429
    # The watchdog (gateway/watchdog.py) asks Triton every watchdog_interval_s whether it is ready, with a
    # deadline of watchdog_timeout_s. Two in a row unanswered (a frozen or dead server): /health is 503 at once
    # and every inference call, waiting or in flight, fails with 503 until Triton answers again. A short silent
    # test inference goes out when calls get no answer for watchdog_timeout_s, or none was made for
    # watchdog_probe_idle_s (0: not then); unanswered while the model finishes nothing, /health is 503.
    watchdog_interval_s: float = Field(1.0, gt=0)
    watchdog_timeout_s: float = Field(1.5, gt=0)
    watchdog_probe_idle_s: float = Field(30.0, ge=0)

    # Uploads (every POST): the body must keep coming. A read that waits body_idle_s for data, or a body that
    # arrives slower on average than min_upload_kib_s after its first body_grace_s, ends the request with 408
    # and the connection is closed. In-flight slots are taken only once the body is in.
    body_idle_s: float = Field(15.0, gt=0)
    body_grace_s: float = Field(10.0, ge=0)
    min_upload_kib_s: float = Field(16.0, ge=0)  # 0: no minimum rate (the idle limit still holds)
    # Per client, by IP address (``ip``: the peer, or X-Forwarded-For from FORWARDED_ALLOW_IPS proxies) or by
    # bearer token (``token``, the IP when a request has none): uploads at once, being received or in flight,
    # and live streams at once. Past them: 429, and close code 1013 for a stream.
    client_key: Literal["ip", "token"] = "ip"
    max_requests_per_client: int = Field(64, ge=1)
    max_streams_per_client: int = Field(4, ge=1)

    # Durable jobs (/v1/jobs): SQLite at jobs_dir/jobs.sqlite3 with each chunk's audio (FLAC) under
    # jobs_dir/audio/ until it is transcribed; mount a volume there for jobs to outlive the container. Or,
    # with jobs_database_url (postgresql://...), jobs and their audio in PostgreSQL, shared by every replica.
    jobs_dir: Path = Path("~/.cache/whisper-triton/jobs")
    jobs_database_url: SecretStr | None = None
    job_chunk_seconds: float = Field(120.0, ge=5)  # a job is sent to Triton in pieces of about this length
    job_workers: int = Field(2, ge=1)  # jobs one gateway runs at once (the last takes the shortest job first)
    job_max_attempts: int = Field(3, ge=1)  # a job the gateway died under this many times is failed
    job_lease_s: float = Field(30.0, ge=1)  # PostgreSQL: a dead replica's job is taken over after this
    job_submit_concurrency: int = Field(2, ge=1)  # uploads decoded at once (each holds its samples, 64 KB/s)
    job_storage_quota_mb: float = Field(20480.0, gt=0)  # compressed audio of all unfinished jobs; 429 past it
    job_max_active_per_client: int = Field(20, ge=1)  # queued + running jobs of one client (client_key); 429 past it
    max_job_upload_mb: float = Field(1024.0, gt=0)  # POST /v1/jobs body, MiB (other routes: max_upload_mb)
    max_job_audio_seconds: float = Field(4 * 3600.0, gt=0)  # decoded audio of one job

    # Job webhooks (callback_url): signed as Standard Webhooks says with this secret ("whsec_" + base64);
    # unset = callback_url is refused. Retried with backoff from webhook_retry_s, doubling, for at most
    # webhook_max_age_s. Private, loopback and link-local receivers are refused unless allowed.
    webhook_secret: SecretStr | None = None
    webhook_allow_private: bool = False
    webhook_timeout_s: float = Field(10.0, gt=0)
    webhook_retry_s: float = Field(5.0, gt=0)
    webhook_max_age_s: float = Field(86400.0, gt=0)

    # stream=true uploads: the file is sent to Triton in pieces of about this length (cut at pauses), a few
    # at once, and each piece's text is sent to the client as soon as it and the ones before it are done.
    sse_chunk_seconds: float = Field(30.0, ge=5)
    sse_chunks_ahead: int = Field(4, ge=1)  # pieces of one stream=true (or long) upload in flight at once
    # Uploads longer than this go to Triton the same way, in pieces of about this length, so no gRPC message
    # is larger than ~20 MB (copying an hour's 230 MB would hold the event loop for most of a second).
    triton_piece_seconds: float = Field(300.0, ge=30)

    chinese_default: ChineseScript = "s2twp"  # zh output script when the request does not choose one

    # Diarization (response_format=diarized_json, diarize=true): the speaker model in Triton, the
    # clustering threshold for its embeddings (0.60 for the bundled GE2E; benchmarks/diarization.py),
    # the most speakers a request may ask for, and its known-speaker reference clips.
    diarization_model: str = "speaker"
    diarization_threshold: float = Field(0.60, gt=0, lt=1)
    max_speakers: int = Field(8, ge=1, le=32)
    max_speaker_references: int = Field(4, ge=0)
    max_reference_seconds: float = Field(10.0, gt=0)

    # Live sessions (/v1/realtime, /v1/stream; gateway/streaming): server VAD cuts the speech into turns, each
    # turn is decoded once when it ends; partial decodes of the turn being spoken run while Triton is not busy.
    max_streams: int = Field(16, ge=1)  # live sessions per gateway; more are refused at the start
    # New sessions are refused while turns complete later than this after they end (recent average)
    stream_admit_lag_s: float = Field(1.0, gt=0)
    # ... or when the live sessions' turn decodes, one more session counted at their average, would take this
    # many seconds of Triton time (queue included) per second: predicted before any session is late
    stream_final_capacity: float = Field(0.8, gt=0)
    stream_step_s: float = Field(1.0, ge=0.1)  # new audio of the open turn between two partial decodes
    stream_beam_size: int = Field(1, ge=0, le=16)  # partial decodes' beam; 0 = the model's default
    stream_final_beam_size: int = Field(1, ge=0, le=16)  # a turn's decode; 0 = the model's default
    # Live decodes' encoder context: "trimmed" (about twice the sessions per core; live turns are short), "full"
    # (faster-whisper's exact text, every turn at 30 s), "" (the model's trim_languages)
    stream_context: Literal["", "trimmed", "full"] = "trimmed"
    stream_partial_concurrency: int = Field(2, ge=1)  # partial decodes outstanding, all sessions; more are skipped
    # Server VAD defaults (/v1/stream, and /v1/realtime until a session.update says otherwise)
    stream_vad_threshold: float = Field(0.5, ge=0, le=1)
    stream_prefix_padding_ms: int = Field(300, ge=0, le=5000)
    stream_silence_ms: int = Field(500, ge=100, le=10000)
    stream_max_turn_s: float = Field(15.0, ge=2, le=30)  # a longer turn is cut at its quietest frame
    stream_max_buffer_s: float = Field(30.0, gt=0)  # audio waiting to be decoded past which the client is not read
    # A /v1/stream whose audio falls this far behind real time (one that sends nothing, or a few bytes a minute),
    # or a realtime session that sends nothing this long, is closed; time the gateway held it back does not count
    stream_idle_s: float = Field(30.0, gt=0)
    # Audio this far ahead of real time: /v1/realtime reads it at real time (paced), /v1/stream closes with 1008
    stream_max_ahead_s: float = Field(10.0, ge=0)
    # /v1/stream's server VAD hears audio at most this far ahead of real time (the rest once the client stops):
    # a client sending faster than real time costs no more VAD than a live one before it is closed
    stream_vad_lead_s: float = Field(1.0, ge=0)
    stream_max_frame_kib: int = Field(1024, ge=1)  # largest client message (a realtime append: about 21 s of 24 kHz)
    # Live-session decodes outstanding to Triton at once, all sessions (each also counts against
    # max_triton_concurrency; finals first): live sessions cannot take all of Triton from uploads
    stream_triton_concurrency: int = Field(4, ge=1)

    open_health: bool = True  # /health (and /stt/health) stay open when a token is set
    open_metrics: bool = True  # /metrics stays open when a token is set

    # No token = no auth. Unprefixed names, as the earlier servers used them.
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("API_KEY", "ACCESS_TOKEN", "api_key"),
    )

    @field_validator("api_key", "jobs_database_url", "webhook_secret", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    @field_validator("webhook_secret", mode="after")
    @classmethod
    def _webhook_secret_is_base64(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            key = value.get_secret_value().removeprefix("whsec_")
            try:
                if len(base64.b64decode(key + "=" * (-len(key) % 4), validate=True)) < 16:
                    raise ValueError
            except ValueError:
                raise ValueError("GATEWAY_WEBHOOK_SECRET must be 'whsec_' + base64 of at least 16 random bytes "
                                 "(python -c \"import os,base64;print('whsec_'+base64.b64encode(os.urandom(32)).decode())\")") from None
        return value

    @field_validator("jobs_dir", mode="after")
    @classmethod
    def _expand_jobs_dir(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_job_upload_bytes(self) -> int:
        return int(self.max_job_upload_mb * 1024 * 1024)

    def resolve_model(self, name: str | None) -> str:
        """The Triton model for a requested name: empty and ``whisper-1`` mean the default model.

        Raises ``ModelNotFound`` (404) for a name that is no valid model name (see ``MODEL_NAME``).
        """
        name = (name or "").strip()
        if not name or name == "whisper-1":
            return self.default_model
        if not MODEL_NAME.fullmatch(name):
            raise ModelNotFound(f"The model {_printable(name)} does not exist", param="model")
        return name


def _printable(name: str, limit: int = 64) -> str:
    """A requested name as it may appear in an error message: ASCII-escaped, quoted, shortened."""
    shown = ascii(name[:limit])
    return shown + "..." if len(name) > limit else shown
