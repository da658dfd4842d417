import time

from lastream_stream.kafka.reporter import MetricsReporter, consumer_lag
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
