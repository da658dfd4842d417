import json
import logging
import time

from confluent_kafka import TopicPartition

from lastream_stream.kafka.reporter import BrokerLag, MetricsReporter, consumer_lag
from lastream_stream.wire.contracts import MetricsReport
from lastream_stream.wire.deadletter import parse

WORK_S = 0.01


def test_reporter_in_a_consumer_loop_reports_what_the_loop_did(
    settings, clients, make_topic, group_id, consumer_factory, reader
):
    topic = make_topic(partitions=2)
    records = 60
    with clients.producer() as producer:
        for i in range(records):
            producer.produce(topic, value=f"record {i}".encode())

    consumer = consumer_factory(group_id, [topic])
    reporter = MetricsReporter(
        app="demo",
        operator="parser",
        upstreams=["source"],
        input_partitions=2,
        interval_s=0.5,
        lag=lambda: consumer_lag(consumer),
        settings=settings,
        instance_id="parser-0",
    )
    processed = 0
    with reporter:
        deadline = time.monotonic() + 30
        while processed < records and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            with reporter.busy():
                time.sleep(WORK_S)  # the per-record work
            reporter.record_out()
            reporter.observe_latency(5.0)
            processed += 1
        time.sleep(0.2)  # idle time: must not count as useful time

    assert processed == records
    assert reporter.reports_sent >= 2
    reports = [parse(MetricsReport, m.value()) for m in reader(settings.topics.metrics, reporter.reports_sent)]
    assert {r.instance_id for r in reports} == {"parser-0"}
    assert sum(r.records_in for r in reports) == records
    assert sum(r.records_out for r in reports) == records
    useful = sum(r.useful_time_s for r in reports)
    wall = sum(r.interval_s for r in reports)
    assert records * WORK_S <= useful < records * WORK_S * 1.5 + 0.1
    assert useful < wall
    assert reports[-1].lag == 0
    assert all(r.upstreams == ["source"] and r.input_partitions == 2 for r in reports)
    assert any(r.latency_p50_ms == 5.0 for r in reports)


def test_reporter_memory_is_bounded_when_the_broker_is_down(settings):
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"bootstrap": "127.0.0.1:1"})})
    reporter = MetricsReporter(app="demo", operator="parser", settings=settings, max_pending=5, interval_s=0.1)
    for _ in range(20):
        reporter.record_in(3)
        reporter.flush_once()
    assert reporter.reports_sent == 5
    assert reporter.reports_dropped == 15


def test_reporter_learns_its_parallelism_from_the_supervisors_state_file(settings, reader, tmp_path, monkeypatch):
    state = tmp_path / "parser.state.json"
    state.write_text(json.dumps({"operator": "parser", "parallelism": 3, "desired": 3, "generation": 1}))
    monkeypatch.setenv("LASTREAM_WORKER_STATE", str(state))
    reporter = MetricsReporter(app="demo", operator="parser", upstreams=["source"], settings=settings)
    reporter.flush_once()
    state.write_text(json.dumps({"operator": "parser", "parallelism": 5, "desired": 5, "generation": 2}))
    reporter.flush_once()
    reporter.stop()
    reports = [parse(MetricsReport, m.value()) for m in reader(settings.topics.metrics, 2)]
    assert [r.parallelism for r in reports] == [3, 5]


def test_reporter_that_cannot_know_its_parallelism_says_so_once(settings, monkeypatch, caplog):
    monkeypatch.delenv("LASTREAM_WORKER_STATE", raising=False)
    with caplog.at_level(logging.WARNING, logger="lastream_stream.kafka.reporter"):
        reporter = MetricsReporter(app="demo", operator="parser", settings=settings)
        reports = [reporter.snapshot() for _ in range(3)]
    assert [r.parallelism for r in reports] == [1, 1, 1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "MetricsReporter(parallelism=...)" in warnings[0]
    assert "LASTREAM_WORKER_STATE" in warnings[0]
    assert (
        MetricsReporter(app="demo", operator="parser", parallelism=lambda: 4, settings=settings).snapshot().parallelism
        == 4
    )


def test_an_interval_any_part_of_which_the_app_was_not_ready_is_reported_not_ready(settings, reader):
    """An app replaying its state or waiting for partitions says so; a report covers an
    interval, so a rebalance that starts and ends within one still shows."""
    reporter = MetricsReporter(app="demo", operator="counter", parallelism=1, ready=False, settings=settings)
    reporter.flush_once()  # waiting for partitions
    reporter.set_ready(True)
    reporter.flush_once()  # began not ready
    reporter.flush_once()
    reporter.set_ready(False)
    reporter.set_ready(True)
    reporter.flush_once()  # a rebalance within the interval
    reporter.flush_once()
    reporter.stop()
    reports = [parse(MetricsReport, m.value()) for m in reader(settings.topics.metrics, 5)]
    assert [r.ready for r in reports] == [False, False, True, False, True]


def test_the_lag_from_the_broker_counts_partitions_the_app_has_not_read_yet(
    clients, make_topic, group_id, consumer_factory
):
    """Before its first record of a partition (recovering, or just assigned) an app knows no
    position there: the group's committed offset, or the log start, is where it stands."""
    topic = make_topic(partitions=2)
    with clients.producer() as producer:
        for partition, records in ((0, 10), (1, 6)):
            for _ in range(records):
                producer.produce(topic, value=b"x", partition=partition)
    committer = consumer_factory(group_id, [])
    committer.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    lag = BrokerLag(group_id, clients.settings)
    try:
        assert lag([(topic, 0), (topic, 1)]) == 6 + 6
        assert lag([(topic, 0), (topic, 1)], positions={(topic, 1): 5, (topic, 0): 2}) == 6 + 1
        assert lag([]) == 0
    finally:
        lag.close()


def test_an_interval_that_stalled_is_not_followed_by_a_burst_of_empty_ones(settings, reader):
    """A lag read that hangs for 5 intervals (as one through the broker did during a group
    join) delays one report; the next comes an interval later, not one per missed interval
    back to back (18 within 2 ms, each 0.01 s long, which the agent took for a clock 37 s off)."""
    stalled = []

    def lag() -> int:
        if not stalled:
            stalled.append(True)
            time.sleep(1.0)
        return 0

    reporter = MetricsReporter(
        app="stall", operator="work", parallelism=1, lag=lag, interval_s=0.2, settings=settings, instance_id="w"
    )
    with reporter:
        time.sleep(2.0)
    reports = [parse(MetricsReport, m.value()) for m in reader(settings.topics.metrics, reporter.reports_sent)]
    # The stalled one covers its 0.2 s and the second of its stall; none is shorter than half an interval.
    assert all(r.interval_s >= 0.1 for r in reports[:-1]), [round(r.interval_s, 3) for r in reports]
    assert len(reports) <= 2.0 / 0.2 - 3, [round(r.interval_s, 3) for r in reports]
