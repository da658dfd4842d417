"""Scale-in that happens: an app right-sized at one rate, whose rate then drops, gives back
what it no longer needs, through the service's own controller and the shipped model."""

from __future__ import annotations

from collections import Counter

from lastream_stream.bench import BenchSettings
from lastream_stream.bench.runner import AsTheService, policy_factory
from lastream_stream.sim import Scenario, SimOperator, Simulator, Steps

DROP_AT_S = 300.0


def two_operators(after_drop: float) -> Scenario:
    """The issue's app: parse takes 40 ms a record (25/s), enrich 25 ms (40/s); 30 records/s
    need parse 2 and enrich 1; after the drop parse needs 1."""
    return Scenario(
        name="two-operators",
        operators=(
            SimOperator("source", true_rate=10_000.0),
            SimOperator("parse", ("source",), true_rate=25.0, partitions=8),
            SimOperator("enrich", ("parse",), true_rate=40.0, partitions=8),
        ),
        schedule=Steps(30.0, ((DROP_AT_S, after_drop),)),
        interval_s=1.0,
        downtime_s=5.0,
        horizon_s=DROP_AT_S + 900.0,
    )


def parse_over_time(
    scenario: Scenario, controller_overrides: dict | None = None, sources: Counter | None = None
) -> list[tuple[float, int]]:
    """(time, parse's instances) after every change, the shipped model deciding through the
    controller; ``sources`` counts its commands by the provenance of their scheme."""
    settings = BenchSettings()
    if controller_overrides:
        settings = BenchSettings(controller=settings.controller.model_copy(update=controller_overrides))
    sim = Simulator(scenario, seed=0)
    driver = AsTheService(policy_factory("lastream", settings)(scenario, sim))
    trace = [(0.0, sim.parallelism["parse"])]
    while sim.now < scenario.horizon_s:
        reports = sim.run(scenario.interval_s)
        driver.step(sim, reports)
        if sim.parallelism["parse"] != trace[-1][1]:
            trace.append((sim.now, sim.parallelism["parse"]))
    if sources is not None:
        sources.update(driver.sources)
    return trace


def test_a_drop_to_a_sixth_of_the_rate_is_given_back_within_five_minutes_and_kept():
    sources = Counter()
    trace = parse_over_time(two_operators(after_drop=5.0 / 30.0), sources=sources)
    assert sources["trim"] == 1, sources
    before = [n for t, n in trace if t < DROP_AT_S]
    assert before[-1] == 2, f"parse was not right-sized at 30/s: {trace}"
    after = [(t, n) for t, n in trace if t >= DROP_AT_S]
    assert after and after[0][1] == 1, f"parse was never trimmed: {trace}"
    assert after[0][0] - DROP_AT_S <= 300, f"trimmed {after[0][0] - DROP_AT_S:.0f} s after the drop: {trace}"
    assert len(after) == 1, f"the trim was reversed: {trace}"


def test_without_the_trim_rule_the_margin_holds_the_surplus_for_good():
    """Today's behaviour, which the rule fixes: every hold 'within the evaluator's error margin'."""
    trace = parse_over_time(two_operators(after_drop=5.0 / 30.0), {"scale_in_delay_s": 0.0})
    assert trace[-1][1] == 2, trace


def test_a_rate_that_still_needs_the_instances_keeps_them():
    """Nine tenths of the rate: 27 records/s still need 2 parse instances of 25/s each: no trim."""
    trace = parse_over_time(two_operators(after_drop=0.9))
    assert [n for t, n in trace if t >= DROP_AT_S] == [], trace
