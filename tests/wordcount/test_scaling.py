"""WordCount scaled by the real supervisor while it runs: splitter 1 -> 3 -> 1 mid-stream,
with every word counted exactly once."""

from __future__ import annotations

import threading
import time

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from lastream_stream.supervisor import Supervisor, SupervisorSettings
from lastream_stream.wire.contracts import CommandAck, MetricsReport, ScalingCommand
from lastream_stream.wire.deadletter import parse
from wordcount_app import source
from wordcount_app.topology import app_spec

from .conftest import expected_counts, final_counts, wait_group


def test_splitter_scales_out_and_in_mid_stream_without_losing_or_duplicating_words(settings, clients, wc, tmp_path):
    wc = wc.model_copy(update={"repeat": 3, "rate": 40.0, "cost_splitter_ms": 5.0})  # 1200 sentences over ~30 s
    supervisor = Supervisor(
        settings, app_spec(settings, wc), SupervisorSettings(home=tmp_path / "run", settle_s=0.5), clients
    )
    stop_supervisor, stop_source = threading.Event(), threading.Event()
    supervising = threading.Thread(target=supervisor.run, args=(stop_supervisor,), daemon=True)
    supervising.start()
    sent: list[int] = []
    producing = threading.Thread(target=lambda: sent.append(source.run(settings, wc, stop_source)), daemon=True)

    def publish(generation: int, splitter: int) -> ScalingCommand:
        command = ScalingCommand(app=wc.app, generation=generation, target={"splitter": splitter}, reason="test")
        with clients.producer() as producer:
            producer.produce(settings.topics.control, key=wc.app.encode(), value=command.to_bytes())
        return command

    try:
        for operator in ("splitter", "counter", "sink"):
            wait_group(clients, wc.faust_id(operator), 1)
        producing.start()
        with (
            clients.consumer(f"acks-{wc.prefix}", **{"enable.auto.commit": False}) as acks,
            clients.consumer(f"metrics-{wc.prefix}", **{"enable.auto.commit": False}) as metrics,
        ):
            acks.assign([TopicPartition(settings.topics.acks, 0, OFFSET_BEGINNING)])
            metrics.assign(
                [
                    TopicPartition(settings.topics.metrics, p, OFFSET_BEGINNING)
                    for p in range(settings.topics.metrics_partitions)
                ]
            )

            out = publish(1, 3)
            ack = next_ack(acks, out.decision_id)
            assert (ack.status, ack.applied["splitter"]) == ("applied", 3)
            assert supervisor.status().running["splitter"] == 3
            wait_group(clients, wc.faust_id("splitter"), 3)
            instances = splitter_instances_reporting(metrics, parallelism=3, count=3)
            assert len(instances) == 3

            back = publish(2, 1)
            ack = next_ack(acks, back.decision_id)
            assert (ack.status, ack.applied["splitter"]) == ("applied", 1)
            assert supervisor.status().running["splitter"] == 1
            wait_group(clients, wc.faust_id("splitter"), 1)
        producing.join(120)
        assert sent == [3 * len(source.corpus())], "the source did not finish"
        expected = expected_counts(repeat=3)
        assert final_counts(clients, wc.counts_topic, sum(expected.values())) == expected
    finally:
        stop_source.set()
        stop_supervisor.set()
        supervising.join(60)


def next_ack(consumer, decision_id: str, timeout_s: float = 60.0) -> CommandAck:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if (
            msg is not None
            and msg.error() is None
            and (ack := parse(CommandAck, msg.value())).decision_id == decision_id
        ):
            return ack
    raise AssertionError(f"no ack for {decision_id} within {timeout_s} s")


def splitter_instances_reporting(consumer, parallelism: int, count: int, timeout_s: float = 60.0) -> set[str]:
    """Distinct splitter instances whose reports state ``parallelism`` and show work done."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        report = parse(MetricsReport, msg.value())
        if report.operator == "splitter" and report.parallelism == parallelism and report.records_in > 0:
            seen.add(report.instance_id)
    return seen
