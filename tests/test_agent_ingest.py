"""One agent keeps up with a fleet through the real broker: a few hundred reports a second
(an agent that waited on each message took about 20) for half a minute, with the shipped
learned policy deciding. A functional property with a wide margin; the speed figures are
``benchmarks/ingest.py``'s."""

from __future__ import annotations

import logging
import threading
import time

from lastream_stream.agent.controller import ControllerSettings
from lastream_stream.agent.service import AgentService
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.bench.fleet import Fleet
from lastream_stream.wire.contracts import DecisionRecord

WINDOW_S = 5.0


def test_one_agent_keeps_up_with_hundreds_of_reports_a_second(settings, clients, tmp_path, caplog):
    fleet = Fleet(apps=12, operators=5, instances=3, interval_s=0.5, prefix=f"ingest-{tmp_path.name[-8:]}")
    assert fleet.reports_per_s == 360
    service_settings = AgentServiceSettings(
        checkpoint=tmp_path / "agent.pt",
        llm=False,
        group=f"agents-{tmp_path.name[-8:]}",
        controller=ControllerSettings(window_s=WINDOW_S, warmup_s=0.0, dry_run=True),
    )
    service = AgentService(settings, service_settings)
    records: list[DecisionRecord] = []
    stop = threading.Event()
    agent = threading.Thread(target=service.run, args=(stop, None, lambda a: records.append(a.message)), daemon=True)
    agent.start()
    assert service.ready.wait(30), "the agent did not get ready"
    published: list[int] = []

    def publish() -> None:
        with clients.producer() as producer:
            published.append(fleet.publish(producer, settings.topics.metrics, 30.0))

    publisher = threading.Thread(target=publish, daemon=True)
    caplog.set_level(logging.WARNING, logger="lastream_stream.policy.window")
    try:
        publisher.start()
        lags = []  # (seconds since the start, the agent group's lag as the broker has it)
        started = time.monotonic()
        while publisher.is_alive():
            time.sleep(3.0)
            lags.append(
                (time.monotonic() - started, clients.group_lag(service_settings.group, settings.topics.metrics))
            )
        publisher.join()
        exported = {
            sample.labels["partition"]: sample.value
            for metric in service.metrics.metrics_lag.collect()
            for sample in metric.samples
        }
    finally:
        stop.set()
        agent.join(30)
    assert published and published[0] >= 0.9 * 30 * fleet.reports_per_s, f"the fleet published only {published}"
    # Committed every second: two seconds of reports is a wide margin; the old agent was 9 000 behind by then.
    late = [(round(t), lag) for t, lag in lags if t > 10]
    assert late and all(lag <= 2 * fleet.reports_per_s for _, lag in late), f"the agent fell behind: {lags}"
    # The one agent has every metrics partition, each with its own series.
    assert set(exported) == {str(p) for p in range(settings.topics.metrics_partitions)}, exported
    assert sum(exported.values()) <= 2 * fleet.reports_per_s, f"the agent's own lag gauge says {exported}"
    decisions = [r for r in records if isinstance(r, DecisionRecord) and r.kind != "outcome"]
    assert {r.app for r in decisions} == set(fleet.app_names()), "some apps were never decided"
    # Every decision was made on a fresh window and on whole windows: every instance of every operator in it.
    assert all(r.window_age_s is not None and r.window_age_s <= WINDOW_S for r in decisions)
    assert all(op.parallelism == fleet.instances for r in decisions for op in r.state.values())
    assert len(decisions) >= fleet.apps * 3, f"{len(decisions)} decisions of {fleet.apps} apps in 30 s"
    # The reports are on time: no worker's clock is blamed for any delay.
    assert not [r.message for r in caplog.records if "off the agent's" in r.getMessage()]
