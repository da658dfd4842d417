"""kill -9 of the agent right after its command, then of the supervisor while it reconciles
that command: real agent and supervisor processes, real worker processes, the real broker.
Whatever was killed, no worker runs twice, no command is issued twice, the generations go
on, the restarted supervisor adopts its workers and answers the command once, and the
restarted agent decides again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import yaml
from control_log import APP, assert_each_command_once, command, publish, read_all, wait_for
from factories import sample_report
from supervisor_env import Workers, supervisor_env
from test_agent_stop import agent_env

from lastream_stream.supervisor import SupervisorSettings
from lastream_stream.supervisor.workers import RunDir
from lastream_stream.wire.contracts import CommandAck, DecisionRecord, ScalingCommand
from lastream_stream.wire.signing import Signer

SOURCE_RATE = 100  # records/s
SPLITTER_RATE = 30  # records one splitter processes per useful second: DS2 wants 4
COUNTER_RATE = 400  # one counter is plenty
KEY = "a test's signing secret"


class HonestApp:
    """Publishes, every second, the reports the live worker processes would send: the
    splitters share the source's rate, each at most SPLITTER_RATE, with a growing lag
    while they fall short."""

    def __init__(self, clients, settings, workers: Workers) -> None:
        self.clients, self.settings, self.workers = clients, settings, workers
        self.stop = threading.Event()
        self.lag = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.clients.producer() as producer:
            while not self.stop.wait(1.0):
                for report in self.reports(time.time()):
                    producer.produce(self.settings.topics.metrics, key=APP.encode(), value=report.to_bytes())
                producer.flush(10)

    def reports(self, now: float) -> list:
        live = Counter(op for op, _ in self.workers.live())
        splitters = max(live["splitter"], 1)
        each = int(min(SOURCE_RATE / splitters, SPLITTER_RATE))
        self.lag = max(self.lag + SOURCE_RATE - each * splitters, 0)
        common = dict(app=APP, interval_end=now, interval_s=1.0)
        reports = [
            sample_report(
                **common,
                operator="source",
                instance_id="source-0",
                records_in=SOURCE_RATE,
                records_out=SOURCE_RATE,
                useful_time_s=0.1,
                lag=None,
                upstreams=[],
                input_partitions=None,
                parallelism=1,
            ),
            sample_report(
                **common,
                operator="counter",
                instance_id="counter-0",
                records_in=each * splitters,
                records_out=each * splitters,
                useful_time_s=each * splitters / COUNTER_RATE,
                lag=0,
                upstreams=["splitter"],
                input_partitions=4,
                parallelism=1,
            ),
        ]
        for slot in range(splitters):
            reports.append(
                sample_report(
                    **common,
                    operator="splitter",
                    instance_id=f"splitter-{slot}",
                    records_in=each,
                    records_out=each,
                    useful_time_s=each / SPLITTER_RATE,
                    lag=self.lag // splitters,
                    upstreams=["source"],
                    input_partitions=4,
                    parallelism=splitters,
                )
            )
        return reports

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(15)


def pid_files(run_dir: RunDir) -> dict[tuple[str, int], int]:
    """(operator, slot) -> pid as the supervisor records them (read, not adopted: no side effect)."""
    records = [json.loads(path.read_text()) for path in run_dir.path.glob("*.pid")]
    return {(r["operator"], r["slot"]): r["pid"] for r in records}


def start(args: list[str], env: dict[str, str], log_path) -> subprocess.Popen:
    with open(log_path, "ab") as log_file:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, env=env, stdout=log_file, stderr=subprocess.STDOUT)


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_kill_9_of_the_agent_after_a_command_and_of_the_supervisor_mid_reconcile(
    settings, clients, workers, tmp_path, signed
):
    # A settle long enough to kill the supervisor between starting the new workers and acking.
    config = SupervisorSettings(home=tmp_path / "run", settle_s=6.0, tick_s=0.05, stop_timeout_s=5.0)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(workers.spec().model_dump()))
    sup_args = [sys.executable, "-m", "lastream_stream.supervisor", "--spec", str(spec_file)]
    # Signed, the restarted agent awaits its replayed command; unsigned, it cannot tell it is its own and observes.
    keys = {"LASTREAM_CONTROL_KEYS": json.dumps({"k1": KEY}), "LASTREAM_CONTROL_SIGNING_KEY_ID": "k1"} if signed else {}
    sup_env = supervisor_env(settings, config) | keys
    agent_args = [sys.executable, "-m", "lastream_stream", "agent", "--no-llm"]
    env = agent_env(settings, tmp_path) | keys
    run_dir = RunDir(config.run_dir(APP), {})

    initial = command(1, source=1, splitter=1, counter=1)
    publish(clients, settings, Signer({"k1": KEY.encode()}, "k1").sign(initial) if signed else initial)
    procs: list[subprocess.Popen] = [start(sup_args, sup_env, tmp_path / "supervisor-1.log")]
    app = None
    try:
        wait_for(lambda: len(read_all(clients, settings.topics.acks, CommandAck)) == 1, 60, "the ack of generation 1")
        app = HonestApp(clients, settings, workers)
        procs.append(start(agent_args, env, tmp_path / "agent-1.log"))

        # The agent's command on the broker: kill -9 at once.
        first = wait_for(
            lambda: [c for c in read_all(clients, settings.topics.control, ScalingCommand) if c.generation >= 2],
            90,
            "the agent's first command",
        )[0]
        kill9(procs[1])
        assert first.generation == 2 and first.target["splitter"] > 1, first

        # The supervisor started the new splitters and waits for them to settle: kill -9 before it acks.
        wait_for(lambda: len(workers.live()) > 3, 30, "the new splitters to start")
        kill9(procs[0])
        acks = read_all(clients, settings.topics.acks, CommandAck)
        assert [a.generation for a in acks] == [1], "the supervisor acked before it was killed: not mid-reconcile"
        orphans = workers.live()  # the workers outlive their supervisor

        # The agent comes back first (its command unanswered), then the supervisor.
        restarted_at = time.time()
        procs.append(start(agent_args, env, tmp_path / "agent-2.log"))
        wait_for(
            lambda: "now scaling app" in (tmp_path / "agent-2.log").read_text() or procs[2].poll() is not None,
            90,
            "the restarted agent to replay the control topic",
        )
        procs.append(start(sup_args, sup_env, tmp_path / "supervisor-2.log"))
        wait_for(
            lambda: [a for a in read_all(clients, settings.topics.acks, CommandAck) if a.generation == 2],
            60,
            "the restarted supervisor's ack of generation 2",
        )

        def decided_again():
            return [
                r
                for r in read_all(clients, settings.topics.decisions, DecisionRecord)
                if r.at > restarted_at and r.kind != "outcome"
            ]

        wait_for(lambda: len(decided_again()) >= 2, 90, "two decisions of the restarted agent")

        def all_acked():
            commands = read_all(clients, settings.topics.control, ScalingCommand)
            return {c.generation for c in commands} <= {
                a.generation for a in read_all(clients, settings.topics.acks, CommandAck)
            }

        wait_for(all_acked, 60, "every command acked")
        # One process per slot (live() asserts it), each one the supervisor tracks by its pid file.
        live = workers.live()
        assert pid_files(run_dir) == live, f"pid files {pid_files(run_dir)} vs live workers {live}"
        last = read_all(clients, settings.topics.acks, CommandAck)[-1]
        assert Counter(op for op, _ in live) == Counter(last.applied), f"running {live} vs last ack {last}"
        for proc, name in zip(procs[2:], ("agent-2", "supervisor-2"), strict=True):
            assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        if app is not None:
            app.halt()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    assert_each_command_once(clients, settings.topics)

    if signed:
        assert f"{APP}: generation 2 applied" in (tmp_path / "agent-2.log").read_text()
    supervisor_log = (tmp_path / "supervisor-2.log").read_text()
    assert f"{len(orphans)} worker(s) adopted" in supervisor_log, supervisor_log[-3000:]
    assert "(restart #" not in supervisor_log  # adopted, not started again
