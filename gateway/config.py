"""Settings, read once from the environment (prefix ``GATEWAY_``) and an optional ``.env`` file."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ChineseScript = Literal["s2twp", "s2t", "s2tw", "s2hk", "t2s", "none"]


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
    max_in_flight: int = Field(32, ge=1)  # transcriptions at once per gateway; more get 429
    triton_timeout_s: float = Field(600.0, gt=0)  # per inference call; past it: 503
    health_timeout_s: float = Field(3.0, gt=0)
    retry_after_s: int = Field(2, ge=0)  # Retry-After on 429

    chinese_default: ChineseScript = "s2twp"  # zh output script when the request does not choose one

    open_health: bool = True  # /health (and /stt/health) stay open when a token is set
    open_metrics: bool = True  # /metrics stays open when a token is set

    # No token = no auth. Unprefixed names, as the earlier servers used them.
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("API_KEY", "ACCESS_TOKEN", "api_key"),
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def resolve_model(self, name: str | None) -> str:
        """The Triton model for a requested name: empty and ``whisper-1`` mean the default model."""
        name = (name or "").strip()
        if not name or name == "whisper-1":
            return self.default_model
        return name
