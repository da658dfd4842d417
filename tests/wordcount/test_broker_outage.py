"""The whole pipeline through a 30 s broker outage: a broker of the test's own (the shared
one stays up) stopped mid-run and restarted on the same data, with WordCount's source, the
supervisor and its workers as processes, and the agent deciding.

The app starts right-sized for the default rate (10 sentences/s; splitter 2, counter 2,
sink 1: see wordcount_app/settings.py) and the agent is let decide until it has held on
it. Then the outage: every process must outlast it and resume by itself, and the agent
must not take it for slowness. What the outage leaves is a backlog of ~300 sentences the
source kept while the broker was away, which two splitters (13.3 sentences/s between them)
drain in about 90 s: no operator became slower and the rate did not change, so the rate
justifies no command. The assertion is therefore that the agent attempts none from the
moment the broker stops until a minute after it is back, while it does decide again
(holds) in that minute. Afterwards the control and acks topics must show every command
once, generations consecutive, each acked once, the supervisor must still answer a new
command, and once the source stops every sentence it produced must be counted exactly once.

The agent service runs DS2's rule, which commands only what the measured rates call for:
the LaStream policy buys headroom of its own accord (README, "Limitations": 1.2-1.3x the
minimum), and on this app it scaled the counter 2 -> 3 within a minute with no outage at
all (a control run of this test without stopping the broker), so "no command" could not
tell an outage taken for slowness from that."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from control_log import assert_each_command_once, read_all
from test_agent_service import DS2

from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.kafka.control import latest_commands
from lastream_stream.settings import KafkaSettings, LastreamSettings
from lastream_stream.supervisor.config import SupervisorSettings
from lastream_stream.wire.contracts import CommandAck, ScalingCommand
from wordcount_app.launcher import start_wordcount
from wordcount_app.settings import UPSTREAMS, WordCountSettings

from .test_closed_loop import RunningAgent, wait_for
from .test_exact_counts import assert_counted_once

OUTAGE_S = 30.0
AFTER_S = 60.0  # how long after the broker's return no command is justified
RIGHT_SIZED = {"splitter": 2, "counter": 2, "sink": 1}


def worker_pids(run_dir) -> dict[str, int]:
    """The supervisor's workers, by their pid files: name -> pid."""
    return {path.stem: json.loads(path.read_text())["pid"] for path in run_dir.glob("*.pid")}


def explain(command: ScalingCommand, agent: RunningAgent, outage_at: float, back_at: float) -> str:
    """A command with what its decision saw, per operator."""
    record = next((r for r in agent.records("command") if r.decision_id == command.decision_id), None)
    seen = (
        "; ".join(
            f"{op} x{o.parallelism} in {o.input_rate:.1f}/s true {o.true_rate_per_instance:.1f}/s "
            f"busy {o.busy_ratio:.2f} lag {o.lag} ds2 {o.ds2_parallelism}"
            for op, o in record.state.items()
        )
        if record
        else "no record"
    )
    return (
        f"generation {command.generation} {command.target}, {command.issued_at - back_at:+.0f} s after the broker's "
        f"return (outage from {outage_at - back_at:+.0f} s): {seen}; notes {record.notes if record else []}"
    )


@pytest.mark.timeout(540)
def test_a_30_s_broker_outage_mid_run_is_survived_and_not_taken_for_slowness(private_broker, supervisor_home, tmp_path):
    broker = private_broker()
    settings = LastreamSettings(kafka=KafkaSettings(bootstrap=broker.bootstrap, timeout_s=5.0))
    clients = KafkaClients(settings.kafka)
    wc = WordCountSettings(prefix=f"outage-{uuid.uuid4().hex[:8]}", metrics_interval_s=1.0, partitions=4)
    run_dir = SupervisorSettings(home=supervisor_home).run_dir(wc.app)
    pipeline = start_wordcount(settings, wc, RIGHT_SIZED, tmp_path / "logs")
    agent = RunningAgent(settings, tmp_path / "agent.pt", policy=DS2())
    try:

        def settled():
            controller = agent.service.controllers.get(wc.app)
            return controller is not None and controller.pending is None and controller.decisions >= 2

        wait_for(settled, 150, "two decisions of the agent on the right-sized app", agent)
        before = worker_pids(run_dir)
        assert len(before) == sum(RIGHT_SIZED.values()), before

        assert agent.commands() == [], "the agent did not hold on the right-sized app before the outage"
        # The outage can cost the agent its group membership: the app comes back under a new controller.
        seen = {}

        def controller():
            current = agent.service.controllers.get(wc.app)
            if current is not None:
                seen[id(current)] = current
            return current

        attempts = controller().commands  # a command the broker refused counts here, not in agent.commands()
        outage_at = time.time()
        broker.stop()
        time.sleep(OUTAGE_S)  # the fault itself lasts this long
        dead = [p.operator for p in pipeline.processes if not p.alive()]
        assert not dead, f"died during the outage: {dead}"
        broker.start()
        back_at = time.time()

        def all_report_again():
            reports = list(current.reports) if (current := controller()) is not None else []
            return set(UPSTREAMS) <= {r.operator for r in reports if r.interval_start > back_at}

        wait_for(all_report_again, 120, "every operator to report again", agent)  # Faust reconnects with backoff
        sentences = sum(clients.end_offsets([wc.sentences_topic]).values())
        wait_for(lambda: time.time() > back_at + AFTER_S, AFTER_S + 5, "the minute after the outage", agent)
        assert sum(clients.end_offsets([wc.sentences_topic]).values()) > sentences, "the source did not resume"
        assert not [p.operator for p in pipeline.processes if not p.alive()]
        after = worker_pids(run_dir)
        assert before.items() <= after.items(), f"workers restarted or lost through the outage: {before} -> {after}"
        decided = [r for r in agent.published if getattr(r, "at", 0) > back_at and r.kind != "outcome"]
        assert decided, "the agent took no decision in the minute after the outage"
        agent.halt()
        during = [c for c in agent.commands() if c.issued_at >= outage_at]
        controller()
        attempted = sum(c.commands for c in seen.values()) - attempts  # published or not

        # The supervisor still answers: the next generation, the same target.
        latest = latest_commands(clients, settings)[wc.app]
        probe = ScalingCommand(app=wc.app, generation=latest.generation + 1, target=latest.target, reason="probe")
        with clients.producer() as producer:
            producer.produce(settings.topics.control, key=wc.app.encode(), value=probe.to_bytes())
        wait_for(
            lambda: probe.generation in {a.generation for a in read_all(clients, settings.topics.acks, CommandAck)},
            30,
            "the supervisor's ack of a command sent after the outage",
        )

        # Every sentence the source produced, through the outage, counted exactly once.
        pipeline.stop_source()
        assert_counted_once(clients, wc, timeout_s=120)
    finally:
        if agent.thread.is_alive():
            agent.halt()
        pipeline.stop()

    assert_each_command_once(clients, settings.topics)
    assert not (during or attempted), (
        f"the outage was taken for slowness: {attempted} command(s) attempted from the outage to {AFTER_S:.0f} s "
        "after it:\n" + "\n".join(explain(c, agent, outage_at, back_at) for c in during)
    )
