"""Episodes, their measures, and the files a short seeded bench writes."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math

import pytest
from chat_server import Reply
from click.testing import CliRunner
from rich.console import Console

from lastream_stream.agent.controller import AppController, ControllerSettings
from lastream_stream.bench import POLICY_NAMES, BenchSettings, run, run_episode
from lastream_stream.bench.baselines import OraclePolicy
from lastream_stream.bench.runner import ABLATION, LLM_POLICY, Frozen, direction_changes, phase_start, policy_factory
from lastream_stream.policy.base import Decision, DecisionContext
from lastream_stream.policy.graph import AppGraph
from lastream_stream.sim import Constant, Scenario, SimOperator, Simulator, Steps, scenarios
from lastream_stream.sim.simulator import EPOCH_START
from lastream_stream.tools.cli import main


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
    # Sampled every 2 s; the backlog is 0.7 t seconds of parse's 1000/s input, over 10 s from t = 16 s.
    assert static.seconds_backlog_over_dstar == pytest.approx(46.0)
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
    trace = [
        (0.0, {"a": 1, "b": 1}),
        (10.0, {"a": 3, "b": 2}),
        (20.0, {"a": 2, "b": 3}),
        (30.0, {"a": 4, "b": 3}),
        (40.0, {"a": 4, "b": 1}),
    ]
    # a: up, down, up -> 2; b: up, up, (same), down -> 1.
    assert direction_changes(trace, ["a", "b"]) == 3


def test_a_short_seeded_suite_writes_well_formed_results(tmp_path):
    settings = BenchSettings(
        seed=0, n_scenarios=3, horizon_s=60.0, out_dir=tmp_path, plot_scenarios=2, policies=POLICY_NAMES
    )
    terminal = io.StringIO()
    results = run(settings, console=Console(file=terminal, width=160))

    payload = json.loads((tmp_path / "results.json").read_text())
    assert set(payload) == {"settings", "summary", "episodes", "timeseries"}
    names = [s.name for s in scenarios.suite(0, 3)]
    assert sorted({e["scenario"] for e in payload["episodes"]}) == sorted(names)
    assert set(payload["summary"]) == set(POLICY_NAMES)
    assert len(payload["episodes"]) == 3 * len(POLICY_NAMES) == len(results.episodes)

    for e in payload["episodes"]:
        assert 0.0 <= e["mean_reward"] <= 1.0
        assert e["parallelism_ratio"] > 0 and math.isfinite(e["parallelism_ratio"])
        assert e["reconfigurations"] >= 0 and e["seconds_backlog_over_dstar"] <= 60.0
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


def test_llm_bench_reports_how_often_the_llm_won_against_a_real_endpoint(chat_server, monkeypatch, tmp_path):
    """``lastream+llm`` asks the OpenAI-compatible server named by LASTREAM_LLM_*; the report
    counts its commands by provenance and sets its reward against ``lastream``'s."""
    monkeypatch.setenv("LASTREAM_LLM_BASE_URL", chat_server.url)
    monkeypatch.setenv("LASTREAM_LLM_API_KEY", "sk-test-local")
    chat_server.otherwise = Reply(json.dumps({"schemes": [{"parallelism": {"source": 1, "parse": 5, "store": 2}}]}))
    settings = BenchSettings(policies=("lastream", LLM_POLICY), horizon_s=60.0, out_dir=tmp_path, plot_scenarios=0)
    results = run(settings, console=Console(file=io.StringIO()), suite=[two_stage()])

    assert chat_server.requests and "parse" in chat_server.requests[0]["messages"][-1]["content"]
    with_llm = next(e for e in results.episodes if e.policy == LLM_POLICY)
    assert with_llm.commands_by_source and set(with_llm.commands_by_source) <= {
        "analytic",
        "capacity",
        "llm",
        "guarded",
    }
    llm = json.loads((tmp_path / "results.json").read_text())["llm"]
    assert llm["commands"] == sum(with_llm.commands_by_source.values())
    assert llm["llm_commands"] == with_llm.commands_by_source.get("llm", 0)
    assert llm["scenarios_compared"] == 1
    without = next(e for e in results.episodes if e.policy == "lastream")
    assert llm["reward_difference_median"] == pytest.approx(with_llm.mean_reward - without.mean_reward)
    assert "## LLM candidates" in (tmp_path / "results.md").read_text()


def test_llm_bench_without_a_key_says_which_variable_to_set(monkeypatch):
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    monkeypatch.delenv("LASTREAM_LLM_API_KEY", raising=False)
    result = CliRunner().invoke(main, ["bench", "--llm", "--scenarios", "1", "--policy", "ds2"])
    assert result.exit_code == 2 and "DEEPSEEK_API_KEY" in result.output
    with pytest.raises(ValueError, match="DEEPSEEK_API_KEY"):
        policy_factory(LLM_POLICY, BenchSettings())


class Counting:
    """Asks for one more instance of ``parse`` every time it is asked."""

    name = "counting"

    def __init__(self) -> None:
        self.asked = 0

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        self.asked += 1
        return Decision.single(self.name, graph, graph.parallelism | {"parse": graph.parallelism["parse"] + 1})


class Flipping:
    """Asks for parse 6 and 5 in turn: a policy that would reverse itself at every decision."""

    name = "flipping"

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        return Decision.single(
            self.name, graph, graph.parallelism | {"parse": 5 if graph.parallelism["parse"] == 6 else 6}
        )


def as_the_service(policy, controller: ControllerSettings):
    settings = dataclasses.replace(SETTINGS, horizon_s=300.0, controller=controller)
    scenario = dataclasses.replace(two_stage(), horizon_s=300.0)
    return run_episode(
        scenario, policy.name, lambda s, sim: AppController(s.name, policy, controller, since=EPOCH_START), settings
    )


def test_the_bench_runs_the_service_controller_and_its_guard_rails():
    """The same flip-flopping policy: on the baselines' grid it reverses at every decision;
    run by the controller, the stabilisation interval and the bounds hold it."""
    grid = run_episode(
        dataclasses.replace(two_stage(), horizon_s=300.0),
        "flipping",
        lambda s, sim: Flipping(),
        dataclasses.replace(SETTINGS, horizon_s=300.0),
    )
    assert grid.reconfigurations == 29 and grid.oscillations_per_operator == 28 / 2  # up once, then 28 turns

    served = as_the_service(Flipping(), ControllerSettings(window_s=10.0, stabilisation_s=120.0))
    turns = [(t, p["parse"]) for t, p in served.parallelism_trace[1:]]
    assert turns[0][1] == 6 and len(turns) >= 2
    assert all(later - earlier >= 120.0 for (earlier, _), (later, _) in itertools.pairwise(turns))

    capped = as_the_service(Counting(), ControllerSettings(window_s=10.0, max_parallelism={"parse": 3}, max_step=1))
    assert [p["parse"] for _, p in capped.parallelism_trace] == [1, 2, 3]


def test_the_controller_waits_out_the_restart_and_a_full_window():
    """Warm-up 6 s, restart 5 s (the scenario's downtime) plus one 2 s report until every
    new instance has processed input, then a full 10 s window: decisions at least 16 s apart."""
    episode = as_the_service(Counting(), ControllerSettings(window_s=10.0, warmup_s=6.0))
    times = [t for t, _ in episode.parallelism_trace[1:]]
    assert len(times) >= 5
    assert all(b - a >= 16.0 for a, b in itertools.pairwise(times))


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
    """Scales ``parse`` to the next scheme of its script at each decision (then holds), and
    keeps what it is told to learn from."""

    name = "scripted"
    horizon_s = 60.0

    def __init__(self, script):
        self.script = list(script)
        self.observed = []
        self.trained = 0

    def decide(self, graph, context=None):
        scheme = graph.parallelism | {"parse": self.script.pop(0)} if self.script else graph.parallelism
        return Decision.single(self.name, graph, scheme)

    def observe(self, decision, measured_reward):
        self.observed.append((decision.chosen["parse"], measured_reward))

    def train(self, steps):
        self.trained += steps
        return 0.0

    def prediction_errors(self, app):
        return {}


def test_a_learning_policy_learns_from_outcomes_and_a_frozen_one_does_not():
    learner = ScriptedLearner([4])
    as_the_service(learner, ControllerSettings(window_s=10.0, outcome_s=30.0, train_steps=3))
    assert learner.observed and learner.observed[0][0] == 4 and 0.0 < learner.observed[0][1] <= 1.0
    # Learns from every outcome; trains at most once per outcome_s (outcomes overlap: one starts every window).
    assert learner.trained % 3 == 0 and 1 <= learner.trained // 3 <= 300 / 30 < len(learner.observed)

    frozen = ScriptedLearner([4])
    as_the_service(Frozen(frozen), ControllerSettings(window_s=10.0, outcome_s=30.0, train_steps=3))
    assert frozen.observed == [] and frozen.trained == 0


def test_the_ablation_runs_each_learned_part_on_a_small_suite(tmp_path):
    settings = BenchSettings(
        seed=1, n_scenarios=2, horizon_s=60.0, out_dir=tmp_path, plot_scenarios=1, policies=ABLATION
    )
    results = run(settings, console=Console(file=io.StringIO(), width=160))
    payload = json.loads((tmp_path / "results.json").read_text())
    assert list(payload["summary"]) == list(ABLATION)
    assert len(results.episodes) == 2 * len(ABLATION)
    for e in payload["episodes"]:
        assert 0.0 < e["mean_reward"] <= 1.0 and e["mean_log_reward"] <= 0.0
    # The rungs really differ in what they are: no capacity candidates without the capacity model.
    built = {
        name: policy_factory(name, settings)(scenarios.wordcount(1), Simulator(scenarios.wordcount(1)))
        for name in ABLATION[1:]
    }
    assert [
        (c.policy.policy.config.use_evaluator, c.policy.policy.config.capacity_model)
        for c in (built["fluid-only"], built["fluid+capacity"], built["lastream"])
    ] == [(False, False), (False, True), (True, True)]
    assert built["lastream-online"].policy.config.use_evaluator
