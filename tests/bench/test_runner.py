"""Episodes, their measures, and the files a short seeded bench writes."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import pytest
from rich.console import Console

from lastream_stream.bench import POLICY_NAMES, BenchSettings, run, run_episode
from lastream_stream.bench.baselines import OraclePolicy
from lastream_stream.bench.runner import AsTheServiceRuns, direction_changes, phase_start, policy_factory
from lastream_stream.controller import ControllerSettings
from lastream_stream.policy.base import Decision, DecisionContext
from lastream_stream.policy.graph import AppGraph, build_graph
from lastream_stream.policy.reward import horizon_log_reward, log_reward
from lastream_stream.sim import Constant, Scenario, SimOperator, Simulator, Steps, scenarios


def two_stage(schedule=None) -> Scenario:
    """source at 1000/s -> parse (300/s per instance) -> store (2000/s per instance), all at 1."""
    return Scenario(
        name="two-stage",
        operators=(
            SimOperator("source", true_rate=5000.0),
            SimOperator("parse", ("source",), true_rate=300.0, partitions=16),
            SimOperator("store", ("parse",), true_rate=2000.0, partitions=16),
        ),
        schedule=schedule or Constant(1000.0),
        horizon_s=60.0,
    )


class OneShortOfOracle:
    """The oracle's configuration with one instance fewer on its bottleneck operator."""

    name = "oracle-minus-one"

    def __init__(self, sim: Simulator, bottleneck: str) -> None:
        self.oracle = OraclePolicy(sim)
        self.bottleneck = bottleneck

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        scheme = self.oracle.decide(graph, context).chosen
        scheme[self.bottleneck] -= 1
        return Decision.single(self.name, graph, scheme)


SETTINGS = BenchSettings(decision_interval_s=10.0)


def test_the_oracle_sustains_the_rate_and_one_instance_fewer_does_not():
    scenario = two_stage()
    oracle = run_episode(scenario, "oracle", lambda s, sim: OraclePolicy(sim), SETTINGS)
    # Decision 1 (t = 10 s) applies parse = 4; its window has the 5 s restart; the next keeps up.
    assert oracle.decisions_to_sustain == 2
    assert oracle.reconfigurations == 1
    assert oracle.parallelism_ratio == pytest.approx(1.0)

    short = run_episode(scenario, "short", lambda s, sim: OneShortOfOracle(sim, "parse"), SETTINGS)
    assert short.decisions_to_sustain is None
    assert short.sustained_share == 0.0
    assert short.parallelism_ratio == pytest.approx(4 / 5)  # (3 + 1) of (4 + 1)
    assert short.final_lag > oracle.final_lag


def test_a_static_under_provisioned_run_never_sustains_and_accumulates_lag():
    static = run_episode(two_stage(), "static", policy_factory("static", SETTINGS), SETTINGS)
    assert static.reconfigurations == 0
    assert static.decisions_to_sustain is None
    # parse does 300 of 1000/s: 700 records/s pile up for 60 s.
    assert static.final_lag == pytest.approx(700.0 * 60.0)
    # Sampled every 2 s; already the first sample (t = 2 s) holds 1400 > 1000 records.
    assert static.seconds_lag_over_dstar == pytest.approx(60.0)
    assert 0.0 <= static.mean_reward < 0.01


def test_decisions_are_counted_from_the_last_rate_step():
    scenario = two_stage(Steps(1000.0, ((30.0, 2.0),)))
    assert phase_start(scenario, 60.0) == 30.0
    assert phase_start(scenario, 20.0) == 0.0
    episode = run_episode(scenario, "oracle", lambda s, sim: OraclePolicy(sim), SETTINGS)
    # At t = 30 the oracle moves parse to 7 (2000 / 300) and store to 1; window [30, 40] has the
    # restart, [40, 50] keeps up: one decision (t = 40) after the step.
    assert episode.decisions_to_sustain == 1
    assert episode.reconfigurations == 2


def test_direction_changes_count_turnarounds_per_operator():
    trace = [(0.0, {"a": 1, "b": 1}), (10.0, {"a": 3, "b": 2}), (20.0, {"a": 2, "b": 3}), (30.0, {"a": 4, "b": 3}), (40.0, {"a": 4, "b": 1})]
    # a: up, down, up -> 2; b: up, up, (same), down -> 1.
    assert direction_changes(trace, ["a", "b"]) == 3


def test_a_short_seeded_suite_writes_well_formed_results(tmp_path):
    settings = BenchSettings(seed=0, n_scenarios=3, horizon_s=60.0, out_dir=tmp_path, plot_scenarios=2, policies=POLICY_NAMES)
    terminal = io.StringIO()
    results = run(settings, console=Console(file=terminal, width=160))

    payload = json.loads((tmp_path / "results.json").read_text())
    assert set(payload) == {"settings", "skipped_policies", "summary", "episodes", "timeseries"}
    assert payload["skipped_policies"] == {}
    names = [s.name for s in scenarios.suite(0, 3)]
    assert sorted({e["scenario"] for e in payload["episodes"]}) == sorted(names)
    assert set(payload["summary"]) == set(POLICY_NAMES)
    assert len(payload["episodes"]) == 3 * len(POLICY_NAMES) == len(results.episodes)

    for e in payload["episodes"]:
        assert 0.0 <= e["mean_reward"] <= 1.0
        assert e["parallelism_ratio"] > 0 and math.isfinite(e["parallelism_ratio"])
        assert e["reconfigurations"] >= 0 and e["seconds_lag_over_dstar"] <= 60.0
        assert e["decision_ms_mean"] >= 0.0
        if e["policy"] == "static":
            assert e["reconfigurations"] == 0
        if e["policy"] == "oracle":
            assert e["parallelism_ratio"] == pytest.approx(1.0)
    # The second scenario of the suite has a partition cap that binds.
    assert all(not e["sustainable"] for e in payload["episodes"] if e["scenario"] == names[1])
    assert all(e["decisions_to_sustain"] is None for e in payload["episodes"] if e["scenario"] == names[1])

    for policy, row in payload["summary"].items():
        runs = [e for e in payload["episodes"] if e["policy"] == policy]
        reached = sum(e["decisions_to_sustain"] is not None for e in runs if e["sustainable"])
        assert row["sustained"] == f"{reached}/2"  # the capped scenario cannot be sustained
        assert row["sustained_fraction"] == reached / 2
        assert row["reconfigurations"] == sorted(e["reconfigurations"] for e in runs)[1]  # median of 3

    series = payload["timeseries"][names[0]]["oracle"]
    assert len(series) == 30 and series[-1]["t"] == 60.0  # one sample per 2 s report
    assert all(s["parallelism"] == s["oracle"] for s in series[5:])

    markdown = (tmp_path / "results.md").read_text()
    assert all(f"| {policy} |" in markdown for policy in POLICY_NAMES)
    for name in ["headline.png", f"parallelism_{names[0]}.png", f"parallelism_{names[1]}.png"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "medians over scenarios" in terminal.getvalue()


def test_unknown_policies_are_refused():
    with pytest.raises(ValueError, match="unknown policies"):
        BenchSettings(policies=("ds2", "magic"))


def test_llm_flag_adds_the_llm_generator_only_when_a_key_is_set(monkeypatch, caplog):
    scenario = two_stage()
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    with caplog.at_level("WARNING", logger="lastream_stream.bench.runner"):
        without_key = policy_factory("lastream", BenchSettings(llm=True))(scenario, Simulator(scenario))
    assert [g.name for g in without_key.policy.generators] == ["analytic"]
    assert "LLM generator is skipped" in caplog.text

    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test-not-used")
    with_key = policy_factory("lastream", BenchSettings(llm=True))(scenario, Simulator(scenario))
    assert [g.name for g in with_key.policy.generators] == ["analytic", "llm"]


class Counting:
    """Asks for one more instance of ``parse`` every time it is asked."""

    name = "counting"

    def __init__(self) -> None:
        self.asked = 0

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        self.asked += 1
        return Decision.single(self.name, graph, graph.parallelism | {"parse": graph.parallelism["parse"] + 1})


def test_the_learned_policy_is_timed_as_the_service_times_it():
    """Warm-up 6 s + a full 10 s window after a change: on a 10 s grid the window right after
    a reconfiguration is held, the next one is decided on."""
    sim = Simulator(two_stage())
    inner = Counting()
    policy = AsTheServiceRuns(inner, decision_interval_s=10.0, controller=ControllerSettings(warmup_s=6.0, window_s=10.0))
    chosen = []
    for _ in range(4):
        decision = policy.decide(build_graph(sim.run(10.0)))
        sim.apply(decision.chosen)
        chosen.append(decision.chosen["parse"])
    assert chosen == [2, 2, 3, 3]
    assert inner.asked == 2


def test_a_slow_restart_is_waited_out_before_the_window_that_counts():
    """A 15 s restart outlasts the 6 s warm-up: windows ending before 15 + 10 s are held."""
    sim = Simulator(two_stage())
    inner = Counting()
    policy = AsTheServiceRuns(inner, decision_interval_s=10.0, controller=ControllerSettings(warmup_s=6.0, window_s=10.0))
    chosen = []
    for _ in range(5):
        decision = policy.decide(build_graph(sim.run(10.0)), DecisionContext(restart_s=15.0))
        sim.apply(decision.chosen)
        chosen.append(decision.chosen["parse"])
    assert chosen == [2, 2, 2, 3, 3]
    assert inner.asked == 2


def test_every_policy_is_told_the_restart_time():
    told = []

    class Recording:
        name = "recording"

        def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
            told.append(context.restart_s)
            return Decision.single(self.name, graph, graph.parallelism)

    scenario = dataclasses.replace(two_stage(), downtime_s=7.0)
    run_episode(scenario, "recording", lambda scenario, sim: Recording(), BenchSettings(horizon_s=30.0))
    assert told and set(told) == {7.0}


class ScriptedLearner:
    """Scales ``parse`` to the next scheme of its script at each decision, and keeps what it
    is told to learn from."""

    name = "scripted"
    horizon_s = 60.0

    def __init__(self, script):
        self.script = list(script)
        self.observed = []
        self.trained = 0

    def decide(self, graph, context=None):
        return Decision.single(self.name, graph, graph.parallelism | {"parse": self.script.pop(0)})

    def observe(self, decision, measured_reward):
        self.observed.append((decision.chosen["parse"], measured_reward))

    def train(self, steps):
        self.trained += steps
        return 0.0


def test_online_learning_judges_each_decision_over_the_windows_its_scheme_ran():
    """Window 0 scales out, window 1 is the warm-up, windows 2-4 hold; window 5 scales out
    again. With 30 s outcomes and a 60 s horizon the first change is judged on windows 2-4
    (the warm-up window counted as the first after the change), the hold of window 2 on
    3-5; the change of window 5 drops the holds of windows 3 and 4, not observed for long
    enough."""
    sim = Simulator(two_stage())
    learner = ScriptedLearner([4, 4, 4, 4, 5])
    policy = AsTheServiceRuns(learner, 10.0, controller=ControllerSettings(outcome_s=30.0, train_steps=3), learn=True)
    rewards = {}
    for w in range(6):
        graph = build_graph(sim.run(10.0))
        rewards[w] = log_reward(graph.latency_ms, graph.total_lag, graph.parallelism)
        sim.apply(policy.decide(graph).chosen)

    def judged(*windows, unobserved_s=0.0):
        return pytest.approx(math.exp(horizon_log_reward([rewards[w] for w in windows], 10.0, 60.0, unobserved_s)))

    assert learner.observed == [(4, judged(2, 3, 4, unobserved_s=10.0)), (4, judged(3, 4, 5))]
    assert learner.trained == 2 * 3
    assert sim.parallelism["parse"] == 5


def test_a_policy_that_does_not_learn_cannot_run_online():
    with pytest.raises(TypeError, match="does not learn"):
        AsTheServiceRuns(OraclePolicy(Simulator(two_stage())), 10.0, learn=True)
