"""The control plane's topics as tests use them: commands published, acks read in order,
and what the topics hold, read back by tests that inject faults (every command once,
generations consecutive, each acknowledged once)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.settings import LastreamSettings, TopicSettings
from lastream_stream.wire.contracts import CommandAck, ScalingCommand
from lastream_stream.wire.deadletter import BadMessage, parse

APP = "demo"  # the app of the tests that do not name one


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


def wait_for(predicate: Callable[[], object], timeout_s: float = 15.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def publish(
    clients: KafkaClients, settings: LastreamSettings, *messages: ScalingCommand | bytes, key: str = APP
) -> None:
    with clients.producer() as producer:
        for message in messages:
            value = message if isinstance(message, bytes) else message.to_bytes()
            msg_key = message.app if isinstance(message, ScalingCommand) else key
            producer.produce(settings.topics.control, key=msg_key.encode(), value=value)


def command(generation: int, app: str = APP, **target: int) -> ScalingCommand:
    return ScalingCommand(app=app, generation=generation, target=target, reason="test")


class AckStream:
    """Acks in order, read from the start of the acks topic."""

    def __init__(self, consumer, topic: str) -> None:
        self.consumer = consumer
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.seen: list[CommandAck] = []

    def next(self, timeout_s: float = 20.0) -> CommandAck:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                ack = parse(CommandAck, msg.value())
                self.seen.append(ack)
                return ack
        raise AssertionError(
            f"no ack within {timeout_s} s (seen so far: {[(a.generation, a.status) for a in self.seen]})"
        )

    def until(self, generation: int, timeout_s: float = 20.0) -> CommandAck:
        """Skip to the ack of ``generation`` (the acks read on the way stay in ``seen``)."""
        while True:
            ack = self.next(timeout_s)
            if ack.generation == generation:
                return ack


class Follow:
    """Reads a topic from its start in a thread, decoding each message with ``model``."""

    def __init__(self, clients: KafkaClients, topic: str, model):
        self.items: list = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(clients, topic, model), daemon=True)
        self._thread.start()

    def _run(self, clients, topic, model):
        with clients.consumer(f"follow-{uuid.uuid4().hex[:8]}", [topic]) as consumer:
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    try:
                        self.items.append(parse(model, msg.value()))
                    except BadMessage as exc:  # kept for the failure message: the thread must go on
                        self.errors.append(str(exc))

    def wait(self, condition, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if found := [item for item in list(self.items) if condition(item)]:
                return found
            time.sleep(0.2)
        raise AssertionError(
            f"no {what} within {timeout_s:.0f} s; last seen: {self.items[-5:]}; undecodable: {self.errors[-3:]}"
        )

    def close(self):
        self._stop.set()
        self._thread.join(10)
