"""Supervisor settings, from ``LASTREAM_SUPERVISOR_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lastream_stream.settings import lastream_home


class SupervisorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LASTREAM_SUPERVISOR_", extra="ignore")

    # Pid files, worker state files and worker logs live in <home>/<app>/.
    home: Path = Field(default_factory=lambda: lastream_home() / "supervisor")
    # Parallelism before any command, per operator (others start at 1).
    initial: dict[str, int] = Field(default_factory=dict)
    # SIGTERM lets a worker leave its consumer group cleanly; SIGKILL only after this.
    stop_timeout_s: float = Field(default=20.0, gt=0)
    # A crashed worker is restarted after backoff_initial_s, doubling per consecutive
    # crash up to backoff_max_s; a worker that ran stable_after_s counts as healthy again.
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    stable_after_s: float = Field(default=30.0, gt=0)
    # New workers must survive this long before an ack counts them as running: a worker
    # that dies on start-up (bad command, import error) must not be acknowledged.
    settle_s: float = Field(default=1.0, ge=0)
    # On a clean exit (Ctrl-C, SIGTERM) stop every worker. A supervisor that is killed
    # leaves its workers running (own session) and adopts them when it comes back.
    stop_workers_on_exit: bool = True
    # How often crashed workers are looked for between control messages.
    tick_s: float = Field(default=0.2, gt=0)

    def run_dir(self, app: str) -> Path:
        return self.home / app
