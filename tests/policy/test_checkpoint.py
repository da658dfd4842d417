"""Checkpoints: a saved and reloaded agent decides and keeps learning exactly like the original."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner
from policy_graphs import chain_graph, graph_of, operator_reports

from lastream_stream.policy.agent import AgentConfig, LaStreamAgent
from lastream_stream.policy.base import CheckpointMismatch
from lastream_stream.tools.cli import main


def busy_graph():
    return graph_of(
        operator_reports("src", records_in=20_000, records_out=20_000, useful_s=2.0, partitions=2),
        operator_reports(
            "map",
            upstreams=("src",),
            instances=3,
            records_in=6_000,
            records_out=6_000,
            useful_s=9.0,
            partitions=16,
            lag=5_000,
        ),
        operator_reports(
            "sink", upstreams=("map",), records_in=18_000, records_out=0, useful_s=1.0, partitions=4, latency_ms=80.0
        ),
    )


def trained_agent() -> LaStreamAgent:
    agent = LaStreamAgent(AgentConfig(seed=7, batch_size=4, replay_capacity=50))
    for graph, rewards in ((chain_graph(), (0.2, 0.45, 0.3)), (busy_graph(), (0.1, 0.6))):
        for r in rewards:
            agent.observe(agent.decide(graph), r)
    agent.train(20)
    return agent


def test_round_trip_gives_identical_decisions_and_training(tmp_path):
    agent = trained_agent()
    path = tmp_path / "agent.pt"
    agent.save(path)
    loaded = LaStreamAgent.load(path)

    for graph in (chain_graph(), busy_graph()):
        before, after = agent.decide(graph), loaded.decide(graph)
        assert after.chosen == before.chosen
        assert [(c.candidate, c.score) for c in after.candidates] == [(c.candidate, c.score) for c in before.candidates]
    assert loaded.config == agent.config
    assert len(loaded.replay) == len(agent.replay) == 5
    assert list(loaded.history) == list(agent.history)
    # Same optimizer moments and sampling state: further training stays in lockstep.
    assert loaded.train(5) == agent.train(5)
    for a, b in zip(agent.gcn.parameters(), loaded.gcn.parameters(), strict=True):
        assert torch.equal(a, b)


def test_replay_buffer_is_bounded():
    agent = LaStreamAgent(AgentConfig(replay_capacity=3))
    decision = agent.decide(chain_graph())
    for r in (0.1, 0.2, 0.3, 0.4, 0.5):
        agent.observe(decision, r)
    assert len(agent.replay) == 3
    assert [p.reward for p in agent.history] == [0.1, 0.2, 0.3, 0.4, 0.5]


def test_own_checkpoint_is_preferred_over_the_shipped_one(tmp_path):
    agent = trained_agent()
    path = tmp_path / "own.pt"
    agent.save(path)
    assert LaStreamAgent.pretrained(path).trained_steps == agent.trained_steps == 20


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path):
    agent = trained_agent()
    path = tmp_path / "agent.pt"
    agent.save(path)
    saved = path.read_bytes()
    agent.observe(agent.decide(chain_graph()), 0.9)
    # A directory where the save writes its partial file makes that write fail.
    (tmp_path / f".agent.pt.{os.getpid()}.partial").mkdir()
    with pytest.raises(RuntimeError):  # torch's error for a file it cannot open
        agent.save(path)
    assert path.read_bytes() == saved
    assert len(LaStreamAgent.load(path).replay) == 5


def old_checkpoint(tmp_path):
    path = tmp_path / "old.pt"
    trained_agent().save(path)
    state = torch.load(path, weights_only=True)
    torch.save(state | {"features_version": state["features_version"] - 1}, path)
    return path


def test_a_checkpoint_of_another_version_is_refused_with_what_to_do(tmp_path):
    path = old_checkpoint(tmp_path)
    with pytest.raises(CheckpointMismatch, match="move it away to start again from the shipped model"):
        LaStreamAgent.pretrained(path)


def test_the_agent_command_reports_an_unusable_checkpoint_in_one_line(tmp_path):
    path = old_checkpoint(tmp_path)
    result = CliRunner().invoke(main, ["agent", "--checkpoint", str(path)])
    assert result.exit_code == 2
    assert "error:" in result.output and str(path) in result.output.replace("\n", "")
    assert "Traceback" not in result.output
