"""What a service keeps grows with what it is sent, never with how long it runs: the reports
an app's controller buffers (while it awaits an ack too) and the sink's latest counts are
capped, with a log line when a cap is hit; what a controller and the control history keep
of past windows, outcomes and acks stops growing once its few recent ones are in."""

from __future__ import annotations

import gc
import logging
import math
import sys

import pytest
from factories import applied_ack, sample_report
from test_agent_service import DS2
from test_controller import T0, feed, make

from lastream_stream.agent.controller import AppController, ControllerSettings, Phase
from lastream_stream.agent.ownership import ControlHistory
from lastream_stream.wire.contracts import ScalingCommand
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


@pytest.fixture
def unlogged():
    """pytest keeps every record a test logs: that would be the test's growth, not the service's."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def blocks() -> int:
    gc.collect()
    return sys.getallocatedblocks()


class Soak:
    """``benchmarks/soak.py`` for one app: every second a source at a rate that swings over
    200 s and the workers the last applied command asked for, each taking 40 records per busy
    second; every instance takes a new id every 300 s; a command is acked 3 s later, every
    fifth never (the ack timeout)."""

    def __init__(self) -> None:
        # Memory, not headroom, is under test: the scale-in headroom is DS2's own sizing (100%
        # busy), so that DS2's scale-ins go and the controller goes on commanding all along.
        settings = ControllerSettings(window_s=5, warmup_s=2, outcome_s=5, ack_timeout_s=20, scale_in_utilisation=1.0)
        self.controller = AppController("soak", DS2(), settings, since=T0)
        self.parallelism, self.acks, self.commands, self.now = 1, [], 0, 0

    def run(self, seconds: int) -> None:
        c = self.controller
        for _ in range(seconds):
            self.now += 1
            at, epoch = T0 + self.now, self.now // 300
            rate = 100 + 80 * math.sin(2 * math.pi * self.now / 200)
            taken = min(rate / self.parallelism, 40.0)
            c.on_report(self._report("source", f"src-{epoch}", at, rate, 0.1, 1, []), received_at=at)
            for k in range(self.parallelism):
                worker = self._report("work", f"w{k}-{epoch}", at, taken, taken / 40, self.parallelism, ["source"])
                c.on_report(worker, received_at=at)
            for action in c.tick(at):
                if isinstance(action.message, ScalingCommand):
                    self.commands += 1
                    if self.commands % 5:
                        self.acks.append((at + 3, action.message))
            for _, command in [(due, command) for due, command in self.acks if due <= at]:
                self.parallelism = command.target["work"]
                c.on_ack(applied_ack(command, command.target), at)
            self.acks = [(due, command) for due, command in self.acks if due > at]

    @staticmethod
    def _report(operator, instance_id, at, records, useful_s, parallelism, upstreams):
        counted = {"records_in": int(records), "records_out": int(records), "useful_time_s": useful_s}
        return sample_report(
            app="soak",
            operator=operator,
            instance_id=instance_id,
            interval_end=at,
            interval_s=1.0,
            lag=0,
            parallelism=parallelism,
            upstreams=upstreams,
            input_partitions=8 if upstreams else None,
            **counted,
        )


def test_a_controller_holds_no_more_memory_the_longer_it_runs(unlogged):
    """Once its first windows, outcomes and acks are in, 20 more minutes of windows, commands,
    acks, ack timeouts and instances under new ids leave a controller's memory as it was
    (the two samples 20 minutes apart are at the same point of the rate's swing and of the
    instances' restarts). It grew by every window's and every outcome's reward and every
    ack's decision id for hours: about 11 MB of the 33 ``benchmarks/soak.py`` gained for 200 apps."""
    soak = Soak()
    soak.run(1350)
    before, commands, decisions = blocks(), soak.commands, soak.controller.decisions
    soak.run(1200)
    grown = blocks() - before
    assert soak.commands - commands >= 8 and soak.controller.decisions - decisions >= 150  # it did go on deciding
    assert grown < 20, f"{grown} more memory blocks after 1 200 simulated seconds"
    assert soak.controller.outcomes_measured > len(soak.controller.rewards)  # counted, not all kept


def test_the_control_history_holds_no_more_memory_the_more_commands_it_sees(unlogged):
    """Every agent keeps every app's control history, for as long as it runs: 100 more
    commands and their acks leave it as it was. It kept the last 100 acks of every app."""
    history = ControlHistory(max_apps=10)

    def commands(generations):
        for generation in generations:
            command = ScalingCommand(app="app", generation=generation, target={"work": 1 + generation % 4})
            history.command(command)
            history.ack(applied_ack(command, command.target))

    commands(range(1, 21))
    before = blocks()
    commands(range(21, 121))
    grown = blocks() - before
    assert grown < 20, f"{grown} more memory blocks after 100 commands and acks"
    controller = make({"work": 1})
    controller.app = "app"
    history.replay(controller, T0, signed=True)
    assert controller.generation == 120 and controller.phase is Phase.OBSERVING  # the last command's ack replayed
    assert controller.running == {"work": 1}
