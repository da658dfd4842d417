"""Configuration: one settings object, read from ``LASTREAM_*`` environment variables.

Each group has its own prefix so the names read naturally in a shell:
``LASTREAM_KAFKA_BOOTSTRAP``, ``LASTREAM_TOPIC_METRICS``, ``LASTREAM_BROKER_PORT`` ...
Every default path on disk derives from ``LASTREAM_HOME`` (``~/.cache/lastream``).
Every field carries a ``description``: ``lastream settings`` renders them as the README's table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class HomeSettings(BaseSettings):
    """Where LaStream keeps its files."""

    # An empty LASTREAM_HOME counts as unset, as a shell's `LASTREAM_HOME= cmd` intends.
    model_config = SettingsConfigDict(env_prefix="LASTREAM_", env_ignore_empty=True, extra="ignore")

    home: Path = Field(
        default=Path("~/.cache/lastream"),
        description="Directory every default path derives from: the broker's jars and data, the supervisor's run directories (`supervisor/`), the agent's checkpoint (`agent/checkpoint.pt`), process logs (`logs/`).",
    )


def lastream_home() -> Path:
    """Where LaStream keeps its files unless told otherwise: the broker's jars and data, the
    supervisor's run directories, the agent's checkpoint, process logs."""
    return HomeSettings().home.expanduser()


# librdkafka options whose values are secrets: passwords, client secrets, tokens, private
# keys, and the OAuth config string that may carry a client secret.
SECRET_OPTION = re.compile(r"password|secret|token|key\.pem|oauthbearer\.config", re.IGNORECASE)

ClientOption = str | int | float | bool


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster.

    Secrets stay ``SecretStr`` until handed to librdkafka."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_KAFKA_", extra="ignore")

    bootstrap: str = Field(default="127.0.0.1:9092", description="Bootstrap servers of the Kafka cluster.")
    security_protocol: str = Field(
        default="PLAINTEXT", description="librdkafka `security.protocol`: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: str | None = Field(
        default=None, description="librdkafka `sasl.mechanism`, e.g. PLAIN or SCRAM-SHA-512."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password; a secret, never logged.")
    client_id: str = Field(default="lastream", description="Client id the clients give the broker.")
    timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long any client waits for an unreachable cluster before it stops with a clear error.",
    )
    extra: dict[str, ClientOption | SecretStr] = Field(
        default_factory=dict,
        description='Extra librdkafka options, e.g. `{"ssl.ca.location": "/ca.pem"}`; values of options named like a password, secret, token or `*.key.pem` are secrets, never logged.',
    )

    @field_validator("extra")
    @classmethod
    def _mask_secrets(cls, extra: dict[str, ClientOption | SecretStr]) -> dict[str, ClientOption | SecretStr]:
        return {
            key: SecretStr(str(value)) if SECRET_OPTION.search(key) and not isinstance(value, SecretStr) else value
            for key, value in extra.items()
        }

    def extra_options(self) -> dict[str, ClientOption]:
        """The extra librdkafka options, secrets revealed: only for handing to a client."""
        return {key: v.get_secret_value() if isinstance(v, SecretStr) else v for key, v in self.extra.items()}


class TopicSettings(BaseSettings):
    """Topic names and partition counts. The control topic is compacted and keyed by app."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_TOPIC_", extra="ignore")

    metrics: str = Field(default="lastream.metrics", description="Topic the apps' workers publish metrics reports to.")
    control: str = Field(default="lastream.control", description="Compacted topic of scaling commands, keyed by app.")
    acks: str = Field(default="lastream.acks", description="Topic of the supervisors' command acknowledgements.")
    decisions: str = Field(default="lastream.decisions", description="Topic of the agent's decision records.")
    deadletter: str = Field(
        default="lastream.deadletter", description="Topic that malformed messages go to, with the reason."
    )
    metrics_partitions: int = Field(default=4, ge=1, description="Partitions of the metrics topic.")
    control_partitions: int = Field(default=1, ge=1, description="Partitions of the control topic.")
    acks_partitions: int = Field(default=1, ge=1, description="Partitions of the acks topic.")
    decisions_partitions: int = Field(default=1, ge=1, description="Partitions of the decisions topic.")
    deadletter_partitions: int = Field(default=1, ge=1, description="Partitions of the dead-letter topic.")
    replication_factor: int = Field(default=1, ge=1, description="Replication factor of the topics LaStream creates.")


class BrokerSettings(BaseSettings):
    """The local single-node KRaft broker that ``lastream kafka start`` runs."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_BROKER_", extra="ignore")

    kafka_version: str = Field(default="3.9.1", description="Apache Kafka version Maven fetches.")
    home: Path = Field(default_factory=lastream_home, description="Directory of the broker's jars, data and log.")
    port: int = Field(default=9092, description="Port of the broker's client listener on 127.0.0.1.")
    controller_port: int = Field(default=9093, description="Port of the KRaft controller listener on 127.0.0.1.")
    heap: str = Field(default="768m", description="Java heap of the broker (`-Xmx`).")
    start_timeout_s: float = Field(
        default=90.0, gt=0, description="How long `lastream kafka start` waits for the broker to answer."
    )


class ControlAuthSettings(BaseSettings):
    """Who may command an app: the keys that sign scaling commands and acks, and how far
    ahead of its receiver a command may be dated."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_CONTROL_", extra="ignore")

    keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Accepted signing keys of commands and acks, key id -> secret, e.g. `{"k2": "..."}`; secrets, never logged. Empty: nothing is signed or checked (the control plane is unauthenticated).',
    )
    signing_key_id: str | None = Field(
        default=None,
        description="The key of `keys` this process signs with (the agent its commands, a supervisor its acks); required with `keys`.",
    )
    max_skew_s: float = Field(
        default=300.0,
        gt=0,
        description="A command dated more than this many seconds ahead of its receiver's clock is dead-lettered.",
    )

    def secrets(self) -> dict[str, bytes]:
        return {key_id: secret.get_secret_value().encode() for key_id, secret in self.keys.items()}


class LastreamSettings(BaseSettings):
    """Every command's settings; Kafka, the topics and the local broker read their own prefixes."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    control_auth: ControlAuthSettings = Field(default_factory=ControlAuthSettings)
    log_level: str = Field(default="INFO", description="Log level of every command: DEBUG, INFO or WARNING.")
    log_file: Path | None = Field(
        default=None,
        description="Log to this file, rotated by size, instead of stderr; unset: stderr. One file per process: "
        "two processes must not share it.",
    )
    log_max_bytes: int = Field(default=10_000_000, ge=1000, description="Size at which the log file is rotated, bytes.")
    log_backups: int = Field(
        default=3,
        ge=1,
        description="Older parts of the log file kept (`.1` the newest); the log takes at most "
        "`LOG_MAX_BYTES` x (`LOG_BACKUPS` + 1).",
    )

    def process_env(self) -> dict[str, str]:
        """The variables that point a child process at this cluster and these topics, with
        the credentials to reach it: a worker or an app started by code configured in code
        (tests) rather than by environment."""
        kafka = self.kafka
        connection = kafka.model_dump(exclude_none=True, exclude={"sasl_password", "extra"})
        env = {f"LASTREAM_KAFKA_{name.upper()}": str(value) for name, value in connection.items()}
        if kafka.sasl_password is not None:
            env["LASTREAM_KAFKA_SASL_PASSWORD"] = kafka.sasl_password.get_secret_value()
        if kafka.extra:
            env["LASTREAM_KAFKA_EXTRA"] = json.dumps(kafka.extra_options())
        env.update({f"LASTREAM_TOPIC_{name.upper()}": str(value) for name, value in self.topics.model_dump().items()})
        return env
