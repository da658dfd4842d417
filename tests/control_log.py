"""What the control plane's topics hold, read back by tests that inject faults: every
command once, generations consecutive, each acknowledged once."""

from __future__ import annotations

from collections import Counter

from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.settings import TopicSettings
from lastream_stream.wire.contracts import CommandAck, ScalingCommand
from lastream_stream.wire.deadletter import parse


def read_all(clients: KafkaClients, topic: str, model) -> list:
    """Everything on ``topic`` now, in order."""
    ends = clients.end_offsets([topic])
    return [parse(model, msg.value()) for msg in clients.read_history(ends)]


def assert_each_command_once(clients: KafkaClients, topics: TopicSettings) -> list[ScalingCommand]:
    """No command lost or duplicated: generations 1..n, no decision twice, one ack per generation."""
    commands = read_all(clients, topics.control, ScalingCommand)
    generations = [c.generation for c in commands]
    assert generations == list(range(1, len(commands) + 1)), f"generations not consecutive: {generations}"
    assert len({c.decision_id for c in commands}) == len(commands), "a decision issued twice"
    acked = Counter(a.generation for a in read_all(clients, topics.acks, CommandAck))
    assert acked == Counter(generations), f"acks per generation: {dict(acked)}; commands {generations}"
    return commands
