"""Publishing one message and knowing whether the broker has it.

``flush`` returning 0 only says that the producer's queue is empty: a message the broker
refused (too large, unknown topic, not authorised) leaves it too. Only the delivery report
says the message is on the broker, so whatever must not be lost (commands, acks, dead
letters) goes through ``deliver``, from a producer made by ``KafkaClients.confirmed_producer``.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, Message, Producer


def deliver(producer: Producer, topic: str, key: bytes | None, value: bytes, timeout_s: float) -> str | None:
    """Publish one message and wait for the broker's acknowledgement: None once it has it,
    else why not. One not acknowledged within ``timeout_s`` is purged from the producer's
    queue, so that it cannot land after its sender gave up (one already in flight still may)."""
    outcome: list[KafkaError | None] = []

    def reported(error: KafkaError | None, _msg: Message) -> None:
        outcome.append(error)

    try:
        producer.produce(topic, key=key, value=value, on_delivery=reported)
    except (KafkaException, BufferError) as exc:  # refused before sending: too large for the producer, queue full
        return str(exc)
    producer.flush(timeout_s)
    if not outcome:
        producer.purge(in_queue=True, in_flight=False)
        producer.poll(0)
        return f"not acknowledged by the broker within {timeout_s:.0f} s"
    return None if outcome[0] is None else outcome[0].str()
