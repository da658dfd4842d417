"""The agent's Prometheus metrics over real HTTP, after real traffic on the broker: a command,
the hold after it was applied, its measured outcome, a dead letter."""

from __future__ import annotations

import math
import socket
import threading
import time

import pytest
from click.testing import CliRunner
from factories import applied_ack, sample_report
from scrape import Scrape, free_port
from test_agent_service import DS2, honest_reports

from lastream_stream.agent.controller import ControllerSettings
from lastream_stream.agent.service import AgentService
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.tools.cli import main
from lastream_stream.wire.contracts import DecisionRecord, ScalingCommand

LABELS = {"app": "flooded", "operator": "work"}


def scaled_reports(now: float) -> list[bytes]:
    """After the command: the 100/s of the source spread over 4 'work' instances, DS2's optimum."""
    return [honest_reports(now)[0]] + [
        sample_report(
            app="flooded",
            operator="work",
            instance_id=f"w{i}",
            interval_end=now,
            interval_s=1.0,
            records_in=25,
            records_out=25,
            useful_time_s=25 / 30,
            lag=0,
            upstreams=["source"],
            input_partitions=8,
            parallelism=4,
        ).to_bytes()
        for i in range(4)
    ]


def test_the_agent_serves_what_it_decided(settings, clients, tmp_path):
    port = free_port()
    service = AgentService(
        settings,
        AgentServiceSettings(
            checkpoint=tmp_path / "unused.pt",
            llm=False,
            metrics_port=port,
            controller=ControllerSettings(window_s=3.0, warmup_s=0.0, outcome_s=3.0),
        ),
        agent=DS2(),
    )
    stop = threading.Event()
    published: list = []
    served: list[str | None] = []

    def serve_and_run() -> None:
        with service.serve_metrics() as url:
            served.append(url)
            service.run(stop, None, lambda a: published.append(a.message))

    thread = threading.Thread(target=serve_and_run, daemon=True)
    thread.start()
    assert service.ready.wait(30), "the agent did not get ready"
    url = f"http://127.0.0.1:{port}/metrics"
    assert served == [url]

    def records(kind: str) -> list[DecisionRecord]:
        return [m for m in published if isinstance(m, DecisionRecord) and m.kind == kind]

    try:
        with clients.producer() as producer:
            producer.produce(settings.topics.metrics, key=b"flooded", value=b"{not json")
            deadline = time.monotonic() + 60
            while not records("command") and time.monotonic() < deadline:
                for payload in honest_reports(time.time()):
                    producer.produce(settings.topics.metrics, key=b"flooded", value=payload)
                producer.flush(10)
                time.sleep(1.0)
            (command,) = [m for m in published if isinstance(m, ScalingCommand)]
            scrape = Scrape(url)
            assert scrape.value("lastream_autoscaler_parallelism", **LABELS) == 1
            assert scrape.value("lastream_autoscaler_recommended_parallelism", **LABELS) == 4
            assert scrape.value("lastream_autoscaler_ds2_parallelism", **LABELS) == 4
            state = records("command")[0].state["work"]
            assert scrape.value("lastream_autoscaler_true_processing_rate_records_per_second", **LABELS) == (
                pytest.approx(30.0)
            )
            assert scrape.value("lastream_autoscaler_observed_input_rate_records_per_second", **LABELS) == (
                pytest.approx(state.input_rate)
            )
            assert scrape.value("lastream_autoscaler_busy_ratio", **LABELS) == pytest.approx(1.0)
            assert scrape.value("lastream_autoscaler_lag_records", **LABELS) == state.lag > 0
            assert math.isnan(scrape.value("lastream_autoscaler_predicted_reward", app="flooded"))  # DS2 scores nothing
            assert scrape.value("lastream_autoscaler_decisions_total", app="flooded", kind="command") == 1
            assert scrape.value("lastream_autoscaler_decisions_total", app="flooded", kind="hold") == 0
            assert scrape.value("lastream_autoscaler_commands_total", app="flooded") == 1
            assert scrape.value("lastream_dead_letters_total", consumer="lastream-agent") == 1

            ack = applied_ack(command, {"source": 1, "work": 4})
            producer.produce(settings.topics.acks, key=b"flooded", value=ack.to_bytes())
            deadline = time.monotonic() + 60
            while not (records("hold") and records("outcome")) and time.monotonic() < deadline:
                for payload in scaled_reports(time.time()):
                    producer.produce(settings.topics.metrics, key=b"flooded", value=payload)
                producer.flush(10)
                time.sleep(1.0)
        assert records("hold") and records("outcome"), "no hold and outcome after the command was applied"
        scrape = Scrape(url)
    finally:
        stop.set()
        thread.join(30)
    holds = len(records("hold"))
    assert scrape.value("lastream_autoscaler_parallelism", **LABELS) == 4
    assert scrape.value("lastream_autoscaler_recommended_parallelism", **LABELS) == 4
    assert scrape.value("lastream_autoscaler_decisions_total", app="flooded", kind="hold") == holds
    assert scrape.value("lastream_autoscaler_holds_total", app="flooded", reason="policy") == holds
    assert scrape.value("lastream_autoscaler_holds_total", app="flooded", reason="stabilisation") == 0
    assert scrape.value("lastream_autoscaler_measured_reward", app="flooded") == pytest.approx(
        records("outcome")[-1].measured_reward
    )
    with pytest.raises(OSError):  # the server stopped with the service
        Scrape(url)


def test_a_metrics_port_in_use_is_a_clear_error(tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("LASTREAM_AGENT_METRICS_PORT", str(taken.getsockname()[1]))
        result = CliRunner().invoke(main, ["agent", "--no-llm", "--checkpoint", str(tmp_path / "none.pt")])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())  # the console wraps long lines
    assert "set LASTREAM_AGENT_METRICS_PORT to a free port, or LASTREAM_AGENT_METRICS_ENABLED=false" in said
    assert "Traceback" not in result.output
