"""The shipped pretrained evaluator on simulated scenarios it never saw (held-out seeds).

For each held-out decision state, every candidate (the agent's analytic ones plus random
perturbations) is applied to its own copy of the simulator and its reward measured after
the warm-up, exactly as in pretraining; the evaluator's ranking must agree with it.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from lastream_stream.policy.agent import PRETRAINED_PATH, LaStreamAgent
from lastream_stream.sim import Constant, Scenario, scenarios
from lastream_stream.training import HELD_OUT_SEED, PretrainSettings, episode, spearman

log = logging.getLogger(__name__)


def at_rate(scenario: Scenario, factor: float) -> Scenario:
    return dataclasses.replace(scenario, schedule=Constant(scenario.schedule.rate_at(0.0) * factor))


HELD_OUT = [
    at_rate(scenarios.wordcount(HELD_OUT_SEED), 1.5),
    at_rate(scenarios.nexmark_join(HELD_OUT_SEED + 1), 1.0),
    at_rate(scenarios.random_dag(12, HELD_OUT_SEED + 2), 0.8),
    at_rate(scenarios.nexmark_window(HELD_OUT_SEED + 3), 2.0),
    at_rate(scenarios.random_dag(5, HELD_OUT_SEED + 4), 1.2),
    at_rate(scenarios.nexmark_map(HELD_OUT_SEED + 5), 0.7),
]


@pytest.fixture(scope="module")
def agent() -> LaStreamAgent:
    assert PRETRAINED_PATH.exists()
    assert PRETRAINED_PATH.stat().st_size < 2_000_000
    return LaStreamAgent.pretrained()


@pytest.fixture(scope="module")
def episodes():
    settings = PretrainSettings()
    rng = np.random.default_rng(HELD_OUT_SEED)
    return [episode(scenario, rng, settings, HELD_OUT_SEED + i) for i, scenario in enumerate(HELD_OUT)]


def test_the_model_is_trained(agent):
    assert agent.normaliser.fitted
    assert agent.trained_steps >= 1000


def test_ranks_candidates_like_the_simulator(agent, episodes):
    correlations = [spearman(agent.log_scores(e.graph, e.schemes), e.log_rewards) for e in episodes]
    log.info("held-out Spearman per state: %s", [round(c, 3) for c in correlations])
    assert all(len(e.schemes) >= 8 for e in episodes)
    assert np.mean(correlations) >= 0.8, correlations


def test_chosen_scheme_sustains_the_rate_near_the_oracle(agent, episodes):
    for e in episodes:
        assert e.sim.sustainable(), e.scenario
        chosen = agent.decide(e.graph).chosen
        oracle = e.sim.oracle()
        scalable = [name for name, op in e.graph.operators.items() if not op.is_source]
        ratio = sum(chosen[n] for n in scalable) / sum(oracle[n] for n in scalable)
        log.info("%s: chosen %s, oracle %s, ratio %.2f", e.scenario, chosen, oracle, ratio)
        assert e.sim.sustains(chosen), (e.scenario, chosen, oracle)
        assert ratio <= 1.2, (e.scenario, chosen, oracle)
