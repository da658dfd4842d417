"""What a service keeps grows with what it is sent, never with how long it runs: the reports
an app's controller buffers (while it awaits an ack too) and the sink's latest counts are
capped, with a log line when a cap is hit."""

from __future__ import annotations

import logging

from factories import sample_report
from test_controller import T0, feed, make

from lastream_stream.agent.controller import Phase
from wordcount_app.topk import LatestCounts


def awaiting(**settings):
    c = make({"splitter": 3}, **settings)
    feed(c, T0, 5, parallelism=1)
    c.tick(T0 + 5)
    assert c.phase is Phase.AWAITING_ACK
    return c


def test_reports_buffered_while_an_ack_is_awaited_keep_to_the_last_window():
    """An ack that never comes: 80 s of reports, with a tick every second, keep one window's."""
    c = awaiting(window_s=5, ack_timeout_s=1000)
    for t in range(5, 85):
        feed(c, T0 + t, 1, parallelism=1)
        c.tick(T0 + t + 1)
    assert c.phase is Phase.AWAITING_ACK
    assert len(c.reports) <= 2 * 7  # source and splitter, one report a second, a 5 s window and its slack


def test_more_reports_than_the_cap_drop_the_oldest_and_say_so(caplog):
    c = make({"splitter": 3}, max_reports=50)
    with caplog.at_level(logging.WARNING):
        for n in range(200):  # in one window: instances with ever new ids
            c.on_report(sample_report(operator="splitter", instance_id=f"s-{n}", interval_end=T0 + 10))
    assert len(c.reports) == 50
    assert c.reports[-1].instance_id == "s-199"
    assert "LASTREAM_CONTROLLER_MAX_REPORTS" in caplog.text


def test_the_sinks_latest_counts_evict_the_least_recently_updated_word(caplog):
    latest = LatestCounts(max_words=3)
    with caplog.at_level(logging.WARNING):
        for word, count in [("a", 5), ("b", 1), ("c", 2), ("a", 6), ("d", 1)]:
            latest.update(word, count)
    assert latest.top(10) == [("a", 6), ("c", 2), ("d", 1)]  # b was updated least recently
    assert "LASTREAM_WC_SINK_MAX_WORDS" in caplog.text


def test_a_count_never_goes_back():
    """Replayed updates come in again: the latest count of a word is its highest."""
    latest = LatestCounts(max_words=3)
    latest.update("a", 5)
    latest.update("a", 3)
    assert latest.top(1) == [("a", 5)]
