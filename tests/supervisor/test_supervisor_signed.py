"""The agent and a supervisor with signing keys, end to end against the real broker: a
forged command rescales nothing, the agent's signed command is applied and its signed ack
learnt from."""

import pytest
from control_log import wait_for
from test_agent_service import honest_reports, report_until_a_command, running_agent, short_windows
from test_control_auth import NEW, keyed

from lastream_stream.supervisor import AppSpec, WorkerSpec
from lastream_stream.wire.contracts import DeadLetter, ScalingCommand
from lastream_stream.wire.deadletter import parse
from lastream_stream.wire.signing import Signer


@pytest.fixture
def settings(settings):
    """Every component of these tests (the supervisor fixture's too) signs with the new key."""
    return keyed(settings, NEW)


def test_forged_commands_are_refused_and_a_signed_one_is_applied(
    settings, clients, reader, workers, supervise, acks, tmp_path
):
    spec = AppSpec(
        app="flooded",
        operators={
            "source": WorkerSpec(command=workers.command(), partitions=8, scalable=False),
            "work": WorkerSpec(command=workers.command(), partitions=8),
        },
    )
    supervisor = supervise(spec)
    forged = [
        ScalingCommand(app="flooded", generation=50, target={"work": 3}),
        Signer({"new": b"a guess"}, "new").sign(ScalingCommand(app="flooded", generation=51, target={"work": 3})),
    ]
    with clients.producer() as producer:
        for command in forged:
            producer.produce(settings.topics.control, key=b"flooded", value=command.to_bytes())
        producer.flush(10)
    letters = [parse(DeadLetter, m.value()) for m in reader(settings.topics.deadletter, len(forged))]
    assert [letter.consumer for letter in letters] == ["supervisor-flooded"] * 2
    assert "unsigned ScalingCommand" in letters[0].error and "does not match key 'new'" in letters[1].error
    assert supervisor.status().running == {"source": 1, "work": 1} and supervisor.status().generation == 0

    with running_agent(settings, short_windows(tmp_path)) as (service, published, _):
        report_until_a_command(clients, settings, published, honest_reports)
        command = next((m for m in published if isinstance(m, ScalingCommand)), None)
        assert command is not None, "the agent made no decision"
        ack = acks.until(command.generation)
        controller = service.controllers["flooded"]
        wait_for(lambda: command.decision_id in controller.acked, what="the agent to take the signed ack")
    # Dead-lettered, the forged generations count for nobody: the agent's first is 1.
    assert command.generation == 1 and command.target == {"work": 4}
    assert (ack.status, ack.applied, ack.key_id) == ("applied", {"source": 1, "work": 4}, "new")
    assert NEW.problem(ack) is None
    assert supervisor.status().running == {"source": 1, "work": 4}
