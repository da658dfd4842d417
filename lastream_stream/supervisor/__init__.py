"""The worker supervisor: applies scaling commands by starting and stopping worker
processes, and acknowledges the parallelism it reached (see ``service.py``)."""

from lastream_stream.supervisor.config import SupervisorSettings
from lastream_stream.supervisor.service import Supervisor, run
from lastream_stream.supervisor.spec import AppSpec, WorkerSpec
from lastream_stream.supervisor.status import SupervisorStatus

__all__ = ["AppSpec", "Supervisor", "SupervisorSettings", "SupervisorStatus", "WorkerSpec", "run"]
