"""The per-operator capacity model: what it learns, that it never inverts, that it survives a
checkpoint, and that DS2's candidate uses it once two configurations were seen."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from lastream_stream.policy.agent import AgentConfig, LaStreamAgent
from lastream_stream.policy.capacity import OperatorCapacity
from lastream_stream.policy.ds2 import ds2_plan
from lastream_stream.policy.graph import build_graph
from lastream_stream.sim import Constant, Scenario, SimOperator, Simulator


def test_recovers_a_concave_curve_from_noisy_samples():
    rng = random.Random(3)
    model = OperatorCapacity()
    for _ in range(12):
        for p in (2, 4, 6, 8):
            model.observe(p, 100.0 * p**0.7 * rng.uniform(0.95, 1.05))
    # 36 windows of evidence against a prior worth 2: b within a few hundredths of 0.7.
    assert model.exponent == pytest.approx(0.7, abs=0.05)
    assert model.capacity(12) == pytest.approx(100.0 * 12**0.7, rel=0.08)
    assert model.min_parallelism(100.0 * 10**0.7, cap=64) in (10, 11)


def test_one_configuration_is_ds2s_linear_model():
    model = OperatorCapacity()
    assert model.capacity(3) is None and model.min_parallelism(100.0, cap=8) is None
    model.observe(4, 400.0)
    assert model.exponent == 1.0
    assert model.capacity(6) == pytest.approx(600.0)
    assert model.min_parallelism(550.0, cap=64) == 6


def test_never_less_capacity_for_more_instances():
    rng = random.Random(7)
    for _ in range(50):
        model = OperatorCapacity()
        for _ in range(rng.randint(1, 8)):
            model.observe(rng.randint(1, 20), rng.uniform(10.0, 1000.0))  # anything, decreasing included
        predicted = [model.capacity(p) for p in range(1, 40)]
        assert all(b >= a for a, b in itertools.pairwise(predicted))


def test_an_ineffective_scale_out_is_noted_and_not_repeated():
    model = OperatorCapacity()
    for _ in range(3):
        model.observe(6, 600.0)
    for _ in range(3):
        model.observe(7, 618.0)  # the seventh instance added 3 %, not 17 %
    assert model.ineffective() == "6 -> 7 added 3% capacity (18% of linear); holding at 7"
    assert model.added_share(6, 7) == pytest.approx(0.18)
    # The prior still gives b = (3 * 0.19 + 2) / 5 = 0.51, which would ask for 15 instances
    # for 900/s; what was measured wins: no more than 7.
    assert model.min_parallelism(900.0, cap=64) == 7
    once = OperatorCapacity()
    for p, rate in ((6, 600.0), (6, 600.0), (7, 601.0)):
        once.observe(p, rate)
    assert once.ineffective() is None  # one window at 7 is not enough to judge it


def test_a_single_noisy_window_barely_bends_a_well_observed_curve():
    model = OperatorCapacity()
    for _ in range(100):
        model.observe(4, 400.0)
    model.observe(5, 420.0)  # a bad window: slope 0.22
    # The evidence is the one window at 5, against a prior worth 2: b = (0.22 + 2) / 3.
    assert model.exponent == pytest.approx((math.log(420 / 400) / math.log(5 / 4) + 2) / 3)
    assert model.exponent > 0.7


def test_round_trips_through_the_checkpoint(tmp_path):
    agent = LaStreamAgent()
    curve = agent.capacity.of("app", "count")
    for p, rate in ((2, 200.0), (2, 210.0), (4, 330.0)):
        curve.observe(p, rate)
    agent.save(tmp_path / "agent.pt")
    restored = LaStreamAgent.load(tmp_path / "agent.pt").capacity.of("app", "count")
    assert restored == curve
    assert restored.capacity(8) == pytest.approx(curve.capacity(8))


def sublinear(worker: int) -> Scenario:
    """source at 2000/s -> work (300/s at p = 1, capacity 300 * p ** 0.7)."""
    return Scenario(
        name="sublinear",
        operators=(
            SimOperator("source", true_rate=10_000.0),
            SimOperator("work", ("source",), true_rate=300.0, scaling_exponent=0.7, partitions=64, parallelism=worker),
        ),
        schedule=Constant(2000.0),
    )


def window(worker: int):
    return build_graph([r for r in Simulator(sublinear(worker)).run(20.0) if r.interval_end > 1_700_000_010.0])


def test_after_two_configurations_the_ds2_candidate_accounts_for_sublinear_scaling():
    """Seen at 2 (capacity 300 * 2^0.7 = 487) and at 4 (792), three windows each: b is fitted
    as ln(792 / 487) / ln 2 = 0.7 and shrunk with the three windows of evidence to
    (3 * 0.7 + 2 * 1) / 5 = 0.82; through the 792/s measured at 4, 792 (p / 4)^0.82 >= 2000
    from p = 12.4, so 13. DS2's linear model, from 198/s per instance at 4, says 11; the
    simulator needs 16."""
    agent = LaStreamAgent()
    for worker in (2, 2, 2, 4, 4, 4):
        graph = window(worker)
        decision = agent.decide(graph)
    curve = agent.capacity.of("sublinear", "work")
    assert curve.exponent == pytest.approx(0.82, abs=0.01)
    assert ds2_plan(graph).parallelism["work"] == 11
    assert (
        ds2_plan(graph, capacity={"work": curve}).parallelism["work"] == 13 == math.ceil(4 * (2000 / 792) ** (1 / 0.82))
    )
    assert Simulator(sublinear(4)).oracle()["work"] == 16
    # The agent's pool holds the curve's plans next to DS2's (at 100% it equals DS2 at 80%).
    from_curve = {c.candidate.scheme["work"] for c in decision.candidates if c.candidate.source == "capacity"}
    assert from_curve and min(from_curve) > 13


def test_without_the_capacity_model_the_agent_plans_as_ds2():
    agent = LaStreamAgent(AgentConfig(capacity_model=False))
    for worker in (2, 4):
        decision = agent.decide(window(worker))
    assert all(c.candidate.source != "capacity" for c in decision.candidates)
