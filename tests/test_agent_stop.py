"""Stopping the agent loses no decision record: SIGTERM (a container stop) lets the step in
progress finish and exits 0; a kill between a command and its record leaves the record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from scrape import free_port
from test_agent_service import honest_reports, report_until_a_command, running_agent, short_windows

from lastream_stream.wire.contracts import DecisionRecord, ScalingCommand


def agent_env(settings, tmp_path) -> dict[str, str]:
    topics = settings.topics
    return os.environ | {
        "LASTREAM_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
        "LASTREAM_TOPIC_METRICS": topics.metrics,
        "LASTREAM_TOPIC_CONTROL": topics.control,
        "LASTREAM_TOPIC_ACKS": topics.acks,
        "LASTREAM_TOPIC_DECISIONS": topics.decisions,
        "LASTREAM_TOPIC_DEADLETTER": topics.deadletter,
        "LASTREAM_AGENT_CHECKPOINT": str(tmp_path / "checkpoint.pt"),
        "LASTREAM_AGENT_METRICS_PORT": str(free_port()),
        "LASTREAM_CONTROLLER_WINDOW_S": "3",
        "LASTREAM_CONTROLLER_WARMUP_S": "0",
        "COLUMNS": "200",
    }


def wait_for_command(clients, settings, agent: subprocess.Popen, log_path) -> ScalingCommand:
    """Feed the app's reports every second until the agent's command is on the control topic."""
    with (
        clients.producer() as producer,
        clients.consumer(f"reader-{uuid.uuid4().hex[:8]}", [settings.topics.control]) as control,
    ):
        deadline = time.monotonic() + 90
        next_reports = 0.0
        while time.monotonic() < deadline and agent.poll() is None:
            if time.monotonic() >= next_reports:
                for payload in honest_reports(time.time()):
                    producer.produce(settings.topics.metrics, key=b"app", value=payload)
                producer.flush(10)
                next_reports = time.monotonic() + 1.0
            msg = control.poll(0.05)
            if msg is not None and msg.error() is None:
                return ScalingCommand.model_validate_json(msg.value())
    raise AssertionError(f"no command within 90 s:\n{log_path.read_text()}")


def test_sigterm_right_after_a_command_keeps_its_record_and_exits_0(settings, clients, reader, tmp_path):
    log_path = tmp_path / "agent.log"
    with open(log_path, "ab") as log_file:
        agent = subprocess.Popen(
            [sys.executable, "-m", "lastream_stream", "agent", "--no-llm"],
            env=agent_env(settings, tmp_path),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            command = wait_for_command(clients, settings, agent, log_path)
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=30) == 0, log_path.read_text()
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    records = [DecisionRecord.model_validate_json(m.value()) for m in reader(settings.topics.decisions, 1)]
    assert command.decision_id in {r.decision_id for r in records if r.kind == "command"}
    assert "agent stopped" in log_path.read_text()


def test_a_commands_record_is_published_before_the_command(settings, clients, tmp_path):
    """Each is flushed as it is published: a kill -9 between the two must leave the record."""
    with running_agent(settings, short_windows(tmp_path)) as (_, published, _thread):
        report_until_a_command(clients, settings, published, honest_reports)
    kinds = [m.kind if isinstance(m, DecisionRecord) else "the command" for m in published]
    assert "the command" in kinds
    assert kinds.index("command") < kinds.index("the command"), kinds
