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
