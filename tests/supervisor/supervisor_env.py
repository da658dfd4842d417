"""What the supervisor tests share besides fixtures: a tiny real worker program and the live
processes running it, and a supervisor process's environment (a module of its own, so that
test modules import it by a name no other directory's module has)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
from control_log import APP
from scrape import free_port

from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor import AppSpec, SupervisorSettings, WorkerSpec

# Records its start (with the state file it was handed) and a clean SIGTERM as marker files,
# so tests can tell a graceful stop from a kill. TEST_WORKER_* variables change its manners.
WORKER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from pathlib import Path

    out = Path(sys.argv[1])
    op, slot = os.environ["LASTREAM_WORKER_OPERATOR"], int(os.environ["LASTREAM_WORKER_INDEX"])
    if slot >= int(os.environ.get("TEST_WORKER_FAIL_FROM_SLOT", "1000")):
        sys.exit(3)
    name = f"{op}-{slot}-{os.getpid()}"

    def on_term(signum, frame):
        (out / f"{name}.stopped").write_text("SIGTERM")
        sys.exit(0)

    signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("TEST_WORKER_IGNORE_TERM") else on_term)
    state = json.loads(Path(os.environ["LASTREAM_WORKER_STATE"]).read_text())
    (out / f"{name}.started").write_text(json.dumps({"operator": op, "slot": slot, "pid": os.getpid(), "state": state}))
    while True:
        time.sleep(3600)
    """
)


class Workers:
    """The test's worker program: where it writes its markers, and the live processes
    running it, found by command line and environment, independently of the supervisor."""

    def __init__(self, tmp_path: Path) -> None:
        self.script = tmp_path / "worker.py"
        self.script.write_text(WORKER)
        self.out = tmp_path / "markers"
        self.out.mkdir()

    def command(self) -> list[str]:
        return [sys.executable, str(self.script), str(self.out)]

    def spec(self, partitions: int = 4, env: dict[str, dict[str, str]] | None = None) -> AppSpec:
        env = env or {}
        return AppSpec(
            app=APP,
            operators={
                "source": WorkerSpec(
                    command=self.command(), partitions=partitions, scalable=False, env=env.get("source", {})
                ),
                "splitter": WorkerSpec(command=self.command(), partitions=partitions, env=env.get("splitter", {})),
                "counter": WorkerSpec(command=self.command(), partitions=partitions, env=env.get("counter", {})),
            },
        )

    def live(self) -> dict[tuple[str, int], int]:
        """(operator, slot) -> pid of every live process running this test's worker script.
        Asserts there is at most one per slot: a duplicate is exactly what must never happen."""
        found = self._processes()
        duplicates = {k: v for k, v in found.items() if len(v) > 1}
        assert not duplicates, f"duplicated workers: {duplicates}"
        return {k: v[0] for k, v in found.items()}

    def _processes(self) -> dict[tuple[str, int], list[int]]:
        found: dict[tuple[str, int], list[int]] = {}
        for proc in psutil.process_iter(["cmdline", "status"]):
            try:
                if proc.info["status"] == psutil.STATUS_ZOMBIE or str(self.script) not in (proc.info["cmdline"] or []):
                    continue
                env = proc.environ()
                key = (env["LASTREAM_WORKER_OPERATOR"], int(env["LASTREAM_WORKER_INDEX"]))
            except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
                continue
            found.setdefault(key, []).append(proc.pid)
        return found

    def started(self, operator: str, slot: int, pid: int) -> dict | None:
        path = self.out / f"{operator}-{slot}-{pid}.started"
        return json.loads(path.read_text()) if path.exists() else None

    def stopped_gracefully(self, operator: str, slot: int, pid: int) -> bool:
        return (self.out / f"{operator}-{slot}-{pid}.stopped").exists()

    def kill_all(self) -> None:
        for pid in [pid for pids in self._processes().values() for pid in pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def supervisor_env(settings: LastreamSettings, config: SupervisorSettings) -> dict[str, str]:
    """The environment of a supervisor process that uses the test's topics and run directory."""
    return os.environ | {
        "LASTREAM_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
        "LASTREAM_TOPIC_CONTROL": settings.topics.control,
        "LASTREAM_TOPIC_ACKS": settings.topics.acks,
        "LASTREAM_TOPIC_DEADLETTER": settings.topics.deadletter,
        "LASTREAM_SUPERVISOR_HOME": str(config.home),
        "LASTREAM_SUPERVISOR_SETTLE_S": str(config.settle_s),
        "LASTREAM_SUPERVISOR_TICK_S": str(config.tick_s),
        "COLUMNS": "200",  # rich wraps log lines at the terminal width
        "LASTREAM_SUPERVISOR_METRICS_PORT": str(free_port()),  # never a running supervisor's
    }


def start_supervisor(args: list[str], env: dict[str, str], log_file) -> subprocess.Popen:
    """``python -m lastream_stream.supervisor`` with ``args``, its output appended to ``log_file``."""
    return subprocess.Popen(
        [sys.executable, "-m", "lastream_stream.supervisor", *args], env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
