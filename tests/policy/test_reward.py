"""The La-Stream reward against values worked out by hand, in both forms, and the properties
that make the default form mean the same thing for an app at 1 record/s and at 10^6."""

from __future__ import annotations

import math

import pytest
from policy_graphs import graph_of, operator_reports

from lastream_stream.policy.measure import observed
from lastream_stream.policy.reward import Measured, RewardParams, log_reward, path_backlog_s, reward

ABSOLUTE = RewardParams(form="absolute")


def measured(latency_ms=0.0, backlog_s=0.0, lag=0.0, parallelism=None, required=None, service_ms=10.0) -> Measured:
    parallelism = parallelism or {"a": 1, "b": 1, "c": 1}
    return Measured(latency_ms, backlog_s, service_ms, lag, parallelism, required or dict(parallelism))


def test_right_sized_idle_app():
    # A = 3 instances / 3 needed = 1 -> exponent 0.5 -> exp(-0.5/3)
    assert reward(measured()) == pytest.approx(0.8464817248906141, rel=1e-12)


def test_default_scale_free_params():
    # L = 500 ms of 1000 -> 0.5; D = 5 s of 10 -> 0.5; A = 6 / 4 = 1.5 -> 0.75; r = exp(-1.75/3)
    m = measured(latency_ms=500.0, backlog_s=5.0, lag=123456.0, parallelism={"x": 2, "y": 4}, required={"x": 1, "y": 3})
    assert reward(m) == pytest.approx(math.exp(-1.75 / 3), rel=1e-12)
    assert reward(m) == pytest.approx(0.5580351457700471, rel=1e-12)


def test_absolute_form_is_the_papers():
    # L = 100 ms -> 1; D = 1000 records -> 1; a = {2, 4} -> 0.5 * 3 = 1.5; r = cbrt(e^-1 * e^-1 * e^-1.5)
    m = measured(latency_ms=100.0, backlog_s=99.0, lag=1000.0, parallelism={"x": 2, "y": 4}, required={"x": 1, "y": 1})
    assert reward(m, ABSOLUTE) == pytest.approx(0.31140322391459774, rel=1e-12)


def test_custom_params():
    params = RewardParams(latency_target_ms=50, d_star_s=2, eta_l=2, eta_d=0.5, eta_a=1)
    # 2 * 25/50 = 1; 0.5 * 4/2 = 1; 1 * 12/6 = 2 -> exp(-4/3)
    m = measured(
        latency_ms=25.0, backlog_s=4.0, parallelism={"a": 2, "b": 4, "c": 6}, required={"a": 2, "b": 2, "c": 2}
    )
    assert reward(m, params) == pytest.approx(math.exp(-4 / 3), rel=1e-12)


def test_an_apps_own_latency_target():
    params = RewardParams().for_app(latency_target_ms=250.0)
    assert reward(measured(latency_ms=250.0), params) == pytest.approx(math.exp(-1.5 / 3), rel=1e-12)
    assert RewardParams().for_app(None) == RewardParams()


def test_a_slow_apps_default_latency_target_is_twice_its_processing_time():
    # 5 s per record on the slowest path: the target is 10 s, so 5 s of latency costs 0.5, not 5.
    assert reward(measured(latency_ms=5000.0, service_ms=5000.0)) == pytest.approx(math.exp(-1.0 / 3), rel=1e-12)
    # Its own target wins, however slow it is.
    own = RewardParams().for_app(latency_target_ms=2500.0)
    assert reward(measured(latency_ms=5000.0, service_ms=5000.0), own) == pytest.approx(math.exp(-2.5 / 3), rel=1e-12)


def test_backlog_seconds_add_up_along_the_slowest_path():
    # src -> a -> c and src -> b -> c: a holds 2 s of input, b 5 s, c 1 s.
    upstreams = {"src": [], "a": ["src"], "b": ["src"], "c": ["a", "b"]}
    lag = {"src": 0.0, "a": 200.0, "b": 50.0, "c": 30.0}
    feed = {"src": 100.0, "a": 100.0, "b": 10.0, "c": 30.0}
    assert path_backlog_s(lag, feed, upstreams) == pytest.approx(6.0)


def app(scale: float, lag: int):
    """src -> split (x4) -> count, processing ``scale`` times the records at ``scale`` times the speed."""
    return graph_of(
        operator_reports("src", records_in=round(100 * scale), records_out=round(100 * scale), useful_s=0.5),
        operator_reports(
            "split",
            upstreams=("src",),
            instances=2,
            records_in=round(50 * scale),
            records_out=round(200 * scale),
            useful_s=0.8,
            lag=lag,
        ),
        operator_reports(
            "count",
            upstreams=("split",),
            instances=3,
            records_in=round(133 * scale),
            records_out=round(133 * scale),
            useful_s=0.6,
            lag=lag * 4,
        ),
    )


def test_the_same_app_ten_times_faster_scores_the_same():
    for lag in (0, 30, 3000):
        slow, fast = observed(app(1.0, lag)), observed(app(10.0, lag * 10))
        assert fast.backlog_s == pytest.approx(slow.backlog_s, rel=1e-2)
        assert fast.required == slow.required
        assert log_reward(fast) == pytest.approx(log_reward(slow), rel=1e-2, abs=1e-6)


def test_the_absolute_form_is_not_scale_free():
    slow, fast = observed(app(1.0, 300)), observed(app(10.0, 3000))
    assert log_reward(fast, ABSOLUTE) < log_reward(slow, ABSOLUTE) - 1.0


def test_no_underflow_at_a_billion_records_of_lag():
    huge, worse = observed(app(1.0, 10**9)), observed(app(1.0, 2 * 10**9))
    assert math.isfinite(log_reward(huge)) and log_reward(worse) < log_reward(huge)
    assert math.isfinite(log_reward(measured(lag=1e9), ABSOLUTE))


def test_each_term_lowers_the_reward():
    base = log_reward(measured(latency_ms=10.0, backlog_s=1.0))
    assert log_reward(measured(latency_ms=20.0, backlog_s=1.0)) < base
    assert log_reward(measured(latency_ms=10.0, backlog_s=2.0)) < base
    assert (
        log_reward(
            measured(
                latency_ms=10.0, backlog_s=1.0, parallelism={"a": 1, "b": 1, "c": 2}, required={"a": 1, "b": 1, "c": 1}
            )
        )
        < base
    )


def test_invalid_inputs():
    with pytest.raises(ValueError):
        log_reward(measured(latency_ms=-1.0))
    with pytest.raises(ValueError):
        log_reward(Measured(1.0, 0.0, 0.0, 0.0, {}, {}))
