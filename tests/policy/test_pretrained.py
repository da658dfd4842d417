"""The shipped pretrained evaluator on simulated scenarios it never saw (held-out seeds).

For each held-out decision state, every candidate (the agent's analytic ones plus random
perturbations) is applied to its own copy of the simulator and its reward measured after
the warm-up, exactly as in pretraining; the evaluator's ranking must agree with it.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest

from lastream_stream.policy.agent import PRETRAINED_PATH, LaStreamAgent
from lastream_stream.sim import Constant, Scenario, SimOperator, Simulator, scenarios
from lastream_stream.tools.training import HELD_OUT_SEED, PretrainSettings, episode, rescaled, spearman, window_graph

log = logging.getLogger(__name__)


HELD_OUT = [
    rescaled(scenarios.wordcount(HELD_OUT_SEED), speed=1.0, load=1.5),
    rescaled(scenarios.nexmark_join(HELD_OUT_SEED + 1), speed=1.0, load=1.0),
    rescaled(scenarios.random_dag(12, HELD_OUT_SEED + 2), speed=1.0, load=0.8),
    rescaled(scenarios.nexmark_window(HELD_OUT_SEED + 3), speed=1.0, load=2.0),
    rescaled(scenarios.random_dag(5, HELD_OUT_SEED + 4), speed=1.0, load=1.2),
    rescaled(scenarios.nexmark_map(HELD_OUT_SEED + 5), speed=1.0, load=0.7),
    # WordCount as slow as the real demo app: about 12 sentences/s, a split costs ~0.4 s.
    rescaled(scenarios.wordcount(HELD_OUT_SEED + 6), speed=0.006, load=1.0),
]


@pytest.fixture(scope="module")
def agent() -> LaStreamAgent:
    assert PRETRAINED_PATH.exists()
    assert PRETRAINED_PATH.stat().st_size < 3_000_000
    return LaStreamAgent.pretrained()


@pytest.fixture(scope="module")
def episodes():
    settings = PretrainSettings()
    rng = np.random.default_rng(HELD_OUT_SEED)
    return [episode(scenario, rng, settings, HELD_OUT_SEED + i) for i, scenario in enumerate(HELD_OUT)]


def test_the_model_is_trained(agent):
    assert agent.normaliser.fitted
    assert agent.trained_steps >= 1000
    # Pretraining examples to rehearse, so that online training does not fit its first few outcomes alone.
    assert len(agent.replay) == PretrainSettings().rehearsal
    assert copy.deepcopy(agent).train(2) > 0


def test_ranks_candidates_like_the_simulator(agent, episodes):
    correlations = [spearman(agent.log_scores(e.graph, e.schemes, e.context), e.log_rewards) for e in episodes]
    log.info("held-out Spearman per state: %s", [round(c, 3) for c in correlations])
    assert all(len(e.schemes) >= 8 for e in episodes)
    assert np.mean(correlations) >= 0.8, correlations


def test_chosen_scheme_sustains_the_rate_near_the_oracle(agent, episodes):
    """Instances of the scalable operators, chosen over the oracle's minimum.

    The reward pays for headroom (latency, and a restart backlog that must drain), so the
    best-measured scheme is itself often above the oracle; and a trim is made only when its
    predicted gain beats the evaluator's calibrated error (the margin). So an app kept more
    than 1.25x over the oracle must be one where the measured gain of the best candidate
    over the choice is within that margin: not worth the risk of a restart. The slow
    WordCount (490 ms per record along its path), where queueing delay dominates the
    reward, keeps the 2x it runs at: the simulator measures that best."""
    ratios = []
    for e in episodes:
        assert e.sim.sustainable(), e.scenario
        decision = agent.decide(e.graph, e.context)
        oracle = e.sim.oracle()
        scalable = [name for name, op in e.graph.operators.items() if not op.is_source]
        ratios.append(sum(decision.chosen[n] for n in scalable) / sum(oracle[n] for n in scalable))
        log.info("%s: chosen %s, oracle %s, ratio %.3f", e.scenario, decision.chosen, oracle, ratios[-1])
        assert e.sim.sustains(decision.chosen), (e.scenario, decision.chosen, oracle)
        if ratios[-1] > 1.25:
            measured = dict(zip(map(_key, e.schemes), e.log_rewards, strict=True))
            forgone = max(measured.values()) - measured[_key(decision.chosen)]
            assert forgone <= agent.margin(e.graph)[0], (e.scenario, decision.chosen, forgone)
    assert max(ratios) <= 2.0, ratios
    assert np.mean(ratios[:-1]) <= 1.3, ratios


def test_chosen_scheme_is_nearly_the_best_measured(agent, episodes):
    """Regret: what the chosen scheme earned against the best analytic candidate in that state,
    for the apps at the scenarios' own speed. Known limitation, not asserted: on the 170x
    slower WordCount (last held-out state) the regret is about 0.5 in ln(reward)."""
    for e in episodes[:-1]:
        measured = dict(zip(map(_key, e.schemes), e.log_rewards, strict=True))
        decision = agent.decide(e.graph, e.context)
        best = max(measured[_key(c.candidate.scheme)] for c in decision.candidates)
        regret = best - measured[_key(decision.chosen)]
        log.info("%s: regret %.3f in ln(reward)", e.scenario, regret)
        assert regret <= 0.1, (e.scenario, decision.chosen)


def _key(scheme: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(scheme.items()))


def test_an_over_provisioned_slow_app_is_scaled_in(agent):
    """The WordCount demo's shape and speed (150 ms per sentence, 20 ms per word) at 2
    sentences/s with splitter and counter at 4, where 1 of each keeps up: the agent gives
    instances back, and what it keeps still sustains the rate."""
    operators = (
        SimOperator("source", true_rate=4000.0),
        SimOperator("splitter", ("source",), true_rate=6.67, selectivity=7.0, partitions=4, parallelism=4),
        SimOperator("counter", ("splitter",), true_rate=50.0, partitions=4, parallelism=4),
        SimOperator("sink", ("counter",), true_rate=500.0, selectivity=0.0, partitions=4, parallelism=1),
    )
    sim = Simulator(Scenario(name="demo-wordcount", operators=operators, schedule=Constant(2.0)))
    graph = window_graph(sim.run(30.0), 10.0)
    chosen = agent.decide(graph).chosen
    log.info("slow WordCount at 4/4: chosen %s", chosen)
    assert chosen["splitter"] + chosen["counter"] < 8
    assert sim.sustains(chosen)
