"""``ControlClient``: what an app that scales itself uses in place of the supervisor, against the real broker."""

import threading
import time
import uuid

import pytest

from lastream_stream.kafka.control import ControlClient
from lastream_stream.wire.contracts import CommandAck, DeadLetter, ScalingCommand
from lastream_stream.wire.deadletter import parse


def publish(clients, settings, *messages: tuple[str, bytes | None]) -> None:
    with clients.producer() as producer:
        for key, value in messages:
            producer.produce(settings.topics.control, key=key.encode(), value=value)


def command(generation: int, app: str = "shop", **target: int) -> ScalingCommand:
    return ScalingCommand(app=app, generation=generation, target=target, changed=sorted(target))


class Follower:
    """Follows the control topic in a thread like a self-scaling app, acking each command."""

    def __init__(self, settings, name="shop-deploy"):
        self.commands: list[ScalingCommand] = []
        self.acks: list[CommandAck | None] = []
        self.stop = threading.Event()
        self.client = ControlClient("shop", settings, name=name)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        with self.client as control:
            for cmd in control.follow(self.stop, poll_s=0.1):
                self.commands.append(cmd)
                self.acks.append(control.ack(cmd, applied=dict(cmd.target)))

    def wait(self, count: int, timeout_s: float = 30.0) -> list[ScalingCommand]:
        deadline = time.monotonic() + timeout_s
        # Each command's ack is on the broker (confirmed) before the next command is read.
        while min(len(self.commands), len(self.acks)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.commands) >= count, f"got {len(self.commands)} of {count} command(s)"
        return self.commands

    def close(self):
        self.stop.set()
        self.thread.join(30)


@pytest.fixture
def follower(settings):
    made = []

    def make(**kwargs) -> Follower:
        made.append(Follower(settings, **kwargs))
        return made[-1]

    yield make
    for f in made:
        f.close()


def test_a_self_scaling_app_gets_its_desired_state_then_each_new_command(settings, clients, reader, follower):
    publish(
        clients,
        settings,
        ("shop", command(1, api=2, worker=1).to_bytes()),
        ("shop", command(2, api=3, worker=1).to_bytes()),
    )
    first = follower()
    assert [c.generation for c in first.wait(1)] == [2]  # the desired state, not the history
    publish(
        clients,
        settings,
        ("other", command(1, app="other", api=9).to_bytes()),  # another app's business
        ("shop", b"{not json"),
        ("shop", None),  # a tombstone
        ("shop", command(3, api=1, worker=2).to_bytes()),
    )
    assert [c.generation for c in first.wait(2)] == [2, 3]
    acks = [parse(CommandAck, m.value()) for m in reader(settings.topics.acks, 2)]
    assert [(a.generation, a.status, a.applied) for a in acks] == [
        (2, "applied", {"api": 3, "worker": 1}),
        (3, "applied", {"api": 1, "worker": 2}),
    ]
    (letter,) = (parse(DeadLetter, m.value()) for m in reader(settings.topics.deadletter, 1))
    assert letter.consumer == "shop-deploy" and "not JSON" in letter.error
    first.close()

    # Restarted: the desired state again (the app must reach it), but no second ack and no second dead letter.
    again = follower()
    assert [c.generation for c in again.wait(1)] == [3]
    publish(
        clients,
        settings,
        ("shop", command(4, api=2, worker=2).to_bytes()),
        ("shop", command(3, api=9, worker=9).to_bytes()),  # superseded: answered for the app, never yielded
    )
    assert [c.generation for c in again.wait(2)] == [3, 4]
    assert again.acks[0] is None and again.acks[1].generation == 4
    acks = [parse(CommandAck, m.value()) for m in reader(settings.topics.acks, 4)]
    assert [(a.generation, a.status) for a in acks] == [(2, "applied"), (3, "applied"), (4, "applied"), (3, "stale")]
    assert [c.generation for c in again.commands] == [3, 4]
    with clients.consumer(f"count-{uuid.uuid4().hex[:8]}", [settings.topics.deadletter]) as consumer:
        letters = [m for m in iter(lambda: consumer.poll(2.0), None) if m.error() is None]
    assert len(letters) == 1


def test_a_missing_control_topic_is_named(settings):
    settings = settings.model_copy(update={"topics": settings.topics.model_copy(update={"control": "no-such-topic-x"})})
    with ControlClient("shop", settings) as control, pytest.raises(RuntimeError, match="no-such-topic-x"):
        control.replay()
