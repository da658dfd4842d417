"""The La-Stream reward against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from lastream_stream.policy.reward import RewardParams, reward


def test_idle_minimal_deployment():
    # no latency, no backlog, three operators at 1: exponent 0.5 * (1+1+1)/3 = 0.5 -> exp(-0.5/3)
    assert reward(0.0, 0, [1, 1, 1]) == pytest.approx(0.8464817248906141, rel=1e-12)


def test_default_params():
    # L = 100 ms -> 1; D = 1000 -> 1; a = {2, 4} -> 0.5 * 3 = 1.5; r = cbrt(e^-1 * e^-1 * e^-1.5) = e^(-3.5/3)
    expected = (math.exp(-1.0) * math.exp(-1.0) * math.exp(-1.5)) ** (1 / 3)
    assert expected == pytest.approx(0.31140322391459774, rel=1e-12)
    assert reward(100.0, 1000, {"x": 2, "y": 4}) == pytest.approx(expected, rel=1e-12)


def test_custom_params():
    params = RewardParams(theta_ms=50, d_star=500, eta_l=2, eta_d=0.5, eta_a=1, a_min=2)
    # 2 * 25/50 = 1; 0.5 * 1000/500 = 1; 1/3 * (2/2 + 4/2 + 6/2) = 2; e^(-4/3)
    assert reward(25.0, 1000, [2, 4, 6], params) == pytest.approx(0.26359713811572677, rel=1e-12)


def test_huge_backlog_is_zero_not_an_error():
    assert reward(0.0, 10_000_000, [1]) == 0.0


def test_each_term_lowers_the_reward():
    base = reward(10.0, 10, [2, 2])
    assert reward(20.0, 10, [2, 2]) < base
    assert reward(10.0, 20, [2, 2]) < base
    assert reward(10.0, 10, [2, 3]) < base


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        reward(-1.0, 0, [1])
    with pytest.raises(ValueError):
        reward(1.0, 0, [])
