"""Worker processes and the files that outlive the supervisor.

In the run directory (``<home>/<app>/``):

- ``<operator>-<slot>.pid``: pid and start time of the worker in that slot. The start time
  pins the identity: a pid the kernel has handed to another process since is not adopted.
- ``<operator>.state.json``: ``{"operator", "parallelism", "desired", "generation"}``.
  ``parallelism`` is what the workers read through ``LASTREAM_WORKER_STATE`` and report:
  the workers actually running, which falls short of ``desired`` while some fail to start.
  ``desired`` is the supervisor's own record of the desired state (a compacted control
  topic keeps only the latest command, which need not name every operator).
- ``<operator>-<slot>.log``: the worker's stdout and stderr, appended across restarts and
  rotated by size (``rotate_log``), with ``.1`` ... ``.<backups>`` the older parts.
- ``supervisor.lock``: locked (``flock``) by the supervisor that owns the directory, for
  its whole life, and holding its pid; the kernel releases it when that process dies.

Workers run in their own session, so a Ctrl-C in the supervisor's terminal does not reach
them and a killed supervisor leaves them running for its successor to adopt.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from lastream_stream.supervisor.spec import WorkerSpec

log = logging.getLogger(__name__)

# What any program needs from the supervisor's environment to run (find executables and its
# interpreter, locale, time zone, temporary files, trusted CAs), and nothing that is usually
# a secret: everything else a worker gets is named by its spec.
INHERITED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "JAVA_HOME",
        "LD_LIBRARY_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "LASTREAM_HOME",
        "LASTREAM_LOG_LEVEL",
    }
)

# create_time() is derived from boot time and clock ticks: identical for the same process
# whenever it is read, so anything beyond float noise means a different process.
SAME_PROCESS_TOLERANCE_S = 0.05


class RunDirLocked(RuntimeError):
    """Another live supervisor owns the run directory."""


def write_atomically(path: Path, data: dict) -> None:
    """Readers see the old file or the new one, never a half-written one, even after a
    crash (fsync before the rename); raises OSError (a full disk) and leaves no temp file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as file:
            file.write(json.dumps(data))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def rotate_log(path: Path, max_bytes: int, backups: int) -> None:
    """Copy-truncate ``path`` once it exceeds ``max_bytes``: the worker keeps writing to the
    file it opened (in append mode, so it goes on at the new end), which a pipe through the
    supervisor could not offer a worker that outlives it. Lines written between the copy and
    the truncation are lost. Raises OSError when the copy failed
    (the log is truncated anyway: a bounded log matters more than its history)."""
    try:
        if path.stat().st_size <= max_bytes:
            return
    except FileNotFoundError:
        return
    try:
        for n in range(backups - 1, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
        if backups:
            shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    finally:
        os.truncate(path, 0)


def is_alive(process: psutil.Process) -> bool:
    """Running and not a zombie (orphans whose reaper is slow linger as zombies)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Worker:
    """One worker process in one slot. ``popen`` is None for a worker adopted from a
    previous supervisor: it is not our child, so its exit code cannot be known."""

    operator: str
    slot: int
    process: psutil.Process
    popen: subprocess.Popen | None = None

    @property
    def started_at(self) -> float:
        """Epoch seconds; known for adopted workers too, unlike anything we could record."""
        return self.process.create_time()

    @property
    def name(self) -> str:
        return f"{self.operator}-{self.slot}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None  # also reaps our child once it exits
        return is_alive(self.process)

    def exit_description(self) -> str:
        if self.popen is None:
            return "an unknown exit code (adopted process)"
        return f"exit code {self.popen.returncode}"

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.process.send_signal(sig)  # psutil refuses when the pid now belongs to another process


def spawn(operator: str, slot: int, command: list[str], env: Mapping[str, str], log_path: Path) -> Worker:
    """Start ``command`` in its own session with stdout and stderr appended to ``log_path``;
    raises OSError when it cannot be executed."""
    with open(log_path, "ab") as log_file:  # the child keeps its own copy
        popen = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(operator, slot, psutil.Process(popen.pid), popen)


def worker_env(environ: Mapping[str, str], cluster_env: Mapping[str, str], spec: WorkerSpec) -> dict[str, str]:
    """A worker's environment, least privilege: from ``environ`` (the supervisor's) only what
    a program needs to run and the names the spec passes through; then the cluster's
    connection and topics; then the spec's own ``env``, which wins."""
    inherited = {
        name: value
        for name, value in environ.items()
        if name in INHERITED or name.startswith("LC_") or name in spec.pass_env
    }
    return inherited | dict(cluster_env) | spec.env


class RunDir:
    """The supervisor's files for one app, and the workers it starts. ``cluster_env`` is what
    every worker gets to reach the cluster (``LastreamSettings.process_env``)."""

    def __init__(self, path: Path, cluster_env: Mapping[str, str]) -> None:
        self.path = path
        self.cluster_env = dict(cluster_env)
        path.mkdir(parents=True, exist_ok=True)

    def pid_file(self, operator: str, slot: int) -> Path:
        return self.path / f"{operator}-{slot}.pid"

    def log_file(self, operator: str, slot: int) -> Path:
        return self.path / f"{operator}-{slot}.log"

    def lock_file(self) -> Path:
        return self.path / "supervisor.lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Own the directory while the block runs, or raise RunDirLocked naming the pid of the
        supervisor that does: two supervisors of one app would each start every worker."""
        fd = os.open(self.lock_file(), os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by workers
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise RunDirLocked(
                    f"{self.path} is held by another supervisor (pid {holder}): one supervisor per app"
                ) from None
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
            except OSError as exc:  # a full disk: the lock holds all the same
                log.warning("cannot write the pid into %s: %s", self.lock_file(), exc)
            yield
        finally:
            os.close(fd)

    def state_file(self, operator: str) -> Path:
        return self.path / f"{operator}.state.json"

    def write_state(self, operator: str, running: int, desired: int, generation: int) -> None:
        state = {"operator": operator, "parallelism": running, "desired": desired, "generation": generation}
        write_atomically(self.state_file(operator), state)

    def read_states(self) -> dict[str, int]:
        """Desired parallelism per operator as last written; unreadable files are ignored."""
        states = {}
        for path in self.path.glob("*.state.json"):
            try:
                data = json.loads(path.read_text())
                states[str(data["operator"])] = int(data["desired"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable state file %s: %s", path, exc)
        return states

    def adopt(self) -> list[Worker]:
        """Workers a previous supervisor left running, by their pid files. Pid files of
        processes that are gone, or whose pid now belongs to another process, are removed."""
        adopted = []
        for path in sorted(self.path.glob("*.pid")):
            try:
                data = json.loads(path.read_text())
                operator, slot = str(data["operator"]), int(data["slot"])
                pid, started = int(data["pid"]), float(data["create_time"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("removing unreadable pid file %s: %s", path, exc)
                path.unlink(missing_ok=True)
                continue
            try:
                process = psutil.Process(pid)
                same = abs(process.create_time() - started) < SAME_PROCESS_TOLERANCE_S
            except psutil.NoSuchProcess:
                same = False
            if not same or not is_alive(process):
                log.info("%s-%d (pid %d) is gone: removing its stale pid file", operator, slot, pid)
                path.unlink(missing_ok=True)
                continue
            log.info("adopted %s-%d (pid %d)", operator, slot, pid)
            adopted.append(Worker(operator, slot, process))
        return adopted

    def start(self, operator: str, slot: int, spec: WorkerSpec) -> Worker:
        """Start one worker; raises OSError when its command cannot be executed or its pid
        file cannot be written (then it is killed: a worker no pid file names would never be
        adopted by a later supervisor, and run beside the one it starts)."""
        env = {
            **worker_env(os.environ, self.cluster_env, spec),
            "LASTREAM_WORKER_OPERATOR": operator,
            "LASTREAM_WORKER_INDEX": str(slot),
            "LASTREAM_WORKER_STATE": str(self.state_file(operator)),
        }
        worker = spawn(operator, slot, spec.command, env, self.log_file(operator, slot))
        # A zombie still has its create_time, so this holds even for a worker that died at once.
        record = {"operator": operator, "slot": slot, "pid": worker.pid, "create_time": worker.started_at}
        try:
            write_atomically(self.pid_file(operator, slot), record)
        except OSError:
            worker.signal(signal.SIGKILL)
            worker.popen.wait()
            raise
        return worker

    def rotate_log(self, worker: Worker, max_bytes: int, backups: int) -> None:
        path = self.log_file(worker.operator, worker.slot)
        try:
            rotate_log(path, max_bytes, backups)
        except OSError as exc:
            log.warning("%s: truncated without keeping a copy: %s", path, exc)

    def forget(self, worker: Worker) -> None:
        self.pid_file(worker.operator, worker.slot).unlink(missing_ok=True)


def stop_workers(workers: Iterable[Worker], timeout_s: float, poll_s: float = 0.05) -> dict[str, bool]:
    """SIGTERM all (in the given order), wait up to ``timeout_s`` for them together, then
    SIGKILL the rest. Returns, per worker name, whether it stopped on SIGTERM."""
    workers = list(workers)
    for worker in workers:
        worker.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    pending = [w for w in workers if w.alive()]
    while pending and time.monotonic() < deadline:
        time.sleep(poll_s)
        pending = [w for w in pending if w.alive()]
    for worker in pending:
        log.warning("%s (pid %d) ignored SIGTERM for %.0f s: killing it", worker.name, worker.pid, timeout_s)
        worker.signal(signal.SIGKILL)
    # SIGKILL cannot be ignored; this wait only lets the kernel finish and us reap.
    kill_deadline = time.monotonic() + 5.0
    while any(w.alive() for w in pending) and time.monotonic() < kill_deadline:
        time.sleep(poll_s)
    killed = {w.name for w in pending}
    return {w.name: w.name not in killed for w in workers}
