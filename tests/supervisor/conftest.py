"""Fixtures for the supervisor tests: a tiny real worker program, an app spec that runs it,
helpers to publish commands and read acks, and an in-process supervisor thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from control_log import wait_for
from supervisor_env import Workers

from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor import AppSpec, Supervisor, SupervisorSettings


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.kill_all()  # whatever a failed test left behind


@pytest.fixture
def sup_config(tmp_path: Path) -> SupervisorSettings:
    return SupervisorSettings(
        home=tmp_path / "run", settle_s=0.3, backoff_initial_s=0.2, stop_timeout_s=5.0, tick_s=0.05
    )


@pytest.fixture
def supervise(
    settings: LastreamSettings, clients: KafkaClients, sup_config: SupervisorSettings
) -> Iterator[Callable[..., Supervisor]]:
    """Run a supervisor in a thread until the test ends; returns it once it is ready."""
    running: list[tuple[Supervisor, threading.Event, threading.Thread]] = []
    errors: list[BaseException] = []

    def start(spec: AppSpec, config: SupervisorSettings | None = None) -> Supervisor:
        supervisor = Supervisor(settings, spec, config or sup_config, clients)
        stop = threading.Event()

        def target() -> None:
            try:
                supervisor.run(stop)
            except BaseException as exc:  # surfaced by the test, not lost in the thread
                errors.append(exc)
                raise

        thread = threading.Thread(target=target, name="supervisor", daemon=True)
        thread.start()
        running.append((supervisor, stop, thread))
        wait_for(lambda: supervisor.status().ready or errors, what="the supervisor to be ready")
        assert not errors, errors
        return supervisor

    yield start
    for _, stop, thread in running:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "supervisor did not stop"
    assert not errors, errors
