"""Dead letters and commands that the broker refuses, against the real broker: every consumer
stays up, keeps the refused message's offset, and a bad message is dead-lettered once."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
import uuid

from test_agent_service import honest_reports, report_until_a_command, running_agent, short_windows
from test_control_client import Follower, command, publish

from lastream_stream.agent.controller import Phase
from lastream_stream.kafka.clients import TopicSpec
from lastream_stream.wire.contracts import DeadLetter, DecisionRecord, ScalingCommand
from lastream_stream.wire.deadletter import parse

HUGE = 900_000  # bytes: its base64 dead letter would pass the producer's 1 MB message.max.bytes


def huge_invalid() -> bytes:
    return json.dumps({"app": "flooded", "generation": 7, "target": {"work": 1}, "junk": "x" * HUGE}).encode()


def letters_on(clients, topic: str, wait_s: float = 3.0) -> list[DeadLetter]:
    """Every dead letter on ``topic``: read until none arrived for ``wait_s``."""
    with clients.consumer(f"count-{uuid.uuid4().hex[:8]}", [topic]) as consumer:
        return [parse(DeadLetter, m.value()) for m in iter(lambda: consumer.poll(wait_s), None) if m.error() is None]


def refusing(clients, settings, topic: str):
    """``settings`` whose ``topic`` (a field of TopicSettings) exists but takes no message over 1000 bytes."""
    name = f"t-{uuid.uuid4().hex[:10]}.refusing"
    clients.ensure_topics([TopicSpec(name, 1, config=(("max.message.bytes", "1000"),))])
    return settings.model_copy(update={"topics": settings.topics.model_copy(update={topic: name})})


def follow_one(settings) -> Follower:
    """A self-scaling app that handled the command of generation 1 and stayed up, stopped."""
    app = Follower(settings)
    try:
        assert [c.generation for c in app.wait(1)] == [1]
        assert app.thread.is_alive()
    finally:
        app.close()
    return app


def test_an_oversized_bad_command_is_dead_lettered_truncated_and_the_next_one_acked(settings, clients):
    payload = json.dumps({"app": "shop", "junk": "x" * HUGE}).encode()
    publish(clients, settings, ("shop", payload), ("shop", command(1, api=2).to_bytes()))
    assert follow_one(settings).acks[0] is not None
    (letter,) = letters_on(clients, settings.topics.deadletter)
    assert letter.truncated and letter.payload_size == len(payload)
    assert letter.payload_sha256 == hashlib.sha256(payload).hexdigest()
    assert payload.startswith(base64.b64decode(letter.payload_b64))


def test_an_unwritable_dead_letter_topic_stops_no_client_and_keeps_the_offset(settings, clients):
    settings = refusing(clients, settings, "deadletter")
    publish(clients, settings, ("shop", b"{" + b"x" * 2000), ("shop", command(1, api=2).to_bytes()))
    assert follow_one(settings).acks[0] is not None
    # Acknowledged, yet the group did not commit past the message that is on no dead-letter topic.
    assert clients.committed_total("lastream-shop-deploy", settings.topics.control) == 0


def test_an_ack_the_broker_refuses_commits_nothing(settings, clients):
    settings = refusing(clients, settings, "acks")
    publish(clients, settings, ("shop", command(1, api=2, worker=1, **{f"op{i}": 1 for i in range(150)}).to_bytes()))
    follow_one(settings)
    assert clients.committed_total("lastream-shop-deploy", settings.topics.control) == 0


def test_the_agent_survives_oversized_and_unwritable_dead_letters(settings, clients, tmp_path):
    """A 900 KB bad ack and a 900 KB bad command in the history, then a dead-letter topic
    that refuses everything: the agent gets ready, decides, and its command is published."""
    with clients.producer() as producer:
        producer.produce(settings.topics.acks, key=b"flooded", value=huge_invalid())
        producer.produce(settings.topics.control, key=b"flooded", value=huge_invalid())
    with running_agent(settings, short_windows(tmp_path)) as (_, published, thread):
        report_until_a_command(clients, settings, published, honest_reports)
        assert thread.is_alive() and any(isinstance(m, ScalingCommand) for m in published)
    (letter,) = letters_on(clients, settings.topics.deadletter)  # the ack's: the command is its follower's
    assert letter.source_topic == settings.topics.acks and letter.truncated and letter.payload_size > HUGE

    settings = refusing(clients, settings, "deadletter")
    with clients.producer() as producer:
        producer.produce(settings.topics.acks, key=b"flooded", value=b"{" + b"x" * 2000)
    with running_agent(settings, short_windows(tmp_path)) as (service, published, thread):
        report_until_a_command(clients, settings, published, honest_reports)
        assert thread.is_alive() and any(isinstance(m, ScalingCommand) for m in published)
        failures = service.metrics.registry.get_sample_value(
            "lastream_dead_letter_failures_total", {"consumer": "lastream-agent"}
        )
        assert failures >= 1
    # The refused dead letter holds the mark: the next start tries again.
    assert json.loads((tmp_path / "unused.deadletters.json").read_text())[settings.topics.acks] == {"0": 1}


def test_a_bad_message_is_dead_lettered_once_across_restarts_and_components(settings, clients, tmp_path):
    """The issue's 8 665 dead letters for 7 333 bad messages: agent and supervisor both, and the agent again per restart."""
    publish(clients, settings, ("shop", b"{bad command"), ("shop", command(1, api=2).to_bytes()))
    with clients.producer() as producer:
        producer.produce(settings.topics.acks, key=b"flooded", value=b"{bad ack")
    follow_one(settings)
    for _ in range(2):
        with running_agent(settings, short_windows(tmp_path)) as (_, published, _thread):
            report_until_a_command(clients, settings, published, honest_reports)
    letters = letters_on(clients, settings.topics.deadletter)
    sources = sorted((letter.source_topic, letter.offset, letter.consumer) for letter in letters)
    assert sources == sorted(
        [
            (settings.topics.control, 0, "shop-deploy"),
            (settings.topics.acks, 0, "lastream-agent"),
        ]
    )


def test_a_command_the_broker_refuses_is_not_awaited(settings, clients, tmp_path):
    clients.ensure_topics([TopicSpec(settings.topics.control, 1, config=(("max.message.bytes", "100"),))])
    with running_agent(settings, short_windows(tmp_path)) as (service, published, thread):
        with clients.producer() as producer:
            deadline = time.monotonic() + 60
            while not any(isinstance(m, DecisionRecord) and m.kind == "command" for m in published):
                assert time.monotonic() < deadline, "the agent made no decision"
                for payload in honest_reports(time.time()):
                    producer.produce(settings.topics.metrics, key=b"app", value=payload)
                producer.flush(10)
                time.sleep(1.0)
        controller = service.controllers["flooded"]
        assert controller.phase is Phase.OBSERVING and controller.pending is None
        assert thread.is_alive()
    assert not any(isinstance(m, ScalingCommand) for m in published)  # only what is on the broker counts
    assert (
        service.metrics.registry.get_sample_value("lastream_autoscaler_unpublished_commands_total", {"app": "flooded"})
        == 1
    )


def test_a_garbage_flood_ahead_of_the_reports_delays_no_decision(settings, clients, tmp_path, caplog):
    """10 000 bad metrics messages, then the real reports behind them: each is dead-lettered
    once, without holding the real reports up (one broker round trip per dead letter took
    54 s for 1 076 of them), and the log says so in a few summary lines."""
    garbage = [b"{not json", b"null", json.dumps({"app": "flooded", "operator": "work"}).encode()]
    with (
        caplog.at_level(logging.WARNING, logger="lastream_stream.wire.deadletter"),
        running_agent(settings, short_windows(tmp_path)) as (service, published, thread),
        clients.producer() as producer,
    ):
        for i in range(10_000):
            producer.produce(settings.topics.metrics, key=b"app", value=garbage[i % 3])
        producer.flush(10)
        started = time.monotonic()
        while not any(isinstance(m, ScalingCommand) for m in published):
            assert time.monotonic() - started < 60, "the flood stalled the decision"
            for payload in honest_reports(time.time()):
                producer.produce(settings.topics.metrics, key=b"app", value=payload)
            producer.flush(10)
            time.sleep(1.0)
        decided_after = time.monotonic() - started
        # Every letter acknowledged, and the flood's summary logged by the agent's loop after its 10 s.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("more in" in r.getMessage() for r in caplog.records):
            time.sleep(0.5)
        assert thread.is_alive()
    # A 3 s window: the first decision comes after one full window of reports, whatever the flood.
    assert decided_after < 3 * 3.0 + 5, f"decided {decided_after:.1f} s after the reports began"
    assert sum(clients.end_offsets([settings.topics.deadletter]).values()) == 10_000
    assert (
        service.metrics.registry.get_sample_value("lastream_dead_letters_total", {"consumer": "lastream-agent"})
        == 10_000
    )
    # The first in full, then one summary per 10 s: 9 999 more, by kind of reason.
    first, *summaries = [r.getMessage() for r in caplog.records if r.name == "lastream_stream.wire.deadletter"]
    assert first.startswith(f"dead-lettered {settings.topics.metrics}[") and "not JSON" in first
    assert 1 <= len(summaries) <= 3, summaries
    assert sum(int(re.search(r"dead-lettered ([\d,]+) more", s)[1].replace(",", "")) for s in summaries) == 9_999
    assert "not JSON" in summaries[0] and "invalid MetricsReport" in summaries[0], summaries
