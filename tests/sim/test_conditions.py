"""Measured capacity tables, a CPU-contended host, and counts at a few records per second."""

from __future__ import annotations

import pytest

from lastream_stream.policy.graph import build_graph
from lastream_stream.sim import Constant, Scenario, SimOperator, Simulator

TABLE = {1: 500.0, 2: 950.0, 4: 1700.0}


def test_a_capacity_table_interpolates_between_and_extends_beyond_its_points():
    op = SimOperator("score", ("source",), capacity_table=TABLE, partitions=16)
    assert [op.capacity(p) for p in (1, 2, 3, 4)] == pytest.approx([500.0, 950.0, 1325.0, 1700.0])
    # Beyond the last point: the last segment's 375/s per added instance.
    assert op.capacity(6) == pytest.approx(2450.0)
    assert op.instance_true_rate(4) == pytest.approx(425.0)
    # Below the first point: proportional from nothing at 0 instances.
    assert SimOperator("x", ("s",), capacity_table={2: 950.0, 4: 1700.0}).capacity(1) == pytest.approx(475.0)
    assert op.capacity_table == ((1, 500.0), (2, 950.0), (4, 1700.0))
    assert op == SimOperator("score", ("source",), capacity_table=((4, 1700.0), (1, 500.0), (2, 950.0)), partitions=16)


def test_min_parallelism_searches_a_capacity_table_up_to_the_cap():
    op = SimOperator("score", ("source",), capacity_table=TABLE, partitions=5)
    assert op.min_parallelism_for(950.0) == 2
    assert op.min_parallelism_for(1000.0) == 3
    assert op.min_parallelism_for(2075.0) == 5
    assert op.min_parallelism_for(2076.0) is None
    flat = SimOperator("flat", ("source",), capacity_table={1: 500.0, 2: 500.0})
    assert flat.min_parallelism_for(500.0) == 1
    assert flat.min_parallelism_for(501.0) is None  # no amount of instances adds capacity


@pytest.mark.parametrize(
    "table, message",
    [
        ({1: 500.0, 2: 950.0, 4: 900.0}, "decreases from 950 records/s at parallelism 2 to 900 at 4"),
        ({}, "empty"),
        ({0: 100.0}, "whole parallelisms >= 1"),
        ({1: 0.0}, "capacities > 0"),
    ],
)
def test_a_capacity_table_that_decreases_or_is_malformed_is_refused(table, message):
    with pytest.raises(ValueError, match=message):
        SimOperator("score", ("source",), capacity_table=table)


def test_a_capacity_table_excludes_a_scaling_exponent():
    with pytest.raises(ValueError, match="not both"):
        SimOperator("score", ("source",), capacity_table=TABLE, scaling_exponent=0.8)


def test_reports_follow_the_capacity_table():
    scenario = Scenario(
        name="table",
        operators=(
            SimOperator("source", true_rate=5000.0),
            SimOperator("score", ("source",), capacity_table=TABLE, parallelism=2),
        ),
        schedule=Constant(1200.0),
    )
    sim = Simulator(scenario)
    assert sim.oracle()["score"] == 3  # 950 < 1200 <= 1325
    score = build_graph(sim.run(10.0)).operators["score"]
    assert score.true_input_rate == pytest.approx(475.0)
    assert score.observed_input_rate == pytest.approx(950.0)


def contended(split: int, count: int, host_cores: float = 2.0, rate: float = 225.0) -> Scenario:
    """source -> split (200/s alone on a core) -> count (300/s alone), every non-source
    instance on one host of ``host_cores`` cores."""
    return Scenario(
        name="contended",
        operators=(
            SimOperator("source", true_rate=5000.0),
            SimOperator("split", ("source",), true_rate=200.0, partitions=32, parallelism=split),
            SimOperator("count", ("split",), true_rate=300.0, partitions=32, parallelism=count),
        ),
        schedule=Constant(rate),
        host_cores=host_cores,
    )


def true_rates(sim: Simulator, seconds: float = 10.0) -> dict[str, float]:
    graph = build_graph(sim.run(seconds))
    return {name: op.true_input_rate for name, op in graph.operators.items()}


def test_on_a_contended_host_every_added_instance_slows_every_operator():
    sim = Simulator(contended(split=1, count=1))
    assert true_rates(sim) == pytest.approx({"source": 5000.0, "split": 200.0, "count": 300.0})
    sim.apply({"split": 3})  # 4 instances on 2 cores
    sim.run(10.0)  # past the restart
    assert true_rates(sim) == pytest.approx({"source": 5000.0, "split": 100.0, "count": 150.0})
    # 6 instances: as on a real 2-core host, where 102/s per instance at 4 instances fell to 68/s.
    sim.apply({"split": 5})
    sim.run(10.0)
    assert true_rates(sim) == pytest.approx(
        {"source": 5000.0, "split": 200.0 / 3, "count": 100.0}, rel=1e-3
    )  # whole records


def test_scaling_one_operator_out_starves_another():
    sim = Simulator(contended(split=1, count=1))
    sim.run(10.0)
    assert sim.processed_rate() == pytest.approx(200.0)  # split's 200/s
    sim = Simulator(contended(split=9, count=1))
    sim.run(10.0)
    # 10 instances share 2 cores: split could do 9 * 200 / 5 = 360/s, count only 300 / 5 = 60/s.
    assert sim.processed_rate() == pytest.approx(60.0)


def test_the_contended_oracle_sustains_and_one_instance_fewer_anywhere_does_not():
    sim = Simulator(contended(split=1, count=1))
    oracle = sim.oracle()
    # Alone split needs 2 and count 1. On 2 cores, 5 instances run at 2/5 of their rate:
    # split 3 * 200 * 0.4 = 240 and count 2 * 300 * 0.4 = 240 for 225 arriving.
    assert oracle == {"source": 1, "split": 3, "count": 2}
    assert sim.sustainable()
    assert not sim.sustains({"split": 2, "count": 2})
    assert not sim.sustains({"split": 3, "count": 1})
    assert not sim.sustains({"split": 2, "count": 1})  # what an uncontended oracle would say
    sim.apply(oracle)
    sim.run(10.0)  # the restart
    sim.run(10.0)
    assert sim.processed_rate() == pytest.approx(225.0)


def test_a_host_without_enough_cores_is_not_sustainable():
    # split alone needs 400 / 200 = 2 cores of work and count 1.33: more than the host has.
    sim = Simulator(contended(split=1, count=1, rate=400.0))
    assert not sim.sustainable()
    assert sim.oracle()["split"] == 32  # raised until the partition cap binds


def test_without_host_cores_nothing_is_contended():
    scenario = contended(split=1, count=1)
    free = Simulator(Scenario(name="free", operators=scenario.operators, schedule=scenario.schedule))
    assert free.oracle() == {"source": 1, "split": 2, "count": 1}
    free.apply({"split": 4, "count": 2})
    free.run(10.0)
    assert true_rates(free) == pytest.approx(
        {"source": 5000.0, "split": 200.0, "count": 300.0}, rel=1e-2
    )  # whole records


def test_counts_at_a_few_records_per_second_add_up_over_intervals():
    """0.4 records per instance per interval: reported as 0s and 1s that sum to what was done."""
    scenario = Scenario(
        name="slow",
        operators=(
            SimOperator("source", true_rate=10.0),
            SimOperator("infer", ("source",), true_rate=0.25, parallelism=5),
        ),
        schedule=Constant(1.0),
    )
    reports = Simulator(scenario).run(20.0)
    infer = [r for r in reports if r.operator == "infer"]
    assert {r.records_in for r in infer} == {0, 1}
    assert sum(r.records_in for r in infer) == 20
    assert build_graph(reports).operators["infer"].observed_input_rate == pytest.approx(1.0)


def test_a_host_needs_cores():
    with pytest.raises(ValueError, match="host_cores"):
        contended(split=1, count=1, host_cores=0.0)
