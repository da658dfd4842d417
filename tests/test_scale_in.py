"""Scale-in that happens: an app right-sized at one rate, whose rate then drops, gives back
what it no longer needs, through the service's own controller and the shipped model."""

from __future__ import annotations

from collections import Counter

from factories import work_window

from lastream_stream.agent.controller import ControllerSettings, StabilityState, trim
from lastream_stream.bench import BenchSettings
from lastream_stream.bench.runner import AsTheService, policy_factory
from lastream_stream.policy.graph import AppGraph
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
    scenario: Scenario,
    controller_overrides: dict | None = None,
    sources: Counter | None = None,
    policy: str = "lastream",
) -> list[tuple[float, int]]:
    """(time, parse's instances) after every change, the shipped model deciding through the
    controller (or ``policy``); ``sources`` counts its commands by the provenance of their scheme."""
    settings = BenchSettings()
    if controller_overrides:
        settings = BenchSettings(controller=settings.controller.model_copy(update=controller_overrides))
    sim = Simulator(scenario, seed=0)
    driver = AsTheService(policy_factory(policy, settings)(scenario, sim))
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


def test_an_app_predicted_closely_earns_a_small_margin_and_its_policy_scales_in_before_the_trim():
    """Online learning on: by the drop, the models have predicted the app's outcomes for five
    minutes, closely enough that the margin shrinks below the one-instance gain."""
    sources = Counter()
    trace = parse_over_time(two_operators(after_drop=5.0 / 30.0), sources=sources, policy="lastream-online")
    after = [(t, n) for t, n in trace if t >= DROP_AT_S]
    assert after and after[0][1] == 1, f"parse was never scaled in: {trace}"
    assert after[0][0] - DROP_AT_S < BenchSettings().controller.scale_in_delay_s, trace
    assert sources["trim"] == 0 and len(after) == 1, (sources, trace)


def test_without_the_trim_rule_the_margin_holds_the_surplus_for_good():
    """Today's behaviour, which the rule fixes: every hold 'within the evaluator's error margin'."""
    trace = parse_over_time(two_operators(after_drop=5.0 / 30.0), {"scale_in_delay_s": 0.0})
    assert trace[-1][1] == 2, trace


def test_a_rate_that_still_needs_the_instances_keeps_them():
    """Nine tenths of the rate: 27 records/s still need 2 parse instances of 25/s each: no trim."""
    trace = parse_over_time(two_operators(after_drop=0.9))
    assert [n for t, n in trace if t >= DROP_AT_S] == [], trace


NOW = 1_700_000_000.0


def four_workers(lag: int = 0) -> AppGraph:
    """100 records/s into 4 'work' instances of 100/s each: 25% busy; 2 keep it under 70%."""
    return work_window(4, 25.0, 100.0, NOW, lag=lag)


def evidence(running_since: float = NOW - 300, needs: int = 1) -> StabilityState:
    """Decisions every 10 s since ``running_since`` at 4 'work', each finding 2 enough."""
    state = StabilityState()
    for t in range(int(running_since), int(NOW) + 1, 10):
        state.sized_for({"src": 1, "work": 2}, t, keep_s=250)
        state.needed({"src": 1, "work": needs}, t, keep_s=120)
        state.saw({"src": 1, "work": 4}, t)
    return state


def trimmed(graph=None, state=None, **settings) -> tuple[dict[str, int], list[str]]:
    graph = graph or four_workers()
    return trim(graph.parallelism, graph, state or evidence(), NOW, ControllerSettings(**settings))


def test_the_trim_rule_gives_back_what_every_decision_of_the_delay_found_spare():
    scheme, (note,) = trimmed()
    assert scheme == {"src": 1, "work": 2}
    assert note.startswith("trimmed work 4 -> 2: for 240 s at 4, 2 kept it under 70% busy")


def test_the_trim_rule_waits_for_evidence_over_the_whole_delay_and_for_a_change_made_elsewhere():
    assert trimmed(state=evidence(running_since=NOW - 200))[1] == []  # not long enough at 4
    changed = evidence()
    changed.saw({"src": 1, "work": 5}, NOW - 100)  # scaled by hand to 5, then back to 4
    changed.saw({"src": 1, "work": 4}, NOW - 60)
    assert trimmed(state=changed)[1] == []
    assert trimmed(stabilisation_s=400.0)[1] == []  # nor within the stabilisation interval
    assert trimmed(scale_in_delay_s=0.0)[1] == []


def test_the_trim_rule_keeps_the_bounds_the_peak_need_and_a_draining_backlog():
    assert trimmed(min_parallelism={"work": 3})[0]["work"] == 3
    assert trimmed(max_step=1)[0]["work"] == 3
    assert trimmed(state=evidence(needs=3))[0]["work"] == 3
    assert trimmed(graph=four_workers(lag=50_000))[1] == []  # 500 s of input behind: it drains first
