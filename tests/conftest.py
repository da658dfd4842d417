"""Shared fixtures. Kafka tests use the real broker: the one named by
LASTREAM_KAFKA_BOOTSTRAP, or the project's local KRaft broker, started here when needed."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from chat_server import ChatServer
from confluent_kafka import Consumer, Message
from control_log import AckStream, Follow
from scrape import free_port

from lastream_stream.kafka.broker import LocalBroker, MissingTool
from lastream_stream.kafka.clients import KafkaClients, TopicSpec, project_topics
from lastream_stream.settings import BrokerSettings, KafkaSettings, LastreamSettings, TopicSettings


@pytest.fixture(scope="session")
def kafka_settings() -> KafkaSettings:
    bootstrap = os.environ.get("LASTREAM_KAFKA_BOOTSTRAP")
    if not bootstrap:
        try:
            bootstrap = LocalBroker().start().bootstrap
        except (MissingTool, RuntimeError) as exc:
            pytest.fail(f"cannot start the local Kafka broker: {exc}", pytrace=False)
    settings = KafkaSettings(bootstrap=bootstrap, timeout_s=15.0)
    KafkaClients(settings).metadata()
    return settings


@pytest.fixture
def private_broker(tmp_path) -> Iterator[Callable[[], LocalBroker]]:
    """Factory of started brokers of the test's own (free ports, data under ``tmp_path``), for
    tests that stop and restart a broker: the shared one at ``kafka_settings`` stays up for the
    other tests. All are stopped at the end."""
    shared = LocalBroker()
    started: list[LocalBroker] = []

    def make() -> LocalBroker:
        home = tmp_path / f"broker-{len(started)}"
        home.mkdir()
        settings = BrokerSettings(home=home, port=free_port(), controller_port=free_port(), heap="384m")
        broker = LocalBroker(settings)
        try:
            shared.resolve_jars()
            # The jars are shared (read-only); the config, data and log are the test's own.
            broker.libs.parent.symlink_to(shared.libs.parent, target_is_directory=True)
            started.append(broker)
            broker.start()
        except (MissingTool, RuntimeError) as exc:
            pytest.fail(f"cannot start a private Kafka broker on {broker.bootstrap}: {exc}", pytrace=False)
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    """A real OpenAI-compatible HTTP server on 127.0.0.1, answering what the test queues."""
    server = ChatServer()
    yield server
    server.close()


@pytest.fixture
def clients(kafka_settings: KafkaSettings) -> KafkaClients:
    return KafkaClients(kafka_settings)


@pytest.fixture
def settings(kafka_settings: KafkaSettings, clients: KafkaClients) -> LastreamSettings:
    """Settings whose project topics are fresh per test, created on the broker."""
    tag = uuid.uuid4().hex[:10]
    topics = TopicSettings(
        metrics=f"t-{tag}.metrics",
        control=f"t-{tag}.control",
        acks=f"t-{tag}.acks",
        decisions=f"t-{tag}.decisions",
        deadletter=f"t-{tag}.deadletter",
    )
    clients.ensure_topics(project_topics(topics))
    return LastreamSettings(kafka=kafka_settings, topics=topics)


@pytest.fixture
def make_topic(clients: KafkaClients) -> Callable[..., str]:
    def make(partitions: int = 1, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        clients.ensure_topics([TopicSpec(name, partitions)])
        return name

    return make


@pytest.fixture
def group_id() -> str:
    return f"g-{uuid.uuid4().hex[:12]}"


def consume(clients: KafkaClients, topic: str, count: int, timeout_s: float = 30.0) -> list[Message]:
    """Read ``count`` messages of ``topic`` from the beginning (fresh group), or fail on timeout."""
    messages: list[Message] = []
    with clients.consumer(f"reader-{uuid.uuid4().hex[:8]}", [topic]) as consumer:
        deadline = time.monotonic() + timeout_s
        while len(messages) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                messages.append(msg)
    assert len(messages) >= count, f"only {len(messages)} of {count} message(s) arrived on {topic} in {timeout_s} s"
    return messages


@pytest.fixture
def reader(clients: KafkaClients) -> Callable[..., list[Message]]:
    return lambda topic, count, timeout_s=30.0: consume(clients, topic, count, timeout_s)


@pytest.fixture
def consumer_factory(clients: KafkaClients) -> Iterator[Callable[..., Consumer]]:
    opened = []

    def make(group: str, topics: list[str], **overrides: object) -> Consumer:
        cm = clients.consumer(group, topics, **overrides)
        opened.append(cm)
        return cm.__enter__()

    yield make
    for cm in opened:
        cm.__exit__(None, None, None)


@pytest.fixture
def acks(clients: KafkaClients, settings: LastreamSettings, group_id: str) -> Iterator[AckStream]:
    with clients.consumer(group_id, **{"enable.auto.commit": False}) as consumer:
        yield AckStream(consumer, settings.topics.acks)


@pytest.fixture
def follow(clients):
    made = []

    def make(topic, model) -> Follow:
        made.append(Follow(clients, topic, model))
        return made[-1]

    yield make
    for f in made:
        f.close()
