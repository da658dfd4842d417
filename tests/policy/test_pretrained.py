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
from lastream_stream.policy.graph import build_graph
from lastream_stream.sim import Simulator, scenarios
from lastream_stream.training import HELD_OUT_SEED, PretrainSettings, episode, rescaled, spearman

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
    """Instances of the scalable operators, chosen over the oracle's minimum.

    The reward pays for headroom (latency, and a restart backlog that must drain), so the
    best-measured scheme is itself up to 1.2x the oracle in these states; the agent may pick
    a neighbour of it, hence 1.25 per state but 1.2 on average."""
    ratios = []
    for e in episodes:
        assert e.sim.sustainable(), e.scenario
        chosen = agent.decide(e.graph).chosen
        oracle = e.sim.oracle()
        scalable = [name for name, op in e.graph.operators.items() if not op.is_source]
        ratios.append(sum(chosen[n] for n in scalable) / sum(oracle[n] for n in scalable))
        log.info("%s: chosen %s, oracle %s, ratio %.3f", e.scenario, chosen, oracle, ratios[-1])
        assert e.sim.sustains(chosen), (e.scenario, chosen, oracle)
        assert ratios[-1] <= 1.25, (e.scenario, chosen, oracle)
    assert np.mean(ratios) <= 1.2, ratios


def test_scales_in_an_over_provisioned_slow_app(agent):
    """The closed-loop demo's situation: WordCount sized for 12 sentences/s now gets 3/s."""
    base = rescaled(scenarios.wordcount(HELD_OUT_SEED + 7), speed=0.006, load=0.25)
    sized = {"split": 3, "count": 3, "sink": 1}
    sim = Simulator(dataclasses.replace(base, operators=tuple(dataclasses.replace(op, parallelism=sized.get(op.name, op.parallelism)) for op in base.operators)), seed=1)
    graph = build_graph(sim.run(30.0)[-5 * 4 :])  # the last 10 s: 4 operators' instances report every 2 s
    chosen = agent.decide(graph).chosen
    log.info("slow WordCount at 3 sentences/s: current %s, chosen %s, oracle %s", graph.parallelism, chosen, sim.oracle())
    assert sum(chosen.values()) < sum(graph.parallelism.values())
    assert sim.sustains(chosen)
