"""Decoding of every message a LaStream consumer reads, with a dead-letter topic for the rest.

A message that is not JSON, carries an unknown ``schema_version`` or fails validation is
never dropped and never crashes the consumer: it is published whole (base64 payload and
key) with its source topic/partition/offset and the error to the dead-letter topic, and
the consumer moves on to the next message.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Message, Producer
from pydantic import ValidationError

from lastream_stream.wire.contracts import DeadLetter, WireMessage

log = logging.getLogger(__name__)

M = TypeVar("M", bound=WireMessage)


class BadMessage(ValueError):
    """Why a payload cannot be used. The text goes into the dead letter."""


def parse(model: type[M], payload: bytes | None) -> M:
    """Decode one JSON payload into ``model``; raise ``BadMessage`` with a readable reason."""
    if payload is None:
        raise BadMessage("empty payload (tombstone or null value)")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, 4300+ digit ints, deep nesting
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage(f"expected a JSON object, got {type(data).__name__}")
    # Absent means the current version, as the published schemas say: a producer written from them may omit it.
    version = data.get("schema_version", model.current_version())
    if version not in model.readable_versions():
        readable = ", ".join(map(str, model.readable_versions()))
        raise BadMessage(f"unknown schema_version {version!r} of {model.__name__} (this consumer reads {readable})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise BadMessage(f"invalid {model.__name__}: {reasons}") from None


def dead_letter(
    topic: str, partition: int, offset: int, key: bytes | None, payload: bytes | None, error: str, consumer: str
) -> DeadLetter:
    """The dead letter for one message: its bytes kept whole, where it came from, and why."""
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        payload_b64=base64.b64encode(payload or b"").decode(),
        error=error,
        consumer=consumer,
    )


class DeadLetterDecoder:
    """Decodes consumed messages for one consumer; sends the undecodable ones to the DLQ.

    The dead letter is flushed before ``decode`` returns, so the consumer may commit the
    offset of the bad message right after without losing it. ``on_dead_letter`` is told of
    each one written (a service's metrics count them).
    """

    def __init__(
        self,
        producer: Producer,
        deadletter_topic: str,
        consumer_name: str,
        flush_timeout_s: float = 10.0,
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
    ):
        self.producer = producer
        self.topic = deadletter_topic
        self.consumer_name = consumer_name
        self.flush_timeout_s = flush_timeout_s
        self.on_dead_letter = on_dead_letter
        self.dead_letters = 0

    def decode(self, model: type[M], msg: Message, check: Callable[[M], str | None] | None = None) -> M | None:
        """The decoded message, or None when it went to the dead-letter topic: undecodable, or
        valid but refused by ``check`` (which returns why, or None)."""
        try:
            message = parse(model, msg.value())
            if check is not None and (problem := check(message)):
                raise BadMessage(problem)
            return message
        except BadMessage as exc:
            self.send(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), str(exc))
            return None

    def send(
        self, topic: str, partition: int, offset: int, key: bytes | None, payload: bytes | None, error: str
    ) -> None:
        letter = dead_letter(topic, partition, offset, key, payload, error, self.consumer_name)
        self.producer.produce(self.topic, key=topic.encode(), value=letter.to_bytes())
        if self.producer.flush(self.flush_timeout_s):
            raise RuntimeError(f"could not write a dead letter to {self.topic} within {self.flush_timeout_s} s")
        self.dead_letters += 1
        if self.on_dead_letter is not None:
            self.on_dead_letter(letter)
        log.warning("dead-lettered %s[%d]@%d: %s", topic, partition, offset, error)
