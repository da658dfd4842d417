"""A killed supervisor, started again, rebuilds the desired state from the control topic
and adopts the workers it left running, without duplicating any."""

import os
import signal

import yaml
from control_log import APP, command, publish, wait_for
from supervisor_env import start_supervisor, supervisor_env


def test_restarted_supervisor_adopts_workers_and_restores_parallelism(
    settings, clients, workers, acks, tmp_path, sup_config
):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(workers.spec().model_dump()))
    env = supervisor_env(settings, sup_config)
    args = ["--app", APP, "--spec", str(spec_file)]
    run_dir = sup_config.run_dir(APP)
    log_path = tmp_path / "supervisor.log"
    with open(log_path, "ab") as log_file:
        first = start_supervisor(args, env, log_file)
        second = None
        try:
            publish(clients, settings, command(1, splitter=3, counter=2))
            ack = acks.next(timeout_s=30)
            assert (ack.generation, ack.status) == (1, "applied"), log_path.read_text()
            assert ack.applied == {"source": 1, "splitter": 3, "counter": 2}
            before = workers.live()
            assert len(before) == 6
            for (op, slot), pid in before.items():
                wait_for(lambda op=op, slot=slot, pid=pid: workers.started(op, slot, pid), what=f"{op}-{slot} to start")

            first.kill()
            assert first.wait(timeout=10) == -signal.SIGKILL
            assert workers.live() == before  # the workers outlive their supervisor

            # While no supervisor runs, one worker dies and a new command arrives.
            os.kill(before[("splitter", 2)], signal.SIGKILL)
            wait_for(lambda: ("splitter", 2) not in workers.live(), what="splitter-2 to die")
            publish(clients, settings, command(2, counter=1))

            second = start_supervisor(args, env, log_file)
            ack = acks.next(timeout_s=30)
            # Generation 1 was acknowledged before: the restart acknowledges only what is new.
            assert (ack.generation, ack.status) == (2, "applied"), log_path.read_text()
            assert ack.applied == {"source": 1, "splitter": 3, "counter": 1}
            after = workers.live()  # asserts one process per slot at most
            assert sorted(after) == [("counter", 0), ("source", 0), ("splitter", 0), ("splitter", 1), ("splitter", 2)]
            for slot in [("source", 0), ("splitter", 0), ("splitter", 1), ("counter", 0)]:
                assert after[slot] == before[slot], f"{slot} was not adopted"
            assert after[("splitter", 2)] != before[("splitter", 2)]
            assert workers.stopped_gracefully("counter", 1, before[("counter", 1)])  # SIGTERM to an adopted worker
            assert sorted(p.name for p in run_dir.glob("*.pid")) == [
                "counter-0.pid",
                "source-0.pid",
                "splitter-0.pid",
                "splitter-1.pid",
                "splitter-2.pid",
            ]

            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0, log_path.read_text()
            assert workers.live() == {}
            assert list(run_dir.glob("*.pid")) == []
            assert all(workers.stopped_gracefully(op, slot, pid) for (op, slot), pid in after.items())
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
    log = log_path.read_text()
    assert f"adopted splitter-1 (pid {before[('splitter', 1)]})" in log
    assert f"splitter-2 (pid {before[('splitter', 2)]}) is gone: removing its stale pid file" in log
