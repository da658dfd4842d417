"""Reading the desired state back from the compacted control topic."""

from __future__ import annotations

from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.wire.contracts import ScalingCommand
from lastream_stream.wire.deadletter import BadMessage, parse


def latest_commands(clients: KafkaClients, topic: str) -> dict[str, ScalingCommand]:
    """The highest-generation command per app on ``topic``, read from its start to its
    current end. Undecodable records are skipped here: their consumers dead-letter them."""
    latest: dict[str, ScalingCommand] = {}
    for msg in clients.read_history(clients.end_offsets([topic])):
        try:
            command = parse(ScalingCommand, msg.value())
        except BadMessage:
            continue
        if command.app not in latest or command.generation > latest[command.app].generation:
            latest[command.app] = command
    return latest
