"""Worker processes and pid files, with real processes and no Kafka."""

import json
import os
import time

import psutil
from control_log import wait_for

from lastream_stream.supervisor import WorkerSpec
from lastream_stream.supervisor.workers import RunDir, stop_workers


def test_start_sets_the_environment_and_a_pid_file_that_a_new_supervisor_adopts(tmp_path, workers):
    run_dir = RunDir(tmp_path / "run", {})
    run_dir.write_state("splitter", 2, 3, 7)
    worker = run_dir.start("splitter", 1, WorkerSpec(command=workers.command(), partitions=4, env={"EXTRA": "x"}))
    started = wait_for(lambda: workers.started("splitter", 1, worker.pid), what="the worker to start")
    assert started["state"] == {"operator": "splitter", "parallelism": 2, "desired": 3, "generation": 7}
    assert run_dir.read_states() == {"splitter": 3}  # the supervisor's record is the desired state
    env = psutil.Process(worker.pid).environ()
    assert env["EXTRA"] == "x" and env["LASTREAM_WORKER_STATE"] == str(run_dir.state_file("splitter"))
    assert os.getsid(worker.pid) == worker.pid  # its own session: a Ctrl-C of the supervisor does not reach it
    record = json.loads(run_dir.pid_file("splitter", 1).read_text())
    assert record["pid"] == worker.pid and record["create_time"] == psutil.Process(worker.pid).create_time()

    adopted = RunDir(tmp_path / "run", {}).adopt()
    assert [(w.operator, w.slot, w.pid, w.popen) for w in adopted] == [("splitter", 1, worker.pid, None)]
    assert adopted[0].alive()
    assert stop_workers(adopted, timeout_s=5) == {"splitter-1": True}
    assert workers.stopped_gracefully("splitter", 1, worker.pid)
    assert not adopted[0].alive()
    assert adopted[0].exit_description() == "an unknown exit code (adopted process)"
    worker.alive()  # reap our child


def test_stale_pid_files_are_removed_and_a_reused_pid_is_not_adopted(tmp_path):
    run_dir = RunDir(tmp_path / "run", {})
    me = psutil.Process()
    # A live pid that belongs to a different process than the one recorded (pid reuse).
    run_dir.pid_file("counter", 0).write_text(
        json.dumps({"operator": "counter", "slot": 0, "pid": me.pid, "create_time": me.create_time() - 3600})
    )
    # A pid that is not running at all.
    gone = psutil.Popen(["true"])
    gone.wait()
    run_dir.pid_file("counter", 1).write_text(
        json.dumps({"operator": "counter", "slot": 1, "pid": gone.pid, "create_time": time.time()})
    )
    run_dir.pid_file("counter", 2).write_text("not json")
    assert run_dir.adopt() == []
    assert list(run_dir.path.glob("*.pid")) == []
    assert me.is_running()


def test_a_worker_ignoring_sigterm_is_killed_after_the_timeout(tmp_path, workers):
    run_dir = RunDir(tmp_path / "run", {})
    run_dir.write_state("counter", 2, 2, 1)
    spec = WorkerSpec(command=workers.command(), partitions=4)
    stubborn_spec = spec.model_copy(update={"env": {"TEST_WORKER_IGNORE_TERM": "1"}})
    polite, stubborn = run_dir.start("counter", 0, spec), run_dir.start("counter", 1, stubborn_spec)
    wait_for(
        lambda: workers.started("counter", 0, polite.pid) and workers.started("counter", 1, stubborn.pid),
        what="workers",
    )
    started = time.monotonic()
    assert stop_workers([stubborn, polite], timeout_s=1.0) == {"counter-1": False, "counter-0": True}
    assert 1.0 <= time.monotonic() - started < 5
    assert stubborn.popen.returncode == -9 and polite.popen.returncode == 0
    assert workers.stopped_gracefully("counter", 0, polite.pid)
    assert not workers.stopped_gracefully("counter", 1, stubborn.pid)
    assert workers.live() == {}
