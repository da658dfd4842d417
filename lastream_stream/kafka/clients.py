"""The one thin layer between LaStream and librdkafka.

Every producer, consumer and admin client in the project is made here, so connection
options are merged in exactly one place (``KafkaClients.config``) and every client first
proves the cluster answers, failing within ``timeout_s`` with a readable message instead
of retrying forever in the background as librdkafka would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from lastream_stream.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)
# librdkafka's own log lines (connection failures and the like) go through Python logging.
rdkafka_log = logging.getLogger("lastream.librdkafka")


# History readers only assign partitions and never commit, so they never join this group.
HISTORY_GROUP = "lastream-history-reader"
# Answers of a partition whose leader is being elected: asking again soon succeeds.
LEADERSHIP_MOVING = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE}


class BrokerUnreachable(RuntimeError):
    """The cluster did not answer a metadata request in time."""


class TopicMisconfigured(RuntimeError):
    """An existing topic lacks a configuration LaStream needs, and the broker refused to set it."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    # Held on an existing topic too: ``ensure_topics`` sets whatever differs.
    config: tuple[tuple[str, str], ...] = ()
    # Whether an existing topic with fewer partitions may be given more. Only where no reader
    # needs a key to stay on its partition: new partitions move keys.
    grow: bool = False


def project_topics(topics: TopicSettings) -> list[TopicSpec]:
    """The topics LaStream itself uses. The control topic is compacted: the latest command
    per app (its key) is the desired state a restarting supervisor rebuilds from."""
    rf = topics.replication_factor
    return [
        # Reports are samples judged by time, so a key moving to a new partition loses nothing: its
        # app moves to the agent that reads that partition, which starts it from the control topic.
        # Stamped by the broker as they arrive: what the agent times a worker's clock against.
        TopicSpec(
            topics.metrics,
            topics.metrics_partitions,
            rf,
            (("retention.ms", str(6 * 3600 * 1000)), ("message.timestamp.type", "LogAppendTime")),
            grow=True,
        ),
        TopicSpec(
            topics.control,
            topics.control_partitions,
            rf,
            (("cleanup.policy", "compact"), ("min.cleanable.dirty.ratio", "0.1"), ("segment.ms", "600000")),
        ),
        TopicSpec(topics.acks, topics.acks_partitions, rf),
        TopicSpec(topics.decisions, topics.decisions_partitions, rf),
        TopicSpec(topics.deadletter, topics.deadletter_partitions, rf),
    ]


class KafkaClients:
    """Factory of confluent-kafka clients for one cluster. Clients are created on demand
    and handed out as context managers that flush or close them on exit."""

    def __init__(self, settings: KafkaSettings | None = None) -> None:
        self.settings = settings or KafkaSettings()
        self._reachable = False

    def config(self, **overrides: object) -> dict[str, object]:
        s = self.settings
        conf: dict[str, object] = {
            "bootstrap.servers": s.bootstrap,
            "client.id": s.client_id,
            "security.protocol": s.security_protocol,
            "logger": rdkafka_log,
        }
        if s.sasl_mechanism:
            conf["sasl.mechanism"] = s.sasl_mechanism
        if s.sasl_username:
            conf["sasl.username"] = s.sasl_username
        if s.sasl_password is not None:
            conf["sasl.password"] = s.sasl_password.get_secret_value()
        conf.update(s.extra_options())
        conf.update(overrides)
        return conf

    def admin(self) -> AdminClient:
        return AdminClient(self.config())

    def metadata(self, timeout_s: float | None = None) -> ClusterMetadata:
        """Ask the cluster for its metadata; raise ``BrokerUnreachable`` after the timeout."""
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        # The probe stays quiet: when it fails, BrokerUnreachable says it once, readably.
        probe = AdminClient(self.config(log_level=0))
        try:
            md = probe.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnreachable(
                f"Kafka at {self.settings.bootstrap} did not answer within {timeout:.0f} s "
                f"({exc.args[0].str() if exc.args else exc}). Start one with `lastream kafka start` "
                "or point LASTREAM_KAFKA_BOOTSTRAP at a running cluster."
            ) from None
        self._reachable = True
        return md

    def ensure_reachable(self) -> None:
        if not self._reachable:
            self.metadata()

    @contextmanager
    def producer(self, **overrides: object) -> Iterator[Producer]:
        self.ensure_reachable()
        conf = {"linger.ms": 5, "message.timeout.ms": int(self.settings.timeout_s * 3000)}
        conf.update(overrides)
        producer = Producer(self.config(**conf))
        try:
            yield producer
        finally:
            remaining = producer.flush(self.settings.timeout_s)
            if remaining:
                log.warning("%d message(s) still unsent when the producer closed", remaining)

    def confirmed_producer(self) -> AbstractContextManager[Producer]:
        """The producer of what must reach the broker exactly once: a retry never duplicates
        a message, and the broker acknowledges one only once every replica has it. Each
        message waited for (commands, acks, dead letters) goes through
        ``wire.delivery.deliver``, on a producer that carries nothing else; messages not
        waited for one by one get a producer of their own, whose delivery reports are served."""
        return self.producer(**{"enable.idempotence": True, "acks": "all"})

    @contextmanager
    def consumer(self, group_id: str, topics: list[str] | None = None, **overrides: object) -> Iterator[Consumer]:
        self.ensure_reachable()
        conf = {
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
        }
        conf.update(overrides)
        consumer = Consumer(self.config(**conf))
        try:
            if topics:
                consumer.subscribe(topics)
            yield consumer
        finally:
            consumer.close()

    def end_offsets(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        """The high watermark of every (topic, partition) of ``topics``, as the broker reports it now."""
        metadata = self.metadata()
        deadline = time.monotonic() + self.settings.timeout_s
        with self.consumer(HISTORY_GROUP, **{"enable.auto.commit": False}) as consumer:
            return {
                (topic, p): self._high_watermark(consumer, TopicPartition(topic, p), deadline)
                for topic in topics
                for p in sorted(metadata.topics[topic].partitions)
            }

    def _high_watermark(self, consumer: Consumer, tp: TopicPartition, deadline: float) -> int:
        """Asked again while leadership settles (a broker just back up), until ``deadline``."""
        while True:
            try:
                return consumer.get_watermark_offsets(tp, timeout=self.settings.timeout_s)[1]
            except KafkaException as exc:
                if exc.args[0].code() not in LEADERSHIP_MOVING or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def read_history(self, ends: Mapping[tuple[str, int], int]) -> Iterator[Message]:
        """Every message of the given partitions from their beginning up to (not including)
        their end offsets, typically ``end_offsets`` taken before; partitions interleave in
        the order the broker delivers them. A reader resuming at ``ends`` sees the rest.

        A partition is done at its last message before its end, or when the broker says
        there is nothing more to fetch (partition EOF): the end offset itself may hold no
        message (compaction, transaction markers). Raises ``TimeoutError`` when no
        partition progresses for ``timeout_s``.
        """
        pending = {tp: end for tp, end in ends.items() if end > 0}
        if not pending:
            return
        timeout = self.settings.timeout_s
        conf = {"enable.auto.commit": False, "enable.partition.eof": True}
        with self.consumer(HISTORY_GROUP, **conf) as consumer:
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for topic, p in pending])
            deadline = time.monotonic() + timeout
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"no progress for {timeout:.0f} s reading {sorted(pending)} to their end offsets"
                    )
                msg = consumer.poll(0.2)
                if msg is None or (key := (msg.topic(), msg.partition())) not in pending:
                    continue
                error = msg.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    log.warning("reading %s [%d]: %s", *key, error)
                    continue
                end = pending[key]
                if error is not None or msg.offset() + 1 >= end:
                    del pending[key]
                if error is None and msg.offset() < end:
                    yield msg
                deadline = time.monotonic() + timeout

    def group_state(self, group_id: str) -> tuple[str, int]:
        """(state, member count) of a consumer group as the broker's coordinator sees it."""
        admin = self.admin()  # must outlive the future
        future = admin.describe_consumer_groups([group_id], request_timeout=self.settings.timeout_s)[group_id]
        description = future.result(timeout=self.settings.timeout_s)
        return description.state.name, len(description.members)

    def committed_total(self, group_id: str, topic: str) -> int:
        """Sum of the group's committed offsets over the topic's partitions (0 where none)."""
        partitions = self.metadata().topics[topic].partitions
        request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(topic, p) for p in partitions])
        admin = self.admin()  # must outlive the future
        result = admin.list_consumer_group_offsets([request])[group_id].result(timeout=self.settings.timeout_s)
        return sum(max(0, tp.offset) for tp in result.topic_partitions)

    def group_lag(self, group_id: str, topic: str) -> int:
        """Records of ``topic`` the group has not committed, over all its partitions (a
        partition it never committed on counts whole): what a lag exporter reports."""
        committed = self.committed_total(group_id, topic)  # first: the ends, asked after, only grow
        return sum(self.end_offsets([topic]).values()) - committed

    def ensure_topics(self, specs: list[TopicSpec]) -> list[str]:
        """Create the topics that do not exist yet and bring existing ones to their spec's
        configuration and, where it may grow, partition count; return the names created.
        Idempotent. Raises TopicMisconfigured when the broker refuses a needed change."""
        existing = self.metadata().topics
        self._configure([s for s in specs if s.name in existing and s.config])
        self._check_partitions([(s, len(existing[s.name].partitions)) for s in specs if s.name in existing])
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        admin = self.admin()  # must outlive the futures, or librdkafka cancels them
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, config=dict(s.config)) for s in missing],
            operation_timeout=self.settings.timeout_s,
        )
        created = []
        for name, future in futures.items():
            try:
                future.result(timeout=self.settings.timeout_s)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
        self.wait_for_topics([s.name for s in missing])
        return created

    def _configure(self, specs: list[TopicSpec]) -> None:
        """Set what differs from each spec's configuration on its existing topic: a control
        topic auto-created by a broker, or made by hand, is not compacted."""
        if not specs:
            return
        admin = self.admin()  # must outlive the futures
        resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in specs]
        described = admin.describe_configs(resources, request_timeout=self.settings.timeout_s)
        for spec, resource in zip(specs, resources, strict=True):
            current = described[resource].result(timeout=self.settings.timeout_s)
            wrong = {k: (current[k].value, v) for k, v in spec.config if current[k].value != v}
            if not wrong:
                continue
            changes = ", ".join(f"{k} was {old}, needs {new}" for k, (old, new) in wrong.items())
            entries = [
                ConfigEntry(k, new, incremental_operation=AlterConfigOpType.SET) for k, (_, new) in wrong.items()
            ]
            alter = ConfigResource(ConfigResource.Type.TOPIC, spec.name, incremental_configs=entries)
            try:
                admin.incremental_alter_configs([alter])[alter].result(timeout=self.settings.timeout_s)
            except KafkaException as exc:
                raise TopicMisconfigured(
                    f"topic {spec.name}: {changes}, and the broker refused to change it ({exc.args[0].str()}); "
                    "set it with kafka-configs.sh --alter, or grant this client AlterConfigs on the topic"
                ) from exc
            log.warning("topic %s: %s; changed", spec.name, changes)

    def _check_partitions(self, counts: list[tuple[TopicSpec, int]]) -> None:
        """Give a topic that may grow its configured partition count; report one that may not."""
        short = {spec.name: (spec, count) for spec, count in counts if count < spec.partitions}
        for spec, count in short.values():
            if not spec.grow:
                log.warning(
                    "topic %s has %d partition(s), fewer than the %d configured; left as is because more partitions "
                    "would move its keys: recreate it, or set its partitions setting to %d",
                    spec.name,
                    count,
                    spec.partitions,
                    count,
                )
        grow = [NewPartitions(spec.name, spec.partitions) for spec, _ in short.values() if spec.grow]
        if not grow:
            return
        admin = self.admin()  # must outlive the futures
        for name, future in admin.create_partitions(grow, operation_timeout=self.settings.timeout_s).items():
            future.result(timeout=self.settings.timeout_s)
            log.warning(
                "topic %s had %d partition(s): grown to the %d configured",
                name,
                short[name][1],
                short[name][0].partitions,
            )
        self.wait_for_topics([g.topic for g in grow])

    def wait_for_topics(self, names: list[str], timeout_s: float | None = None) -> None:
        """Block until every topic has leaders for all its partitions, asking the broker."""
        deadline = time.monotonic() + (timeout_s or self.settings.timeout_s)
        while True:
            md = self.metadata()
            ready = all(
                name in md.topics
                and md.topics[name].error is None
                and md.topics[name].partitions
                and all(p.leader >= 0 for p in md.topics[name].partitions.values())
                for name in names
            )
            if ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not ready: {names}")
            time.sleep(0.1)
