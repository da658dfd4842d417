"""The scenario builders: shapes, variants and the suite's coverage."""

from __future__ import annotations

import dataclasses

import pytest

from lastream_stream.policy.graph import build_graph
from lastream_stream.sim import Constant, Scenario, Simulator, scenarios


def test_wordcount_has_the_wordcount_shape():
    scenario = scenarios.wordcount(0)
    assert [(op.name, op.upstreams) for op in scenario.operators] == [
        ("lines", ()),
        ("split", ("lines",)),
        ("count", ("split",)),
        ("sink", ("count",)),
    ]
    assert scenario.by_name["split"].selectivity == 8.0


def test_nexmark_join_joins_two_sources():
    scenario = scenarios.nexmark_join(0)
    join = scenario.by_name["join"]
    assert sorted(join.upstreams) == ["filter_auctions", "filter_persons"]
    assert sum(op.is_source for op in scenario.operators) == 2


def test_seeds_jitter_rates_deterministically():
    assert scenarios.wordcount(3) == scenarios.wordcount(3)
    assert scenarios.wordcount(3).by_name["split"].true_rate != scenarios.wordcount(4).by_name["split"].true_rate


@pytest.mark.parametrize("n_ops", [3, 7, 20])
def test_random_dags_have_the_requested_size_and_run(n_ops):
    scenario = scenarios.random_dag(n_ops, seed=5)
    assert len(scenario.operators) == n_ops
    reports = Simulator(scenario).run(4.0)
    assert set(build_graph(reports).operators) == {op.name for op in scenario.operators}


def test_random_dag_refuses_sizes_outside_3_to_20():
    with pytest.raises(ValueError):
        scenarios.random_dag(21, seed=0)


def test_step_variant_multiplies_the_rate_at_the_step():
    base = scenarios.wordcount(0)
    stepped = scenarios.with_step(base, 4.0, at_s=10.0)
    rate = base.schedule.rate_at(0.0)
    assert stepped.schedule.rate_at(9.9) == rate
    assert stepped.schedule.rate_at(10.0) == pytest.approx(4 * rate)
    assert "step" in stepped.tags


def test_binding_cap_makes_the_bottleneck_unsustainable():
    capped = scenarios.with_binding_cap(scenarios.wordcount(0))
    sim = Simulator(capped)
    assert not sim.sustainable()
    assert Simulator(scenarios.wordcount(0)).sustainable()


def test_suite_covers_every_condition_with_distinct_names():
    suite = scenarios.suite(seed=0)
    assert len(suite) >= 30
    assert len({s.name for s in suite}) == len(suite)
    tags = set().union(*(s.tags for s in suite))
    assert {
        "wordcount",
        "map",
        "join",
        "window",
        "random",
        "step",
        "sine",
        "sublinear",
        "partition-cap",
        "downtime",
    } <= tags
    factors = {s.schedule.steps[0][1] for s in suite if "step" in s.tags}
    assert {0.5, 2.0, 4.0} <= factors
    sizes = {len(s.operators) for s in suite if "random" in s.tags}
    assert min(sizes) == 3 and max(sizes) == 20


def test_suite_is_seeded_and_a_short_suite_is_still_varied():
    assert [s.name for s in scenarios.suite(seed=1, n=5)] == [s.name for s in scenarios.suite(seed=1)][:5]
    assert scenarios.suite(seed=1, n=3) == scenarios.suite(seed=1, n=3)
    assert scenarios.suite(seed=1, n=3) != scenarios.suite(seed=2, n=3)
    short = scenarios.suite(seed=0, n=3)
    assert {"step", "partition-cap", "sublinear"} <= set().union(*(s.tags for s in short))


def test_every_suite_scenario_runs_and_reports_every_operator():
    for scenario in scenarios.suite(seed=0):
        sim = Simulator(scenario, seed=0)
        reports = sim.run(scenario.interval_s)
        assert {r.operator for r in reports} == {op.name for op in scenario.operators}, scenario.name
        assert len(reports) == sum(sim.parallelism.values()), scenario.name


def test_constant_scenarios_are_tagged_constant_and_others_not():
    for scenario in scenarios.suite(seed=0):
        assert ("constant" in scenario.tags) == isinstance(scenario.schedule, Constant), scenario.name


def test_at_rate_keeps_what_every_operator_needs():
    base = scenarios.wordcount(0)
    for rate in (1.0, 1e6):
        slow = scenarios.at_rate(base, rate)
        assert slow.schedule.rate_at(0.0) == rate
        assert Simulator(slow).oracle() == Simulator(base).oracle()
        assert scenarios.with_step(slow, 2.0).schedule.peak() == pytest.approx(2 * rate)


def at_peak(scenario: Scenario) -> Simulator:
    return Simulator(dataclasses.replace(scenario, schedule=Constant(scenario.schedule.peak())))


@pytest.mark.parametrize("seed", [0, 1])
def test_every_wide_scenario_can_keep_up_at_its_peak(seed):
    wide = scenarios.wide_suite(seed)
    assert 30 <= len(wide) <= 40
    assert len({s.name for s in wide}) == len(wide)
    for scenario in wide:
        sim = at_peak(scenario)
        assert sim.sustainable(), scenario.name
        assert scenario.horizon_s == 300.0
        reports = Simulator(scenario, seed=seed).run(scenario.interval_s)
        assert {r.operator for r in reports} == {op.name for op in scenario.operators}, scenario.name


def test_the_wide_suite_covers_six_decades_of_source_rate_and_every_condition():
    wide = scenarios.wide_suite(0)
    decades = [s for s in wide if "decades" in s.tags]
    assert sorted(s.schedule.rate_at(0.0) for s in decades) == [10.0**k for k in range(7)]
    assert {f"rate-1e{k}" for k in range(7)} <= set().union(*(s.tags for s in decades))
    assert all(sum(t.startswith("rate-1e") for t in s.tags) == 1 for s in wide)
    by_tag = {tag: [s for s in wide if tag in s.tags] for tag in set().union(*(s.tags for s in wide))}
    for tag in ("fanout", "wide", "slow-restart", "contended", "measured-capacity", "constant", "step", "sine"):
        assert len(by_tag[tag]) >= 3, tag
    assert all(max(op.selectivity for op in s.operators) >= 10 for s in by_tag["fanout"])
    assert all(max(at_peak(s).oracle().values()) >= 20 for s in by_tag["wide"])
    assert all(30.0 <= s.downtime_s <= 50.0 for s in by_tag["slow-restart"])
    assert all(isinstance(s.schedule, Constant) for s in by_tag["constant"])
    for scenario in by_tag["contended"]:
        sim = at_peak(scenario)
        # The host's cores bind at the minimum that keeps up: instances outnumber cores.
        assert sum(p for name, p in sim.oracle().items() if not scenario.by_name[name].is_source) > scenario.host_cores
    for scenario in by_tag["measured-capacity"]:
        (measured,) = [op for op in scenario.operators if op.capacity_table is not None]
        per_instance = [measured.instance_true_rate(p) for p in (1, 2, 4, 8, 16)]
        assert per_instance == sorted(per_instance, reverse=True) and per_instance[-1] < per_instance[0]
