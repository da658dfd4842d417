"""The agent on a full disk: a checkpoint that cannot be saved is logged and tried again at
the next save due (here: the next outcome); the agent keeps scaling and the previous checkpoint stays whole.
A real full filesystem (a small tmpfs), the real broker."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from full_disk import fill, small_tmpfs

from lastream_stream.agent.controller import Publish
from lastream_stream.agent.service import AgentService
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.policy import checkpoint as checkpoint_file
from lastream_stream.policy.agent import LaStreamAgent
from lastream_stream.wire.contracts import DecisionRecord


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (room for two checkpoints), to be filled."""
    with small_tmpfs(tmp_path / "full", "8m") as mount:
        yield mount


def outcome() -> Publish:
    return Publish(
        DecisionRecord(
            app="wordcount",
            decision_id="d1",
            kind="outcome",
            policy="lastream",
            chosen={"splitter": 2},
            measured_reward=0.7,
        )
    )


def test_a_checkpoint_that_cannot_be_saved_is_logged_and_the_agent_goes_on(settings, full_disk, caplog):
    checkpoint = full_disk / "agent" / "checkpoint.pt"
    LaStreamAgent.pretrained(None).save(checkpoint)
    saved = checkpoint.read_bytes()
    fill(full_disk)
    service = AgentService(settings, AgentServiceSettings(checkpoint=checkpoint, llm=False, checkpoint_every_s=0))
    with (
        service.clients.producer() as producer,
        caplog.at_level(logging.WARNING, logger="lastream_stream.agent.service"),
    ):
        service._publish(producer, producer, outcome())  # raised OSError (no space left) before
        service._publish(producer, producer, outcome())
        assert checkpoint.read_bytes() == saved, "the previous checkpoint was damaged"
        assert not checkpoint_file.previous(checkpoint).exists()
        failures = [r.getMessage() for r in caplog.records if "cannot save the checkpoint" in r.getMessage()]
        assert len(failures) == 2 and "No space left on device" in failures[0], failures
        (full_disk / "filler").unlink()
        service._publish(producer, producer, outcome())
    assert checkpoint_file.previous(checkpoint).read_bytes() == saved, "not saved once space came back"
