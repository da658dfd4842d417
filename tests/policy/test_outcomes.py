"""Online outcomes: judged like pretraining's labels, over the windows a scheme ran for."""

import math

import pytest
from policy_graphs import chain_graph

from lastream_stream.policy.base import Decision
from lastream_stream.policy.outcomes import Outcomes
from lastream_stream.policy.reward import horizon_log_reward


def decision(map_instances: int) -> Decision:
    graph = chain_graph()
    return Decision.single("test", graph, graph.parallelism | {"map": map_instances})


def test_the_last_interval_is_held_for_the_rest_of_the_horizon():
    # 10 s intervals, 60 s horizon: 0.1 and 0.4 observed, 0.4 held for the 4 intervals left.
    assert math.exp(horizon_log_reward([math.log(0.1), math.log(0.4)], 10.0, 60.0)) == pytest.approx(
        (0.1 + 0.4 * 5) / 6
    )
    # Observed beyond the horizon: the plain mean of what was observed.
    assert math.exp(horizon_log_reward([math.log(0.2), math.log(0.6)], 10.0, 10.0)) == pytest.approx(0.4)
    # An unmeasured restart of 10 s counts as the first interval: weights 2 and 1 + 3 held.
    assert math.exp(horizon_log_reward([math.log(0.1), math.log(0.4)], 10.0, 60.0, 10.0)) == pytest.approx(
        (0.1 * 2 + 0.4 * 4) / 6
    )
    # Rewards that underflow on their own still average in logs.
    assert horizon_log_reward([-2000.0, -2000.0], 10.0, 60.0) == pytest.approx(-2000.0)
    with pytest.raises(ValueError):
        horizon_log_reward([], 10.0, 60.0)


def test_an_outcome_closes_after_its_observation_time():
    outcomes = Outcomes(window_s=10.0, observe_s=30.0, horizon_s=60.0)
    change, hold = decision(3), decision(3)
    running = change.chosen
    outcomes.start(change)
    assert outcomes.window(math.log(0.1), running) == []
    outcomes.start(hold)  # decided on the window just counted: its outcome starts with the next
    assert outcomes.window(math.log(0.4), running) == []
    ((closed, log_r),) = outcomes.window(math.log(0.4), running)
    assert closed is change
    assert math.exp(log_r) == pytest.approx((0.1 + 0.4 + 0.4 * 4) / 6)
    assert [o.decision for o in outcomes.open] == [hold]


def test_a_scheme_replaced_before_its_outcome_is_complete_is_judged_on_what_it_ran():
    outcomes = Outcomes(window_s=10.0, observe_s=30.0, horizon_s=60.0)
    reverted, unmeasured = decision(2), decision(2)
    outcomes.start(reverted, unobserved_s=10.0)
    outcomes.window(math.log(0.2), reverted.chosen)
    outcomes.start(unmeasured)  # replaced before a window of its own: nothing to judge it on
    ((judged, log_r),) = outcomes.replaced()
    # The 10 s restart counts like the one measured window, which is then held: all 0.2.
    assert judged is reverted and math.exp(log_r) == pytest.approx(0.2)
    assert outcomes.open == []
    outcomes.start(decision(3), unobserved_s=10.0)
    assert [outcomes.window(math.log(0.5), decision(3).chosen) for _ in range(2)] == [[], []]
    ((_, log_r),) = outcomes.window(math.log(0.5), decision(3).chosen)
    assert math.exp(log_r) == pytest.approx(0.5)


def test_a_window_of_another_scheme_drops_the_outcomes_it_does_not_belong_to():
    """Someone else rescaled the app: the running scheme is no decision of ours."""
    outcomes = Outcomes(window_s=10.0, observe_s=30.0, horizon_s=60.0)
    ours = decision(3)
    outcomes.start(ours)
    outcomes.window(math.log(0.5), ours.chosen)
    assert outcomes.window(math.log(0.5), decision(5).chosen) == []
    assert outcomes.open == []
