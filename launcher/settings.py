"""``LaunchSettings``: every environment variable ``make serve`` / ``make triton`` read, in one object.

The gateway's own settings (its host and port included: ``GATEWAY_HOST``, ``GATEWAY_PORT``) are the
gateway's ``Settings``; the launcher only passes the environment on and reads ``Settings().port`` to know
where to wait for the gateway's ``/health``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class LaunchSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    repository: Path = Field(ROOT / "model_repository", validation_alias="MODEL_REPOSITORY")
    # The models served, comma-separated.
    models: Annotated[list[str], NoDecode] = Field(["whisper", "whisper-tiny-en", "speaker"],
                                                   validation_alias="WHISPER_MODELS")
    http_port: int = Field(8000, validation_alias="TRITON_HTTP_PORT")
    grpc_port: int = Field(8001, validation_alias="TRITON_GRPC_PORT")
    metrics_port: int = Field(8002, validation_alias="TRITON_METRICS_PORT")
    # Triton's ports have no authentication: only this machine by default ("0.0.0.0" opens them to the network).
    bind_address: str = Field("127.0.0.1", validation_alias="TRITON_BIND_ADDRESS")
    # "explicit": the models can be loaded and unloaded through Triton's API (POST /v2/repository/...).
    model_control: str = Field("none", pattern="^(none|explicit)$", validation_alias="TRITON_MODEL_CONTROL")
    # A running tritonserver that does not answer /v2/health/live for this long is killed and restarted.
    stuck_after_s: float = Field(10.0, gt=0, validation_alias="TRITON_STUCK_S")
    # Where the Python backend and its stub are copied (and the served repository's links are kept).
    build_dir: Path = Field(ROOT / "build", validation_alias="WHISPER_TRITON_BUILD")
    ready_timeout_s: float = Field(900.0, gt=0, validation_alias="TRITON_READY_TIMEOUT_S")

    @field_validator("models", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return [m.strip() for m in value.split(",") if m.strip()] if isinstance(value, str) else value
