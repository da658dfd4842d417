"""Checkpoints: a saved and reloaded agent decides and keeps learning exactly like the original."""

from __future__ import annotations

import io
import logging

import pytest
import torch
from click.testing import CliRunner
from policy_graphs import chain_graph, graph_of, operator_reports

from lastream_stream.policy import checkpoint as checkpoint_file
from lastream_stream.policy.agent import PRETRAINED_PATH, AgentConfig, LaStreamAgent
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


def rewrite(path, state: dict) -> None:
    """Replace a checkpoint's content, with a hash that matches it."""
    payload = io.BytesIO()
    torch.save(state, payload)
    checkpoint_file.write(path, payload.getvalue())


def saved_twice(path) -> LaStreamAgent:
    """An agent saved at 20 trained steps, then at 23: the first is the previous checkpoint."""
    agent = trained_agent()
    agent.save(path)
    agent.train(3)
    agent.save(path)
    return agent


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_failed_save_leaves_the_checkpoint_and_its_previous_one_whole(tmp_path):
    path = tmp_path / "agent.pt"
    agent = saved_twice(path)
    saved, previous = path.read_bytes(), (tmp_path / "agent.prev.pt").read_bytes()
    agent.observe(agent.decide(chain_graph()), 0.9)
    # A directory where the save writes its partial file makes that write fail.
    checkpoint_file.partial_path(path).mkdir()
    with pytest.raises(OSError):
        agent.save(path)
    assert path.read_bytes() == saved
    assert (tmp_path / "agent.prev.pt").read_bytes() == previous
    assert len(LaStreamAgent.load(path).replay) == 5


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_in_one_line(tmp_path, caplog):
    path = tmp_path / "agent.pt"
    saved_twice(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING):
        agent = LaStreamAgent.pretrained(path)

    assert agent.trained_steps == 20
    [line] = warnings_of(caplog)
    assert str(path) in line and "SHA-256" in line and f"using {tmp_path / 'agent.prev.pt'} instead" in line


def test_a_cut_short_checkpoint_with_no_previous_one_falls_back_to_the_shipped_model(tmp_path, caplog):
    path = tmp_path / "agent.pt"
    trained_agent().save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with caplog.at_level(logging.WARNING):
        agent = LaStreamAgent.pretrained(path)

    assert agent.normaliser.fitted and agent.trained_steps >= 1000  # the shipped model
    [line] = warnings_of(caplog)
    assert str(path) in line and f"using {PRETRAINED_PATH} instead" in line


def test_a_checkpoint_whose_weights_do_not_fit_its_model_falls_back(tmp_path, caplog):
    path = tmp_path / "agent.pt"
    trained_agent().save(path)
    small = LaStreamAgent(AgentConfig(gcn_hidden=[8], evaluator_hidden=[8]))
    state = torch.load(io.BytesIO(checkpoint_file.read(path)), weights_only=True)
    rewrite(path, state | {"gcn": small.gcn.state_dict(), "evaluator": small.evaluator.state_dict()})

    with caplog.at_level(logging.WARNING):
        agent = LaStreamAgent.pretrained(path)

    assert agent.trained_steps == 20
    [line] = warnings_of(caplog)
    assert str(path) in line and "size mismatch" in line and "\n" not in line


def test_a_checkpoint_from_before_the_hash_loads_with_a_warning_and_gets_one_at_its_next_save(tmp_path, caplog):
    path = tmp_path / "agent.pt"
    trained_agent().save(path)
    torch.save(torch.load(io.BytesIO(checkpoint_file.read(path)), weights_only=True), path)  # the old format

    with caplog.at_level(logging.WARNING):
        agent = LaStreamAgent.pretrained(path)
    assert agent.trained_steps == 20
    [line] = warnings_of(caplog)
    assert str(path) in line and "no content hash" in line

    agent.save(path)
    assert path.read_bytes().startswith(checkpoint_file.MAGIC)


def test_the_shipped_model_loads_without_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert LaStreamAgent.pretrained().trained_steps >= 1000
    assert warnings_of(caplog) == []


def old_checkpoint(tmp_path):
    path = tmp_path / "old.pt"
    trained_agent().save(path)
    state = torch.load(io.BytesIO(checkpoint_file.read(path)), weights_only=True)
    rewrite(path, state | {"features_version": state["features_version"] - 1})
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
