"""Pretraining's states: one-shot, and taken from runs steered by the shipped controller."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lastream_stream.policy.candidates import clamp_scheme
from lastream_stream.sim import Steps, scenarios
from lastream_stream.tools.training import PretrainSettings, closed_loop_episodes, pretrain


def test_closed_loop_states_are_those_the_controller_decided_in():
    """WordCount at a third of what it needs, its rate doubling at 120 s: the controller scales
    it out, so the later kept states come after a restart; each is labelled like a one-shot
    state, with the context the agent decided with."""
    base = scenarios.wordcount(7)
    scenario = dataclasses.replace(base, schedule=Steps(base.schedule.rate_at(0.0), ((120.0, 2.0),)))
    settings = PretrainSettings(states_per_trajectory=6, trajectory_s=240.0)
    episodes = closed_loop_episodes(scenario, np.random.default_rng(1), settings, seed=7)

    assert 1 <= len(episodes) <= 6
    assert all(e.kind == "closed-loop" for e in episodes)
    times = [e.sim.now for e in episodes]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert any(e.sim.reconfigurations >= 1 for e in episodes), "no kept state came after a reconfiguration"
    for e in episodes:
        assert e.context.restart_s is not None
        assert clamp_scheme(e.graph, e.graph.parallelism) in e.schemes  # keeping the running scheme is a candidate
        assert len(e.schemes) == len(e.log_rewards) >= 4
        assert all(math.isfinite(r) and r <= 0 for r in e.log_rewards)


def test_pretraining_mixes_both_kinds_and_reports_each():
    settings = PretrainSettings(
        episodes=24,
        states_per_trajectory=4,
        closed_loop_share=0.5,
        train_steps=100,
        validation_share=0.5,
        trajectory_s=120.0,
        rehearsal=10,
    )
    kinds = settings.jobs()
    assert kinds.count("closed-loop") == 3 and kinds.count("one-shot") == 12
    agent, summary = pretrain(settings, workers=1)
    assert agent.trained_steps == 100
    assert -1 <= summary["validation_spearman"] <= 1
    assert any(key.startswith("validation_spearman_") for key in summary)
