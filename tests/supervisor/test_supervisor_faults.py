"""Faults around the supervisor: its own errors, a broker that is not there yet, a full disk,
a second supervisor for the same app, a worker that floods its log. Real processes, the real
broker (reached late through a TCP forwarder), a real full filesystem (a small tmpfs)."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from control_log import APP, command, publish, wait_for
from full_disk import fill, small_tmpfs
from scrape import free_port
from supervisor_env import start_supervisor, supervisor_env

from lastream_stream.kafka.clients import BrokerUnreachable
from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor import AppSpec, Supervisor, WorkerSpec
from lastream_stream.supervisor.service import wait_for_broker
from lastream_stream.supervisor.workers import RunDir, RunDirLocked


def unreachable(settings: LastreamSettings, port: int) -> LastreamSettings:
    kafka = settings.kafka.model_copy(update={"bootstrap": f"127.0.0.1:{port}", "timeout_s": 1.0})
    return settings.model_copy(update={"kafka": kafka})


def run_in_thread(supervisor: Supervisor, stop: threading.Event) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            supervisor.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="supervisor", daemon=True)
    thread.start()
    return thread, errors


class Forwarder:
    """A local port that forwards to the real broker once opened: a broker that comes up late.
    The broker's metadata names its own address, so only bootstrapping goes through here."""

    def __init__(self, port: int, target: str) -> None:
        host, target_port = target.rsplit(":", 1)
        self.port, self.target = port, (host, int(target_port))
        self.server: socket.socket | None = None

    def open(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target)
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
def full_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, to be filled: what a run directory on a full disk sees."""
    with small_tmpfs(tmp_path / "full", "64k") as mount:
        yield mount


def test_the_broker_wait_backs_off_until_the_probe_answers(caplog):
    answers = iter([BrokerUnreachable("down"), BrokerUnreachable("still down"), None])

    def probe() -> None:
        answer = next(answers)
        if answer is not None:
            raise answer

    with caplog.at_level(logging.WARNING, "lastream_stream.supervisor.service"):
        assert wait_for_broker(probe, threading.Event(), initial_s=0.01, max_s=0.015)
    assert [r.getMessage() for r in caplog.records] == [
        "Kafka unreachable (attempt 1): down; retrying in 0.01 s",
        "Kafka unreachable (attempt 2): still down; retrying in 0.015 s",  # 0.02, capped
    ]
    stopped = threading.Event()
    stopped.set()
    assert not wait_for_broker(probe, stopped, initial_s=0.01, max_s=0.01)  # a deliberate stop ends the wait


def test_a_supervisor_error_leaves_its_workers_running(settings, clients, workers, sup_config, caplog):
    spec = workers.spec()
    run_dir = RunDir(sup_config.run_dir(APP), {})
    run_dir.write_state("splitter", 1, 1, 0)
    worker = run_dir.start("splitter", 0, spec.operators["splitter"])
    wait_for(lambda: workers.started("splitter", 0, worker.pid), what="the worker to start")
    # A control topic that does not exist fails the start-up after the worker was adopted.
    broken = settings.model_copy(update={"topics": settings.topics.model_copy(update={"control": "t-missing"})})
    with pytest.raises(RuntimeError, match="control topic 't-missing' does not exist"):
        Supervisor(broken, spec, sup_config, clients).run(threading.Event())
    assert workers.live() == {("splitter", 0): worker.pid}
    assert not workers.stopped_gracefully("splitter", 0, worker.pid)
    assert "leaving 1 worker(s) running; a restarted supervisor adopts them" in caplog.text
    worker.alive()  # reap


def test_a_supervisor_started_before_the_broker_waits_for_it(settings, clients, workers, sup_config, acks, caplog):
    port = free_port()
    supervisor = Supervisor(unreachable(settings, port), workers.spec(), sup_config)
    stop = threading.Event()
    forwarder = Forwarder(port, settings.kafka.bootstrap)
    with caplog.at_level(logging.WARNING, "lastream_stream.supervisor.service"):
        thread, errors = run_in_thread(supervisor, stop)
        try:
            wait_for(lambda: "Kafka unreachable (attempt 2)" in caplog.text or errors, what="a second attempt")
            assert not errors and thread.is_alive()
            assert not supervisor.status().ready and workers.live() == {}
            forwarder.open()
            wait_for(lambda: supervisor.status().ready or errors, timeout_s=60, what="the supervisor to be ready")
            assert not errors
            publish(clients, settings, command(1, splitter=2))
            ack = acks.next(timeout_s=30)
            assert (ack.generation, ack.status, ack.applied) == (
                1,
                "applied",
                {"source": 1, "splitter": 2, "counter": 1},
            )
        finally:
            stop.set()
            thread.join(timeout=30)
            forwarder.close()
    assert not thread.is_alive() and not errors
    assert workers.live() == {}  # a deliberate stop stops them


def test_sigterm_while_waiting_for_the_broker_exits_cleanly(settings, workers, tmp_path, sup_config):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(workers.spec().model_dump()))
    env = supervisor_env(unreachable(settings, free_port()), sup_config) | {"LASTREAM_KAFKA_TIMEOUT_S": "1"}
    log_path = tmp_path / "supervisor.log"
    with open(log_path, "ab") as log_file:
        supervisor = start_supervisor(["--spec", str(spec_file)], env, log_file)
        try:
            wait_for(lambda: "Kafka unreachable (attempt 2)" in log_path.read_text(), what="a second attempt")
            assert supervisor.poll() is None, log_path.read_text()
            supervisor.send_signal(signal.SIGTERM)
            assert supervisor.wait(timeout=10) == 0, log_path.read_text()
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
                supervisor.wait()


def test_a_worker_whose_pid_file_cannot_be_written_is_not_left_running(full_fs, workers):
    # Processes the session already runs (the Kubernetes tests' control plane) are not this test's.
    before = {child.pid for child in psutil.Process().children()}
    run_dir = RunDir(full_fs / "run", {})
    run_dir.write_state("splitter", 1, 1, 0)  # the worker reads it at start-up
    fill(full_fs)
    with pytest.raises(OSError, match="No space left on device"):
        run_dir.start("splitter", 0, WorkerSpec(command=workers.command(), partitions=4))
    assert workers.live() == {}  # killed, not running untracked
    assert not any(p.name.endswith(".tmp") for p in run_dir.path.iterdir())
    left = [c for c in psutil.Process().children() if c.status() != psutil.STATUS_ZOMBIE and c.pid not in before]
    assert left == []


def test_a_second_supervisor_for_the_same_app_refuses_to_start(settings, clients, workers, acks, tmp_path, sup_config):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(workers.spec().model_dump()))
    env = supervisor_env(settings, sup_config)
    log_path = tmp_path / "supervisor.log"
    with open(log_path, "ab") as log_file:
        first = start_supervisor(["--spec", str(spec_file)], env, log_file)
        try:
            publish(clients, settings, command(1, splitter=2))
            assert acks.next(timeout_s=30).status == "applied", log_path.read_text()
            before = workers.live()
            second = subprocess.run(
                [sys.executable, "-m", "lastream_stream.supervisor", "--spec", str(spec_file)],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert second.returncode == 2, second.stderr
            assert f"held by another supervisor (pid {first.pid})" in second.stderr
            assert workers.live() == before
            first.kill()  # kill -9 leaves no stale lock behind
            first.wait()
            supervisor = Supervisor(settings, workers.spec(), sup_config, clients)
            stop = threading.Event()
            thread, errors = run_in_thread(supervisor, stop)
            wait_for(lambda: supervisor.status().ready or errors, what="the third supervisor to be ready")
            assert not errors
            assert workers.live() == before  # adopted
            with pytest.raises(RunDirLocked, match=f"pid {psutil.Process().pid}"):
                Supervisor(settings, workers.spec(), sup_config, clients).run(threading.Event())
            stop.set()
            thread.join(timeout=30)
            assert not errors and workers.live() == {}
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()


FLOODER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    for i in range(400):
        print(f"{i:05d} " + "x" * 994, flush=True)
        time.sleep(0.005)
    print("done", flush=True)
    Path(sys.argv[1]).write_text("done")
    time.sleep(3600)
    """
)


def test_worker_logs_are_size_bounded(settings, supervise, sup_config, workers, tmp_path):
    script, done = tmp_path / "flooder.py", tmp_path / "flooder.done"
    script.write_text(FLOODER)
    spec = AppSpec(
        app=APP, operators={"noisy": WorkerSpec(command=[sys.executable, str(script), str(done)], partitions=1)}
    )
    config = sup_config.model_copy(update={"log_max_bytes": 20_000, "log_backups": 2})
    supervisor = supervise(spec, config)
    wait_for(done.exists, timeout_s=30, what="the worker to write 400 KB")
    log_file = supervisor.backend.run_dir.log_file("noisy", 0)
    wait_for(lambda: log_file.stat().st_size <= config.log_max_bytes, what="the last rotation")
    logs = sorted(log_file.parent.glob("noisy-0.log*"))
    assert [p.name for p in logs] == ["noisy-0.log", "noisy-0.log.1", "noisy-0.log.2"]
    assert sum(p.stat().st_size for p in logs) <= 2 * 3 * config.log_max_bytes  # 400 KB were written
    # The newest lines are kept (in the current file, unless a rotation came after them).
    assert (logs[1].read_text() + log_file.read_text()).endswith("done\n")


def test_a_supervisor_on_a_full_disk_stays_up_and_leaves_no_untracked_worker(
    settings, clients, workers, acks, supervise, sup_config, full_fs
):
    config = sup_config.model_copy(update={"home": full_fs / "run"})
    supervisor = supervise(workers.spec(), config)
    before = workers.live()
    assert sorted(before) == [("counter", 0), ("source", 0), ("splitter", 0)]
    fill(full_fs)
    publish(clients, settings, command(1, splitter=3))
    ack = acks.next(timeout_s=30)
    assert ack.status == "partial" and ack.applied == {"source": 1, "splitter": 1, "counter": 1}
    assert "splitter-1 could not be started" in (ack.error or ""), ack.error
    assert workers.live() == before  # no worker runs without a pid file
    (full_fs / "filler").unlink()  # space again: the backoff restarts reach the target
    wait_for(lambda: len(workers.live()) == 5, what="the splitters to start")
    assert supervisor.status().running == {"source": 1, "splitter": 3, "counter": 1}
    assert supervisor.backend.run_dir.read_states()["splitter"] == 3
