"""The agent service against the real broker: a worker whose clock is off is still decided
on, and said so; an app beyond the agent's cap is dead-lettered with the reason."""

from __future__ import annotations

import json
import logging
import re
import time

from test_agent_service import DS2, honest_reports, report_until_a_command, running_agent, short_windows

from lastream_stream.wire.contracts import DeadLetter, ScalingCommand
from lastream_stream.wire.deadletter import parse


def test_a_worker_15_s_behind_is_decided_on_and_its_offset_logged(settings, clients, tmp_path, caplog):
    with (
        caplog.at_level(logging.WARNING, logger="lastream_stream.policy.window"),
        running_agent(settings, short_windows(tmp_path)) as (_, published, _),
    ):
        report_until_a_command(clients, settings, published, lambda now: honest_reports(now - 15))
    commands = [m for m in published if isinstance(m, ScalingCommand)]
    assert commands, "the skewed app was never decided on"
    assert commands[0].target == {"work": 4}
    skewed = [r.getMessage() for r in caplog.records if "clock of" in r.getMessage()]
    assert len(skewed) == 2  # once per instance: source/src and work/w0
    # Measured on arrival, so the offset includes the report's time in transit: 15 s and up to a few more.
    assert all(re.search(r"is \+1[5-9]\.\d s off the agent's", m) for m in skewed), skewed


def test_an_app_beyond_the_cap_is_dead_lettered_with_the_reason(settings, clients, reader, tmp_path):
    service_settings = short_windows(tmp_path).model_copy(update={"max_apps": 1})
    sent = []

    def two_apps(now: float) -> list[bytes]:
        other = [json.dumps(json.loads(r) | {"app": "other"}).encode() for r in honest_reports(now)]
        sent.extend(other)
        return honest_reports(now) + other

    with running_agent(settings, service_settings) as (service, published, _):
        report_until_a_command(clients, settings, published, two_apps)
        letters = [parse(DeadLetter, m.value()) for m in reader(settings.topics.deadletter, len(sent))]
    assert any(isinstance(m, ScalingCommand) and m.app == "flooded" for m in published)
    assert list(service.controllers) == ["flooded"]
    assert all("LASTREAM_AGENT_MAX_APPS" in letter.error and "'other'" in letter.error for letter in letters)


class StallsOnce(DS2):
    """DS2, but its first decision takes 8 s: the agent reads nothing meanwhile, as one far behind does."""

    stalled = False

    def decide(self, graph, context=None):
        if not self.stalled:
            self.stalled = True
            time.sleep(8.0)
        return super().decide(graph, context)


def test_a_backlog_of_the_agents_own_blames_no_workers_clock(settings, clients, tmp_path, caplog):
    """Reports that waited at the broker for the agent are timed by their arrival there: the
    agent's delay is not taken for the workers' clocks being off (an agent timing them by
    when it read them warned that both were 4-8 s behind)."""
    with (
        caplog.at_level(logging.WARNING, logger="lastream_stream.policy.window"),
        running_agent(settings, short_windows(tmp_path), StallsOnce()) as (service, published, _),
    ):
        report_until_a_command(clients, settings, published, honest_reports)
        # The reports of the stall are read once the decision is published; a few more after them.
        with clients.producer() as producer:
            for _ in range(4):
                for payload in honest_reports(time.time()):
                    producer.produce(settings.topics.metrics, key=b"app", value=payload)
                producer.flush(10)
                time.sleep(1.0)
        offsets = [list(o) for o in service.controllers["flooded"].clocks.offsets.values()]
    assert any(isinstance(m, ScalingCommand) for m in published), "the agent made no decision"
    assert [r.getMessage() for r in caplog.records if "clock of" in r.getMessage()] == []
    assert offsets and all(abs(o) < 2.0 for per_instance in offsets for o in per_instance), offsets
