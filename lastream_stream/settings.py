"""Configuration: one settings object, read from ``LASTREAM_*`` environment variables.

Each group has its own prefix so the names read naturally in a shell:
``LASTREAM_KAFKA_BOOTSTRAP``, ``LASTREAM_TOPIC_METRICS``, ``LASTREAM_BROKER_PORT`` ...
Every default path on disk derives from ``LASTREAM_HOME`` (``~/.cache/lastream``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster. Secrets stay ``SecretStr`` until handed to librdkafka."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_KAFKA_", extra="ignore")

    bootstrap: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    client_id: str = "lastream"
    # Bounds how long any call waits on an unreachable cluster before it raises.
    timeout_s: float = Field(default=10.0, gt=0)
    # Extra librdkafka options, e.g. LASTREAM_KAFKA_EXTRA='{"ssl.ca.location": "/ca.pem"}'.
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)


class TopicSettings(BaseSettings):
    """Topic names and partition counts. The control topic is compacted and keyed by app."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_TOPIC_", extra="ignore")

    metrics: str = "lastream.metrics"
    control: str = "lastream.control"
    acks: str = "lastream.acks"
    decisions: str = "lastream.decisions"
    deadletter: str = "lastream.deadletter"
    metrics_partitions: int = Field(default=4, ge=1)
    control_partitions: int = Field(default=1, ge=1)
    acks_partitions: int = Field(default=1, ge=1)
    decisions_partitions: int = Field(default=1, ge=1)
    deadletter_partitions: int = Field(default=1, ge=1)
    replication_factor: int = Field(default=1, ge=1)


def lastream_home() -> Path:
    """Where LaStream keeps its files unless told otherwise: the broker's jars and data, the
    supervisor's run directories, the agent's checkpoint, process logs."""
    return Path(os.environ.get("LASTREAM_HOME") or Path.home() / ".cache" / "lastream")


class BrokerSettings(BaseSettings):
    """The local single-node KRaft broker that ``lastream kafka start`` runs."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_BROKER_", extra="ignore")

    kafka_version: str = "3.9.1"
    home: Path = Field(default_factory=lastream_home)
    port: int = 9092
    controller_port: int = 9093
    heap: str = "768m"
    start_timeout_s: float = Field(default=90.0, gt=0)


class LastreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LASTREAM_", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    log_level: str = "INFO"
