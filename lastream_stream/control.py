"""Reading the desired state back from the compacted control topic."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from lastream_stream.contracts import ScalingCommand
from lastream_stream.deadletter import BadMessage, parse
from lastream_stream.kafka_clients import KafkaClients


def latest_commands(clients: KafkaClients, topic: str) -> dict[str, ScalingCommand]:
    """The highest-generation command per app on ``topic``, read from its start to its
    current end. Undecodable records are skipped here: their consumers dead-letter them."""
    partitions = clients.metadata().topics[topic].partitions
    latest: dict[str, ScalingCommand] = {}
    with clients.consumer(f"lastream-control-reader-{time.time_ns()}", **{"enable.auto.commit": False}) as consumer:
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=clients.settings.timeout_s)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + 3 * clients.settings.timeout_s
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
            try:
                command = parse(ScalingCommand, msg.value())
            except BadMessage:
                continue
            if command.app not in latest or command.generation > latest[command.app].generation:
                latest[command.app] = command
        if ends:
            raise TimeoutError(f"could not read {topic} to its end")
    return latest
