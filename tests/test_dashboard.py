"""The live view shows what is wrong with an app's reporting, as the agent's decisions say it."""

import time

from factories import sample_report
from rich.console import Console

from lastream_stream.settings import LastreamSettings
from lastream_stream.tools.dashboard import AppMonitor
from lastream_stream.wire.contracts import DecisionRecord


def shown(monitor: AppMonitor) -> str:
    console = Console(width=400, record=True)
    console.print(monitor.render())
    return console.export_text()


def test_the_live_view_shows_the_reporting_problems_and_the_parallelism_the_reports_misstate():
    monitor = AppMonitor(LastreamSettings(), "plain")
    now = time.time()
    for t in range(6):
        for i in range(3):
            monitor.window.add(
                sample_report(
                    app="plain",
                    operator="parser",
                    instance_id=f"p-{i}",
                    interval_end=now - 5 + t,
                    interval_s=1.0,
                    useful_time_s=0.5,
                    parallelism=1,
                )
            )
    assert "reporting problems" not in shown(monitor)
    warning = "'source' (upstream of parser) never reports; taken as an external source of 120 records/s"
    monitor.decisions.append(
        DecisionRecord(
            app="plain", decision_id="d", kind="hold", policy="ds2", chosen={"parser": 3}, warnings=[warning]
        )
    )
    text = shown(monitor)
    assert "reporting problems" in text and warning in text
    assert "3 (says 1)" in text


def test_the_live_view_says_when_the_agents_are_behind():
    monitor = AppMonitor(LastreamSettings(), "plain", agent_group="agents")
    assert "agents' lag unknown (group 'agents' has committed nothing)" in shown(monitor)
    monitor.reports_per_s = 1000.0
    monitor.agent_lag = 800
    monitor.decisions.append(
        DecisionRecord(app="plain", decision_id="d", kind="hold", policy="ds2", chosen={}, window_age_s=1.25)
    )
    text = shown(monitor)
    assert "agents 800 report(s) behind (~0.8 s)" in text and "on reports 1.2 s old" in text
    monitor.agent_lag = 60_000
    assert "agents BEHIND: 60,000 report(s), ~60 s; decisions are late" in shown(monitor)


def test_the_agents_lag_is_read_from_the_broker(settings, clients, group_id):
    monitor = AppMonitor(settings, "plain", agent_group=group_id)
    assert monitor._agent_lag(clients) is None  # nothing committed yet: unknown, not "everything behind"
    with clients.producer() as producer:
        for _ in range(10):
            producer.produce(settings.topics.metrics, key=b"plain", value=b"{}")
    with clients.consumer(group_id, [settings.topics.metrics], **{"enable.auto.commit": False}) as consumer:
        taken = 0
        while taken < 4:
            msg = consumer.poll(5)
            assert msg is not None, "the reports never arrived"
            taken += 1
            consumer.commit(msg, asynchronous=False)
    # Committed through the 4th report of its partition; the other 6 are the lag.
    assert monitor._agent_lag(clients) == 6
