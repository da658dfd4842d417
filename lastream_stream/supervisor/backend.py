"""Where an app's workers live, behind one small protocol, so that the supervisor's cycle
(commands in, verdicts, signed acks out, generations, dead letters, start-up replay) is one
piece of code whatever runs the workers: local processes (``local.ProcessBackend``) or
Kubernetes Deployments and StatefulSets (``lastream_stream.kube.backend``)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from lastream_stream.supervisor.reconcile import AppBounds, DesiredState


class Interrupted(Exception):
    """The supervisor was stopped while its backend waited: the command is left unanswered
    for the next supervisor (or the executor that takes the Lease over) to finish and ack."""


class Backend(Protocol):
    @property
    def spec(self) -> AppBounds:
        """The app and its operators as they are now, with what bounds each one's parallelism."""
        ...

    def refresh(self) -> None:
        """Read again what the app is made of, before a command is judged against it."""
        ...

    def session(self) -> AbstractContextManager[None]:
        """Held for the supervisor's whole life: take ownership (a lock), adopt what runs."""
        ...

    def recorded(self) -> dict[str, int]:
        """The desired parallelism the backend itself last recorded, per operator (maybe none)."""
        ...

    def reconcile(self, state: DesiredState) -> list[str]:
        """Make the running instances match ``state`` and wait until the new ones are ready
        (or a bound on that wait passed); returns what went wrong, for the ack."""
        ...

    def supervise(self, state: DesiredState) -> None:
        """Between commands: keep ``state`` (restart crashed workers, notice changes)."""
        ...

    def running(self) -> dict[str, int]:
        """Instances running and ready, per operator: what an ack reports as applied."""
        ...

    def workers(self) -> dict[str, dict[int, int]]:
        """Operator -> slot -> pid of local worker processes; empty where the backend has none."""
        ...

    def restarts(self) -> dict[str, int]:
        """Crashed workers this supervisor restarted, per operator."""
        ...

    def shutdown(self, stop_workers: bool) -> None:
        """The supervisor exits cleanly: stop the workers if asked and the backend owns them."""
        ...
