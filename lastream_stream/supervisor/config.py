"""Supervisor settings, from ``LASTREAM_SUPERVISOR_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lastream_stream.exposition import MetricsEndpoint
from lastream_stream.settings import lastream_home


class SupervisorSettings(BaseSettings, MetricsEndpoint):
    """The worker supervisor (`lastream supervisor`)."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_SUPERVISOR_", extra="ignore")

    metrics_port: int = Field(
        default=9465,
        ge=1,
        le=65535,
        description="Port of the supervisor's Prometheus metrics; one supervisor runs per app, so several on one host need a port each.",
    )

    home: Path = Field(
        default_factory=lambda: lastream_home() / "supervisor",
        description="Directory of the run directories: pid files, worker state files and worker logs live in `<home>/<app>/`.",
    )
    initial: dict[str, int] = Field(
        default_factory=dict,
        description='Parallelism per operator before any command, e.g. `{"splitter": 2}`; the others start at 1.',
    )
    # SIGTERM first so that a worker leaves its consumer group cleanly.
    stop_timeout_s: float = Field(
        default=20.0, gt=0, description="Seconds a worker has to exit after SIGTERM before it is killed (SIGKILL)."
    )
    backoff_initial_s: float = Field(
        default=0.5, gt=0, description="Delay before restarting a crashed worker; doubles with each consecutive crash."
    )
    backoff_max_s: float = Field(default=30.0, gt=0, description="Longest delay before restarting a crashed worker.")
    stable_after_s: float = Field(
        default=30.0, gt=0, description="A worker that has run this long counts as healthy again: its backoff resets."
    )
    # A worker that dies on start-up (bad command, import error) must not be acknowledged.
    settle_s: float = Field(
        default=1.0, ge=0, description="Seconds new workers must survive before an ack counts them as running."
    )
    # A killed supervisor leaves its workers running (own session) and adopts them when it comes back.
    stop_workers_on_exit: bool = Field(
        default=True, description="Stop every worker on a clean exit (Ctrl-C, SIGTERM); otherwise leave them running."
    )
    broker_retry_initial_s: float = Field(
        default=1.0,
        gt=0,
        description="Delay before asking an unreachable broker again at start-up; doubles with each attempt.",
    )
    broker_retry_max_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest delay between attempts to reach the broker at start-up; it waits for as long as it takes.",
    )
    # Copy-truncate (workers.rotate_log): workers write their log files directly, so they
    # outlive the supervisor.
    log_max_bytes: int = Field(
        default=10_000_000,
        ge=1,
        description="Size at which a worker's log file is rotated (copied to `.1`, then truncated).",
    )
    log_backups: int = Field(
        default=3, ge=0, description="Rotated copies kept of each worker's log (`<operator>-<slot>.log.1` ... `.N`)."
    )
    tick_s: float = Field(
        default=0.2, gt=0, description="How often crashed workers are looked for between control messages, seconds."
    )

    def run_dir(self, app: str) -> Path:
        return self.home / app
