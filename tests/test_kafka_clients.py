import logging
import time
import uuid

import pytest
from confluent_kafka.admin import ConfigResource

from lastream_stream.kafka.broker import LocalBroker
from lastream_stream.kafka.clients import BrokerUnreachable, KafkaClients, TopicMisconfigured, TopicSpec, project_topics
from lastream_stream.settings import BrokerSettings, KafkaSettings, LastreamSettings, TopicSettings


def test_unreachable_bootstrap_fails_fast_with_a_readable_message():
    clients = KafkaClients(KafkaSettings(bootstrap="127.0.0.1:1", timeout_s=2.0))
    started = time.monotonic()
    with (
        pytest.raises(BrokerUnreachable, match=r"127\.0\.0\.1:1 did not answer within 2 s.*lastream kafka start"),
        clients.producer(),
    ):
        pass
    assert time.monotonic() - started < 6


def test_secrets_reach_librdkafka_but_not_the_repr():
    settings = KafkaSettings(sasl_username="u", sasl_password="hunter2", sasl_mechanism="PLAIN")
    assert KafkaClients(settings).config()["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(settings)


def test_secrets_in_extra_options_reach_librdkafka_but_not_reprs_dumps_or_logs(caplog):
    secrets = {
        "ssl.key.password": "pw-key",
        "ssl.keystore.password": "pw-keystore",
        "sasl.oauthbearer.client.secret": "oauth-secret",
        "ssl.key.pem": "-----BEGIN PRIVATE KEY-----xyz",
        "sasl.oauthbearer.config": "clientSecret=oauth-config",
        "custom.token": "t0k3n-value",
    }
    settings = LastreamSettings(kafka=KafkaSettings(extra={**secrets, "ssl.ca.location": "/ca.pem", "linger.ms": 5}))
    logging.getLogger("test").warning("settings: %s / %r", settings, settings.kafka)
    shown = [repr(settings), str(settings.kafka), settings.model_dump_json(), str(settings.model_dump()), caplog.text]
    for value in secrets.values():
        assert not [text for text in shown if value in text], value
    assert "/ca.pem" in repr(settings)  # options that are not secrets stay readable

    config = KafkaClients(settings.kafka).config()
    assert {key: config[key] for key in secrets} == secrets
    assert (config["ssl.ca.location"], config["linger.ms"]) == ("/ca.pem", 5)


def test_topics_ensure_is_idempotent_and_compacts_control(clients):
    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(
        metrics=f"m-{tag}",
        control=f"c-{tag}",
        acks=f"a-{tag}",
        decisions=f"d-{tag}",
        deadletter=f"x-{tag}",
        metrics_partitions=3,
    )
    specs = project_topics(topics)
    assert sorted(clients.ensure_topics(specs)) == sorted(s.name for s in specs)
    assert clients.ensure_topics(specs) == []
    md = clients.metadata()
    assert len(md.topics[f"m-{tag}"].partitions) == 3
    admin = clients.admin()
    resource = ConfigResource(ConfigResource.Type.TOPIC, f"c-{tag}")
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["cleanup.policy"].value == "compact"


def fresh_topics(**partitions: int) -> TopicSettings:
    tag = uuid.uuid4().hex[:10]
    names = {kind: f"{kind[:3]}-{tag}" for kind in ("metrics", "control", "acks", "decisions", "deadletter")}
    return TopicSettings(**names, **partitions)


def topic_config(clients: KafkaClients, topic: str) -> dict[str, str]:
    admin = clients.admin()
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return {k: e.value for k, e in admin.describe_configs([resource])[resource].result(timeout=10).items()}


def test_topics_ensure_compacts_a_control_topic_that_exists_uncompacted(clients, caplog):
    # As the broker's auto-creation, or a hand-made topic, leaves it: deleted, never compacted.
    topics = fresh_topics()
    clients.ensure_topics([TopicSpec(topics.control, 1)])
    assert topic_config(clients, topics.control)["cleanup.policy"] == "delete"

    with caplog.at_level(logging.WARNING, logger="lastream_stream.kafka.clients"):
        created = clients.ensure_topics(project_topics(topics))

    assert topics.control not in created
    assert topic_config(clients, topics.control)["cleanup.policy"] == "compact"
    assert any(topics.control in r.getMessage() and "cleanup.policy" in r.getMessage() for r in caplog.records)


def test_topics_ensure_refuses_with_the_reason_when_the_broker_rejects_the_repair(clients):
    name = f"r-{uuid.uuid4().hex[:10]}"
    clients.ensure_topics([TopicSpec(name, 1)])
    with pytest.raises(TopicMisconfigured, match=rf"{name}.*cleanup.policy.*delete.*bogus"):
        clients.ensure_topics([TopicSpec(name, 1, config=(("cleanup.policy", "bogus"),))])


def test_topics_ensure_grows_the_metrics_topic_but_never_repartitions_the_control_topic(clients, caplog):
    topics = fresh_topics(metrics_partitions=3, control_partitions=2)
    clients.ensure_topics([TopicSpec(topics.metrics, 1), TopicSpec(topics.control, 1)])

    with caplog.at_level(logging.WARNING, logger="lastream_stream.kafka.clients"):
        clients.ensure_topics(project_topics(topics))

    md = clients.metadata()
    assert len(md.topics[topics.metrics].partitions) == 3
    # Keyed by app: more partitions would move an app's commands and split its compacted history.
    assert len(md.topics[topics.control].partitions) == 1
    warnings = [m for r in caplog.records if topics.control in (m := r.getMessage()) and "partition" in m]
    assert len(warnings) == 1 and "1 partition(s), fewer than the 2 configured" in warnings[0]


def test_the_local_broker_does_not_create_topics_on_first_use(tmp_path):
    broker = LocalBroker(BrokerSettings(home=tmp_path))
    broker.run_dir.mkdir(parents=True)
    lines = broker._write_config().read_text().splitlines()
    assert "auto.create.topics.enable=false" in lines


def test_read_history_reads_every_partition_up_to_the_end_offsets_taken_before(clients, make_topic):
    topic = make_topic(partitions=3)
    with clients.producer() as producer:
        for i in range(5):
            producer.produce(topic, value=f"old-{i}".encode(), partition=i % 2)  # partition 2 stays empty
    ends = clients.end_offsets([topic])
    assert ends == {(topic, 0): 3, (topic, 1): 2, (topic, 2): 0}
    with clients.producer() as producer:
        for p in range(3):
            producer.produce(topic, value=b"new", partition=p)

    read = [(m.partition(), m.offset(), m.value()) for m in clients.read_history(ends)]
    assert sorted(read) == [(0, 0, b"old-0"), (0, 1, b"old-2"), (0, 2, b"old-4"), (1, 0, b"old-1"), (1, 1, b"old-3")]
    assert list(clients.read_history({(topic, 2): 0})) == []


def test_read_history_ends_a_partition_whose_end_offset_holds_no_message(clients, make_topic):
    """A transaction's commit marker takes the last offset; no message is ever delivered there."""
    topic = make_topic()
    with clients.producer(**{"transactional.id": f"tx-{topic}"}) as producer:
        producer.init_transactions(clients.settings.timeout_s)
        producer.begin_transaction()
        producer.produce(topic, value=b"a")
        producer.produce(topic, value=b"b")
        producer.commit_transaction(clients.settings.timeout_s)
    # The coordinator writes the marker after the commit returns.
    deadline = time.monotonic() + 10
    while (ends := clients.end_offsets([topic])) != {(topic, 0): 3} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ends == {(topic, 0): 3}
    started = time.monotonic()
    assert [m.value() for m in clients.read_history(ends)] == [b"a", b"b"]
    assert time.monotonic() - started < clients.settings.timeout_s / 2  # the broker said so: no waiting out a timeout
