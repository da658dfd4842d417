"""The agent service against the real broker, fed by a hand-written app whose DS2 optimum
is known: bad metrics must go to the dead-letter topic and not move the decision."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from factories import applied_ack, sample_report

from lastream_stream.agent.controller import ControllerSettings
from lastream_stream.agent.service import AgentService, build_agent
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.policy.base import Decision
from lastream_stream.policy.ds2 import optimal_parallelism
from lastream_stream.wire.contracts import DeadLetter, DecisionRecord, ScalingCommand
from lastream_stream.wire.deadletter import parse


class DS2:
    name = "ds2"

    def decide(self, graph, context=None):
        return Decision.single(self.name, graph, optimal_parallelism(graph))


def honest_reports(now: float) -> list[bytes]:
    """source emits 100/s; one 'work' instance processes 30 records per useful second, so
    DS2's optimum for work is ceil(100 / 30) = 4."""
    return [
        sample_report(
            app="flooded",
            operator="source",
            instance_id="src",
            interval_end=now,
            interval_s=1.0,
            records_in=100,
            records_out=100,
            useful_time_s=0.1,
            lag=None,
            upstreams=[],
            input_partitions=None,
            parallelism=1,
        ).to_bytes(),
        sample_report(
            app="flooded",
            operator="work",
            instance_id="w0",
            interval_end=now,
            interval_s=1.0,
            records_in=30,
            records_out=30,
            useful_time_s=1.0,
            lag=500,
            upstreams=["source"],
            input_partitions=8,
            parallelism=1,
        ).to_bytes(),
    ]


@contextmanager
def running_agent(
    settings, service_settings: AgentServiceSettings, policy=None
) -> Iterator[tuple[AgentService, list, threading.Thread]]:
    """The agent service (DS2's policy unless told) in a thread, ready; the messages it publishes, as it publishes them."""
    service = AgentService(settings, service_settings, agent=policy or DS2())
    stop = threading.Event()
    published = []
    thread = threading.Thread(target=service.run, args=(stop, None, lambda a: published.append(a.message)), daemon=True)
    thread.start()
    assert service.ready.wait(30), "the agent did not get ready"
    try:
        yield service, published, thread
    finally:
        stop.set()
        thread.join(30)


def report_until_a_command(clients, settings, published: list, payloads: Callable[[float], list[bytes]]) -> None:
    """Publish ``payloads(now)`` as the app's metrics every second until the agent commands (60 s at most)."""
    with clients.producer() as producer:
        deadline = time.monotonic() + 60
        while not any(isinstance(m, ScalingCommand) for m in published) and time.monotonic() < deadline:
            for payload in payloads(time.time()):
                producer.produce(settings.topics.metrics, key=b"app", value=payload)  # one partition: in order
            producer.flush(10)
            time.sleep(1.0)


def short_windows(tmp_path, checkpoint: str = "unused.pt") -> AgentServiceSettings:
    return AgentServiceSettings(
        checkpoint=tmp_path / checkpoint, llm=False, controller=ControllerSettings(window_s=3.0, warmup_s=0.0)
    )


def flood(now: float) -> list[bytes]:
    absurd = json.loads(honest_reports(now)[1]) | {"instance_id": "liar", "records_in": 10**12}
    negative = json.loads(honest_reports(now)[1]) | {"instance_id": "liar", "records_in": -50}
    fast = json.loads(honest_reports(now)[1]) | {"instance_id": "liar", "useful_time_s": 99.0}
    wrong_schema = {"schema_version": 1, "app": "flooded", "operator": "work", "rate": 5}
    return [
        b"\x00garbage\xff",
        b"{not json",
        json.dumps(absurd).encode(),
        json.dumps(negative).encode(),
        json.dumps(fast).encode(),
        json.dumps(wrong_schema).encode(),
        b"null",
    ]


def test_metrics_flood_is_dead_lettered_and_does_not_move_the_decision(settings, clients, reader, tmp_path):
    sent: list[bytes] = []

    def flooded(now: float) -> list[bytes]:
        sent.extend(flood(now))
        return honest_reports(now) + flood(now)

    with running_agent(settings, short_windows(tmp_path)) as (service, published, thread):
        report_until_a_command(clients, settings, published, flooded)
        # Every flood message must reach the dead-letter topic while the agent keeps running.
        letters = [parse(DeadLetter, m.value()) for m in reader(settings.topics.deadletter, len(sent))]
        assert thread.is_alive()
    commands = [m for m in published if isinstance(m, ScalingCommand)]
    assert commands, "the agent made no decision"
    assert commands[0].target == {"work": 4}
    assert all(r.instance_id != "liar" for r in service.controllers["flooded"].reports)
    assert all(letter.source_topic == settings.topics.metrics for letter in letters)
    reasons = " | ".join(letter.error for letter in letters)
    for expected in ("not JSON", "records_in", "useful_time_s exceeds", "Field required", "expected a JSON object"):
        assert expected in reasons


def test_the_agent_is_charged_the_configured_restart_time(tmp_path, monkeypatch):
    monkeypatch.setenv("LASTREAM_AGENT_RESTART_S", "12.5")
    agent = build_agent(AgentServiceSettings(checkpoint=tmp_path / "none.pt", llm=False))
    assert agent.config.restart_s == 12.5
    assert agent.normaliser.fitted  # the shipped model, not an untrained one


def saved_last_change(service: AgentService) -> dict:
    path = service.stability.path("flooded")
    if not path.exists():
        return {}
    return json.loads(path.read_text())["state"].get("last_change", {})


def test_the_last_change_per_operator_survives_an_agent_restart(settings, clients, tmp_path):
    """An applied command's direction and time are saved beside the checkpoint when its ack
    arrives, and a new agent process counts its stabilisation interval from them."""
    service_settings = short_windows(tmp_path, "agent.pt")
    with running_agent(settings, service_settings) as (service, published, _):
        report_until_a_command(clients, settings, published, honest_reports)
        command = next((m for m in published if isinstance(m, ScalingCommand)), None)
        assert command is not None, "the agent made no decision"
        with clients.producer() as producer:
            ack = applied_ack(command, {"source": 1, "work": 4})
            producer.produce(settings.topics.acks, key=b"flooded", value=ack.to_bytes())
            producer.flush(10)
        # The file is the agent's own output, nothing on the broker says when it is written; it
        # is also written at each decision, so its existence alone does not mean the ack is in it.
        deadline = time.monotonic() + 30
        while "work" not in saved_last_change(service) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert "work" in saved_last_change(service), "the applied ack's change was not saved"
    restarted = AgentService(settings, service_settings, agent=DS2()).controller("flooded")
    direction, at = restarted.stability.last_change["work"]
    assert direction == 1 and abs(at - time.time()) < 120


def plain_reports(now: float, started: float) -> list[bytes]:
    """A plain app as copied from an old README: three 'work' instances that each say
    parallelism 1, each taking 30 records per useful second at 100% busy, and no source
    reporting. Each instance's lag grows 5/s, so 3 * 30 + 3 * 5 = 105 records/s arrive:
    DS2 needs ceil(105 / 30) = 4, with room either side for the jitter of a real clock
    (at 120, exactly 4 times 30, one record of measured lag growth too many made it 5)."""
    return [
        sample_report(
            app="plain",
            operator="work",
            instance_id=f"w{i}",
            interval_end=now,
            interval_s=1.0,
            records_in=30,
            records_out=30,
            useful_time_s=1.0,
            lag=500 + round(5 * (now - started)),
            upstreams=["source"],
            input_partitions=8,
            parallelism=1,
        ).to_bytes()
        for i in range(3)
    ]


def test_an_app_that_misreports_is_scaled_and_told_why(settings, clients, reader, tmp_path):
    """Workers that say parallelism 1 while three report, and a source that never reports:
    the agent decides on the three, sizes 'work' from what arrives in its input, and its
    published decision names both problems."""
    started = time.time()
    with running_agent(settings, short_windows(tmp_path)) as (_, published, _):
        report_until_a_command(clients, settings, published, lambda now: plain_reports(now, started))
    commands = [m for m in published if isinstance(m, ScalingCommand)]
    assert commands, "the agent made no decision"
    assert commands[0].target == {"work": 4}
    (record,) = [parse(DecisionRecord, m.value()) for m in reader(settings.topics.decisions, 1)]
    assert record.kind == "command" and record.state["work"].parallelism == 3
    misstated, silent = record.warnings
    assert misstated.startswith("work: 3 instances report through the window but say parallelism 1; decided on 3")
    assert silent.startswith("'source' (upstream of work) never reports; taken as an external source of 1")
    assert "MetricsReporter(operator='source', upstreams=[])" in silent


def poisoned(generation: int, now: float) -> list[tuple[bytes, bytes]]:
    """Schema-valid commands for 'flooded' that nobody the agent trusts issued: keyed by
    another name (so compaction keeps it beside the app's own), dated in a far future, and
    one well-formed but foreign with a generation far ahead."""
    forged = {"app": "flooded", "generation": generation + 100, "target": {"work": 1}}
    return [
        (b"junk", json.dumps(forged | {"issued_at": 1e300}).encode()),
        (b"flooded", json.dumps(forged | {"issued_at": 1e300}).encode()),
        (b"flooded", json.dumps(forged | {"issued_at": now}).encode()),
    ]


def test_a_poisoned_control_topic_stalls_no_decision_across_a_restart(settings, clients, reader, tmp_path):
    """The issue's attack: commands the agent never issued, awaited for ever (no ack comes, a
    timeout counted from issued_at=1e300 never fires), replayed at every restart."""
    with clients.producer() as producer:
        for key, value in poisoned(1, time.time()):
            producer.produce(settings.topics.control, key=key, value=value)
        producer.flush(10)
    generations = []
    for _ in range(2):  # the second run replays the poison and the first run's unacknowledged command
        with running_agent(settings, short_windows(tmp_path)) as (service, published, _):
            report_until_a_command(clients, settings, published, honest_reports)
        commands = [m for m in published if isinstance(m, ScalingCommand)]
        assert commands, "the poisoned control topic stalled the agent"
        assert commands[0].target == {"work": 4}
        generations.append(commands[0].generation)
    # The foreign command the supervisor would accept is continued, not awaited.
    assert generations == [102, 103]
    # Bad commands are their app's follower's to dead-letter, once (wire/deadletter.py), not the agent's at every start.
    with clients.consumer(f"count-{uuid.uuid4().hex[:8]}", [settings.topics.deadletter]) as consumer:
        assert consumer.poll(3.0) is None
