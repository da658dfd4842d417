from pathlib import Path

import yaml

from lastream_stream.settings import BrokerSettings

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


def test_compose_runs_the_same_kafka_in_kraft_mode():
    compose = yaml.safe_load(COMPOSE.read_text())
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{BrokerSettings().kafka_version}"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # only `topics ensure` makes topics
    assert "healthcheck" in kafka
    assert {"kafka", "topics", "supervisor", "source", "agent"} <= set(compose["services"])
    for name, service in compose["services"].items():
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"
