"""The checkpoint is saved at most every LASTREAM_AGENT_CHECKPOINT_EVERY_S, not after every
outcome: each save takes about 0.2 s (a model, its replay buffer, an fsync), and every app has
an outcome a window, so fifty apps saving after each would take the agent's whole time.
What is not saved yet is saved when the agent stops. The real broker."""

from __future__ import annotations

from test_agent_full_disk import outcome

from lastream_stream.agent.service import AgentService
from lastream_stream.agent.settings import AgentServiceSettings


def saved(checkpoint) -> tuple[int, int]:
    """Which save the file is: each is written aside and renamed into place."""
    stat = checkpoint.stat()
    return stat.st_ino, stat.st_mtime_ns


def test_outcomes_save_the_checkpoint_at_most_once_an_interval_and_the_rest_on_stop(settings, tmp_path):
    checkpoint = tmp_path / "agent" / "checkpoint.pt"
    service = AgentService(settings, AgentServiceSettings(checkpoint=checkpoint, llm=False, checkpoint_every_s=3600))
    with service.clients.producer() as producer:
        service._publish(producer, producer, outcome())
        first = saved(checkpoint)
        for _ in range(5):
            service._publish(producer, producer, outcome())
        producer.flush(10)
    assert saved(checkpoint) == first, "saved again within the interval"
    service._save_unsaved()  # what a stop does
    assert saved(checkpoint) != first
    last = saved(checkpoint)
    service._save_unsaved()
    assert saved(checkpoint) == last, "nothing new to save, saved anyway"
