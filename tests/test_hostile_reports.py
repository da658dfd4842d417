"""Schema-valid reports that must not freeze or steer the decision cycle: each leaves the
decision at the honest answer within one window. The honest app (``feed``): a source
emitting 300/s and one splitter instance that does 200 records per useful second, so DS2
scales the splitter to 2."""

import json
import logging

import pytest
from factories import sample_report
from test_controller import T0, DS2Policy, feed

from lastream_stream.agent.controller import AppController, ControllerSettings
from lastream_stream.policy.ds2 import optimal_parallelism
from lastream_stream.policy.graph import build_graph
from lastream_stream.wire.contracts import CommandAck, MetricsReport, ScalingCommand
from lastream_stream.wire.deadletter import BadMessage, parse


def ds2_controller(**settings):
    settings = {"window_s": 5, "warmup_s": 2, "outcome_s": 5} | settings
    return AppController("wordcount", DS2Policy(), ControllerSettings(**settings), since=T0)


def splitter(instance, end, **fields):
    return sample_report(
        operator="splitter",
        instance_id=instance,
        interval_end=end,
        interval_s=1.0,
        records_in=100,
        records_out=100,
        useful_time_s=0.5,
        lag=0,
        parallelism=1,
        upstreams=["source"],
    ).model_copy(update=fields)


def source(end, rate=300):
    return sample_report(
        operator="source",
        instance_id="source-0",
        interval_end=end,
        interval_s=1.0,
        records_in=rate,
        records_out=rate,
        useful_time_s=0.1,
        parallelism=1,
        upstreams=[],
        input_partitions=None,
    )


def commanded(actions):
    return [a.message.target for a in actions if isinstance(a.message, ScalingCommand)]


def test_the_honest_app_scales_the_splitter_to_2():
    c = ds2_controller()
    feed(c, T0, 5, parallelism=1, source_rate=300)
    assert commanded(c.tick(T0 + 5)) == [{"splitter": 2}]


@pytest.mark.parametrize("interval_s", [1e-300, 1e-3, 3601.0])
def test_an_absurd_interval_is_dead_lettered_at_decode(interval_s):
    payload = json.loads(splitter("s", T0).to_bytes()) | {"interval_s": interval_s, "useful_time_s": 0.0}
    with pytest.raises(BadMessage, match="interval_s"):
        parse(MetricsReport, json.dumps(payload).encode())


def test_a_busy_time_of_almost_nothing_with_records_is_dead_lettered():
    """100 records in 1e-300 busy seconds: the true rate would overflow."""
    payload = json.loads(splitter("s", T0).to_bytes()) | {"useful_time_s": 1e-300}
    with pytest.raises(BadMessage, match="useful_time_s"):
        parse(MetricsReport, json.dumps(payload).encode())


def test_an_instance_with_almost_no_work_does_not_set_the_true_rate():
    """Two splitters at 200 records per useful second and a third that only dead-lettered
    (2 records in 1 ms each second): the true rate stays 200, DS2 stays at 3 for 600/s."""
    reports = [source(T0 + t, rate=600) for t in range(1, 6)]
    reports += [splitter(f"s{i}", T0 + t, parallelism=3) for i in range(2) for t in range(1, 6)]
    reports += [
        splitter("s2", T0 + t, parallelism=3, records_in=2, records_out=2, useful_time_s=0.001) for t in range(1, 6)
    ]
    graph = build_graph(reports)
    assert graph.operators["splitter"].true_input_rate == pytest.approx(200)
    assert optimal_parallelism(graph)["splitter"] == 3


def test_the_true_rate_is_weighted_by_records():
    """One instance did 100 records in 0.5 s, another 300 in 1 s: 400 records in 1.5 s."""
    reports = [splitter("a", T0 + 1), splitter("b", T0 + 1, records_in=300, records_out=300, useful_time_s=1.0)]
    assert build_graph(reports).operators["splitter"].true_input_rate == pytest.approx(400 / 1.5)


def test_one_report_claiming_parallelism_8_does_not_block_or_steer_the_decision():
    c = ds2_controller()
    feed(c, T0, 5, parallelism=1, source_rate=300)
    c.on_report(splitter("splitter-0", T0 + 4.5, parallelism=8))
    assert commanded(c.tick(T0 + 5)) == [{"splitter": 2}]


def test_the_running_parallelism_is_the_supervisors_once_it_acknowledged_one():
    """Two splitters run (the supervisor's ack says so) and every report claims 5: decided on 2."""
    c = ds2_controller()
    ack = CommandAck(app="wordcount", decision_id="d", generation=1, status="applied", applied={"splitter": 2})
    c.on_ack(ack, now=T0 - 10)
    for t in range(1, 6):
        c.on_report(source(T0 + t))
        for i in range(2):
            c.on_report(splitter(f"splitter-{i}", T0 + t, parallelism=5))
    (record,) = [a.message for a in c.tick(T0 + 5)]
    assert record.kind == "hold" and record.state["splitter"].parallelism == 2


def test_a_cycle_is_isolated_and_the_rest_decided(caplog):
    c = ds2_controller()
    feed(c, T0, 5, parallelism=1, source_rate=300)
    for t in range(1, 6):
        for op, upstream in (("a", "b"), ("b", "a")):
            c.on_report(splitter(f"{op}-0", T0 + t, operator=op, upstreams=[upstream]))
    with caplog.at_level(logging.WARNING, logger="lastream_stream"):
        actions = c.tick(T0 + 5)
    assert commanded(actions) == [{"splitter": 2}]
    assert any("cycle" in r.getMessage() and "'a'" in r.getMessage() for r in caplog.records)


def test_operators_and_instances_beyond_the_caps_are_refused_with_a_reason():
    c = ds2_controller(max_operators=2, max_instances=2)
    feed(c, T0, 5, parallelism=1, source_rate=300)
    assert c.on_report(splitter("splitter-1", T0 + 5)) is None
    assert "instances" in c.on_report(splitter("splitter-2", T0 + 5))
    assert "operators" in c.on_report(sample_report(operator="extra", interval_end=T0 + 5))
    assert all(r.operator != "extra" and r.instance_id != "splitter-2" for r in c.reports)


def test_future_dated_reports_are_timed_by_their_arrival_and_leave_with_their_window(caplog):
    """Three reports of a new instance dated 60 s ahead, claiming a billion records each:
    timed by when they arrived, they leave within one window, and the decision after it is
    the honest one, on the honest rates."""
    c = ds2_controller()
    with caplog.at_level(logging.WARNING, logger="lastream_stream"):
        for _ in range(3):
            c.on_report(splitter("liar", T0 + 60, records_in=10**9, useful_time_s=1.0), received_at=T0 + 4)
    assert any("splitter/liar" in r.getMessage() and "-56.0 s" in r.getMessage() for r in caplog.records)
    assert max(r.interval_end for r in c.reports) == T0 + 4
    feed(c, T0, 10, parallelism=1, source_rate=300)
    actions = c.tick(T0 + 10)
    assert commanded(actions) == [{"splitter": 2}]
    assert actions[-1].message.state["splitter"].input_rate == pytest.approx(100)


def test_a_worker_15_s_behind_is_decided_on_and_logged_once(caplog):
    c = ds2_controller()
    with caplog.at_level(logging.WARNING, logger="lastream_stream"):
        for t in range(1, 6):
            for report in (source(T0 + t - 15), splitter("splitter-0", T0 + t - 15)):
                c.on_report(report, received_at=T0 + t + 0.01)
        actions = c.tick(T0 + 5)
    assert commanded(actions) == [{"splitter": 2}]
    skewed = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    assert len(skewed) == 2 and all("+15.0 s" in m for m in skewed)
