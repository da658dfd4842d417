"""Measured capacity tables, a CPU-contended host, and counts at a few records per second."""

from __future__ import annotations

import pytest

from lastream_stream.policy.graph import build_graph
from lastream_stream.sim import Constant, Scenario, SimOperator, Simulator


def test_counts_at_a_few_records_per_second_add_up_over_intervals():
    """0.4 records per instance per interval: reported as 0s and 1s that sum to what was done."""
    scenario = Scenario(
        name="slow",
        operators=(SimOperator("source", true_rate=10.0), SimOperator("infer", ("source",), true_rate=0.25, parallelism=5)),
        schedule=Constant(1.0),
    )
    reports = Simulator(scenario).run(20.0)
    infer = [r for r in reports if r.operator == "infer"]
    assert {r.records_in for r in infer} == {0, 1}
    assert sum(r.records_in for r in infer) == 20
    assert build_graph(reports).operators["infer"].observed_input_rate == pytest.approx(1.0)
