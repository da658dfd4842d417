"""A counter that starts on a changelog to replay tells the truth while it replays."""

import time

from lastream_stream.wire.contracts import MetricsReport
from lastream_stream.wire.deadletter import parse

from .conftest import counter_backlog

CHANGELOG_RECORDS = 30_000  # a few seconds of replay for a Faust worker
WORDS = 40


def test_a_counter_replaying_its_changelog_reports_not_ready_with_its_true_lag(
    settings, clients, wc, spawn_worker, consumer_factory, group_id
):
    counter_backlog(settings, clients, wc, CHANGELOG_RECORDS, WORDS)
    metrics = consumer_factory(group_id, [settings.topics.metrics])

    spawn_worker("counter")

    reports: list[MetricsReport] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(r.ready for r in reports):
        msg = metrics.poll(0.5)
        if msg is not None and msg.error() is None:
            reports.append(parse(MetricsReport, msg.value()))
    seen = [(r.ready, r.lag, r.records_in) for r in reports]
    assert reports and reports[-1].ready, f"never ready: {seen}"
    assert not reports[0].ready and not any(r.ready for r in reports[:-1])
    # Replaying, the counter holds its words partitions and has read nothing of them: all is lag.
    assert any(r.lag == WORDS for r in reports), seen
    # Once replayed, it counts (the first ready report may close an interval before that).
    while time.monotonic() < deadline + 30 and not any(r.records_in for r in reports):
        msg = metrics.poll(0.5)
        if msg is not None and msg.error() is None:
            reports.append(parse(MetricsReport, msg.value()))
    assert any(r.ready and r.records_in > 0 for r in reports), [(r.ready, r.lag, r.records_in) for r in reports]
