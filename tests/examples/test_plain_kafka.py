"""The shipped plain confluent-kafka example (``examples/plain_kafka``) scaled by LaStream on
real parts: the broker, worker processes, the supervisor or the app's own ControlClient, the agent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from scrape import Scrape, free_port

from lastream_stream.agent.controller import ControllerSettings
from lastream_stream.agent.service import AgentService
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.supervisor import service as supervisor
from lastream_stream.supervisor.config import SupervisorSettings
from lastream_stream.supervisor.spec import AppSpec
from lastream_stream.wire.contracts import CommandAck, DecisionRecord, MetricsReport, ScalingCommand

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "plain_kafka"


@pytest.fixture
def shop_env(settings) -> dict[str, str]:
    return settings.process_env() | {"SHOP_PREFIX": f"shop-{uuid.uuid4().hex[:8]}", "SHOP_REPORT_S": "1"}


@pytest.fixture
def start(tmp_path):
    """Starts example scripts as real processes; stops them with SIGTERM at the end."""
    procs: list[subprocess.Popen] = []

    def run(script: str, *args: str, env: dict[str, str]) -> subprocess.Popen:
        with open(tmp_path / f"{script}-{len(procs)}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(EXAMPLE / script), *args], env=os.environ | env, stdout=log, stderr=log, cwd=REPO
            )
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def instances(reports: list[MetricsReport], operator: str, since: float) -> set[str]:
    return {r.instance_id for r in reports if r.operator == operator and r.interval_start >= since}


@pytest.mark.timeout(300)
def test_the_self_scaling_variant_applies_commands_and_acks_them(settings, clients, shop_env, start, follow):
    acks = follow(settings.topics.acks, CommandAck)
    reports = follow(settings.topics.metrics, MetricsReport)
    start("shop.py", "orders", env=shop_env | {"SHOP_RATE": "10"})
    start("self_scaling.py", env=shop_env | {"SHOP_PARSER_MS": "20"})
    reports.wait(lambda r: r.operator == "tally", 60, "report from the tally")

    def publish(generation, **target):
        command = ScalingCommand(app="shop", generation=generation, target=target, changed=sorted(target))
        with clients.producer() as producer:
            producer.produce(settings.topics.control, key=b"shop", value=command.to_bytes())
        return time.time()

    sent = publish(1, parser=3, tally=1)
    (ack,) = acks.wait(lambda a: a.generation == 1, 60, "ack of generation 1")
    assert (ack.status, ack.applied, ack.clamped) == ("applied", {"parser": 3, "tally": 1}, {})

    def three_parsers(report):
        return len(instances(reports.items, "parser", sent)) == 3 and report.parallelism == 3

    reports.wait(three_parsers, 60, "reports from three parser instances saying parallelism 3")

    sent = publish(2, parser=1, tally=12)
    (ack,) = acks.wait(lambda a: a.generation == 2, 60, "ack of generation 2")
    assert (ack.status, ack.applied, ack.clamped) == ("applied", {"parser": 1, "tally": 8}, {"tally": 12})
    reports.wait(
        lambda r: r.operator == "parser" and r.interval_start > sent + 2 and r.parallelism == 1,
        60,
        "a parser report saying parallelism 1",
    )


@pytest.mark.timeout(600)
def test_under_the_supervisor_and_the_agent_the_example_scales_out_then_in(
    settings, clients, shop_env, tmp_path, monkeypatch, follow
):
    """30 orders/s at 100 ms each needs 3 parsers or more; after the drop to 3/s, one suffices.
    (From 3 parsers of which 1 is needed, beside a source and a sink, the agent holds: the
    predicted gain, about 0.05 ln reward after the restart, is within its error margin.)"""
    monkeypatch.chdir(REPO)  # the spec's commands are relative to the repository, as the README runs them
    spec = AppSpec.from_yaml(EXAMPLE / "shop.yaml")
    env = shop_env | {"SHOP_RATE": "0:30,100:3", "SHOP_PARSER_MS": "100"}
    spec = spec.model_copy(
        update={"operators": {op: w.model_copy(update={"env": w.env | env}) for op, w in spec.operators.items()}}
    )
    acks = follow(settings.topics.acks, CommandAck)
    stop = threading.Event()
    sup = threading.Thread(
        target=supervisor.run,
        args=(
            settings,
            spec,
            stop,
            SupervisorSettings(home=tmp_path / "supervisor", settle_s=0.5, metrics_port=free_port()),
        ),
        daemon=True,
    )
    controller = ControllerSettings(window_s=8.0, warmup_s=5.0, outcome_s=16.0, stabilisation_s=30.0)
    service = AgentServiceSettings(
        checkpoint=tmp_path / "agent.pt", llm=False, controller=controller, metrics_port=free_port()
    )
    agent = AgentService(settings, service)
    agent_thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    decisions = follow(settings.topics.decisions, DecisionRecord)

    def explained(what: str) -> str:
        seen = [
            f"{d.kind} {d.chosen} held_by={d.held_by} notes={d.notes} warnings={d.warnings}" for d in decisions.items
        ]
        return f"{what} (decisions: {seen[-6:]})"

    with agent.serve_metrics() as url:
        sup.start()
        agent_thread.start()
        try:
            out = acks.wait(
                lambda a: a.status == "applied" and a.applied.get("parser", 1) >= 2, 150, explained("a scale-out")
            )[0]
            assert out.applied["orders"] == 1  # the source is not the agent's to scale
            decisions.wait(lambda d: d.kind == "hold", 60, explained("a hold after the scale-out"))
            scrape = Scrape(url)
            assert (
                scrape.value("lastream_autoscaler_parallelism", app="shop", operator="parser") == out.applied["parser"]
            )
            assert scrape.value("lastream_autoscaler_ds2_parallelism", app="shop", operator="parser") >= 1
            assert (
                0
                < scrape.value(
                    "lastream_autoscaler_observed_input_rate_records_per_second", app="shop", operator="parser"
                )
                < 44  # at most the parser's capacity (4 x 10/s while it drains a backlog), measured over a window
            )
            assert 0 <= scrape.value("lastream_autoscaler_busy_ratio", app="shop", operator="parser") <= 1
            assert scrape.value("lastream_autoscaler_commands_total", app="shop") >= 1
            assert scrape.value("lastream_autoscaler_decisions_total", app="shop", kind="hold") >= 1
            acks.wait(
                lambda a: a.generation > out.generation and a.applied.get("parser", 9) < out.applied["parser"],
                300,
                explained("a scale-in after the rate drop"),
            )
        finally:
            stop.set()
            agent_thread.join(30)
            sup.join(60)
