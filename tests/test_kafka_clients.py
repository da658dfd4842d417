import time
import uuid

import pytest
from confluent_kafka.admin import ConfigResource

from lastream_stream.kafka_clients import BrokerUnreachable, KafkaClients, project_topics
from lastream_stream.settings import KafkaSettings, TopicSettings


def test_unreachable_bootstrap_fails_fast_with_a_readable_message():
    clients = KafkaClients(KafkaSettings(bootstrap="127.0.0.1:1", timeout_s=2.0))
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable, match=r"127\.0\.0\.1:1 did not answer within 2 s.*lastream kafka start"):
        with clients.producer():
            pass
    assert time.monotonic() - started < 6


def test_secrets_reach_librdkafka_but_not_the_repr():
    settings = KafkaSettings(sasl_username="u", sasl_password="hunter2", sasl_mechanism="PLAIN")
    assert KafkaClients(settings).config()["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(settings)


def test_topics_ensure_is_idempotent_and_compacts_control(clients):
    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(metrics=f"m-{tag}", control=f"c-{tag}", acks=f"a-{tag}", decisions=f"d-{tag}",
                           deadletter=f"x-{tag}", metrics_partitions=3)  # fmt: skip
    specs = project_topics(topics)
    assert sorted(clients.ensure_topics(specs)) == sorted(s.name for s in specs)
    assert clients.ensure_topics(specs) == []
    md = clients.metadata()
    assert len(md.topics[f"m-{tag}"].partitions) == 3
    admin = clients.admin()
    resource = ConfigResource(ConfigResource.Type.TOPIC, f"c-{tag}")
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["cleanup.policy"].value == "compact"
