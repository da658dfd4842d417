"""KEDA external scaler settings, from ``LASTREAM_KEDA_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KedaSettings(BaseSettings):
    """The KEDA external scaler (`lastream keda-scaler`)."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_KEDA_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the gRPC server listens on; `0.0.0.0` in a pod.")
    port: int = Field(
        default=9467, ge=0, le=65535, description="Port of the gRPC server KEDA calls (0: any free port)."
    )
    history_s: float = Field(
        default=3600.0,
        gt=0,
        description="At start, how far back the decisions topic is read for each app's latest recommendation.",
    )
    threads: int = Field(
        default=128,
        ge=4,
        description="gRPC server threads: each `external-push` ScaledObject's stream holds one while KEDA keeps it open.",
    )
