"""One app's side of the control topic: its scaling commands in, its acknowledgements out.

What the worker supervisor uses, and what an app that scales itself (its own deployment
tooling, an operator, a thread pool) uses instead of the supervisor::

    with ControlClient("myapp") as control:
        for command in control.follow():
            running = scale_to(command.target)   # your deployment: {"parser": 3, ...}
            control.ack(command, applied=running)

The control topic is compacted and keyed by app, so its history holds the app's latest
command: its whole desired state (``ScalingCommand.target`` names every operator the agent
scales). ``follow`` yields that first, then every newer command; one not newer than the last
it yielded is answered ``stale`` for you. Messages keyed by the app that cannot be used go to
the dead-letter topic with their reason: malformed, for another app, dated too far ahead, or,
with keys configured (``LASTREAM_CONTROL_*``), unsigned or wrongly signed; acks are signed.
Other apps' messages are skipped.

Progress is kept in a consumer group (``lastream-<name>``), committed when a command is
acknowledged (the ack on the broker): a restarted client does not acknowledge a command
twice nor dead-letter the same message again, and a command it never acknowledged is handled
again. It never commits past a bad message whose dead letter the broker did not take (see
``wire/deadletter.py``): the next start tries again. Partitions are assigned, never
subscribed, so a restart always sees the whole history.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition

from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.settings import ControlAuthSettings, LastreamSettings
from lastream_stream.wire.contracts import AckStatus, CommandAck, ScalingCommand, Signed
from lastream_stream.wire.deadletter import BadMessage, DeadLetterDecoder, parse
from lastream_stream.wire.delivery import deliver
from lastream_stream.wire.signing import Signer, control_problem

log = logging.getLogger(__name__)


def control_signer(auth: ControlAuthSettings) -> Signer:
    """What signs and checks a process's control messages; without keys, said once per process."""
    if not auth.keys:
        _unauthenticated()
    return Signer(auth.secrets(), auth.signing_key_id)


@functools.cache
def _unauthenticated() -> None:
    log.warning(
        "the control plane is unauthenticated: anyone who can write the control and acks topics can scale "
        "apps and forge acks; set LASTREAM_CONTROL_KEYS and LASTREAM_CONTROL_SIGNING_KEY_ID (README, 'Securing the control plane')"
    )


def untrusted(key: bytes | None, message: Signed, signer: Signer, auth: ControlAuthSettings) -> str | None:
    """Why a control message read now must not be used, or None (``signing.control_problem``)."""
    return control_problem(key, message, signer, time.time(), auth.max_skew_s)


def usable_command(msg: Message, signer: Signer, auth: ControlAuthSettings) -> ScalingCommand | None:
    """The command a control-topic record carries when the control plane's rule lets it be
    used (``untrusted``: keyed by its app, not dated ahead, signed when keys are configured);
    None for anything else, which is its app's follower's to dead-letter."""
    if msg.value() is None:
        return None
    try:
        command = parse(ScalingCommand, msg.value())
    except BadMessage:
        return None
    return None if untrusted(msg.key(), command, signer, auth) else command


def current(*commands: ScalingCommand | None) -> ScalingCommand | None:
    """An app's current command among usable ones: the highest generation (the first of
    equals). The one rule for it: ``latest_commands``, ``ControlClient``'s replay (``newest``)
    and the agent's control history (``agent/ownership.py``) keep their apps' current command
    so, and ``ControlClient.follow`` answers any command not above it ``stale``."""
    return max((c for c in commands if c is not None), key=lambda c: c.generation, default=None)


def latest_commands(clients: KafkaClients, settings: LastreamSettings) -> dict[str, ScalingCommand]:
    """Each app's current command on the control topic, read from its start to its current end."""
    signer = control_signer(settings.control_auth)
    latest: dict[str, ScalingCommand] = {}
    for msg in clients.read_history(clients.end_offsets([settings.topics.control])):
        if command := usable_command(msg, signer, settings.control_auth):
            latest[command.app] = current(latest.get(command.app), command)
    return latest


@dataclass(frozen=True)
class Replayed:
    command: ScalingCommand
    new: bool  # no earlier run of this client's group acknowledged it


def newest(history: list[Replayed]) -> ScalingCommand | None:
    """The current command of a replay: the app's desired state."""
    return current(*(r.command for r in history))


class ControlClient:
    def __init__(
        self,
        app: str,
        settings: LastreamSettings | None = None,
        *,
        name: str | None = None,
        clients: KafkaClients | None = None,
    ) -> None:
        """``name`` identifies this client in dead letters and names its consumer group
        (``lastream-<name>``); one name per app and deployment."""
        self.app = app
        self.settings = settings or LastreamSettings()
        self.name = name or f"control-{app}"
        self.clients = clients or KafkaClients(self.settings.kafka)
        self.signer = control_signer(self.settings.control_auth)
        self._stack = ExitStack()
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._decoder: DeadLetterDecoder | None = None
        self._position: dict[tuple[str, int], int] = {}  # next offset to read, per partition
        self._answered: set[str] = set()  # decision ids a previous run acknowledged

    def __enter__(self) -> ControlClient:
        with ExitStack() as stack:
            self._producer = stack.enter_context(self.clients.confirmed_producer())
            group = f"lastream-{self.name}"
            self._consumer = stack.enter_context(self.clients.consumer(group, **{"enable.auto.commit": False}))
            self._stack = stack.pop_all()
        self._decoder = DeadLetterDecoder(
            self._producer, self.settings.topics.deadletter, self.name, self.settings.kafka.timeout_s
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def dead_letters(self) -> int:
        return self._decoder.dead_letters

    @property
    def dead_letter_failures(self) -> int:
        return self._decoder.failures

    def replay(self, stop: threading.Event | None = None) -> list[Replayed]:
        """The app's commands from the start of the topic to its current end, in order;
        afterwards ``poll`` goes on from there. A read cut short (``stop``, or a broker too
        slow) returns what was read, and the rest arrives through ``poll``."""
        topic = self.settings.topics.control
        md = self.clients.metadata().topics.get(topic)
        if md is None or md.error is not None:
            raise RuntimeError(f"control topic {topic!r} does not exist: run `lastream topics ensure`")
        partitions = [TopicPartition(topic, p) for p in sorted(md.partitions)]
        done_before = {
            tp.partition: tp.offset
            for tp in self._consumer.committed(partitions, timeout=self.settings.kafka.timeout_s)
        }
        self._decoder.done = {(topic, p): offset for p, offset in done_before.items()}
        ends = self.clients.end_offsets([topic])
        self._position = {tp: OFFSET_BEGINNING for tp in ends}
        history: list[Replayed] = []
        try:
            for msg in self.clients.read_history(ends):
                if stop is not None and stop.is_set():
                    break
                self._position[(topic, msg.partition())] = msg.offset() + 1
                seen = msg.offset() < done_before.get(msg.partition(), -1)
                command = self._decode(msg)
                if command is not None:
                    history.append(Replayed(command, new=not seen))
                    if seen:
                        self._answered.add(command.decision_id)
            else:
                self._position = dict(ends)
        except TimeoutError as exc:
            log.warning("%s: going on with what was read; the rest is followed as new commands", exc)
        self._consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in self._position.items()])
        return history

    def poll(self, timeout_s: float) -> ScalingCommand | None:
        """The next new command of this app, or None after ``timeout_s``. A message that
        needs no answer (another app's, a tombstone, a dead letter) is committed at once."""
        self._decoder.summarise()
        msg = self._consumer.poll(timeout_s)
        if msg is None:
            return None
        if msg.error() is not None:
            log.warning("control topic: %s", msg.error())
            return None
        self._position[(msg.topic(), msg.partition())] = msg.offset() + 1
        command = self._decode(msg)
        if command is None:
            self.commit()
        return command

    def follow(self, stop: threading.Event | None = None, poll_s: float = 0.5) -> Iterator[ScalingCommand]:
        """The app's desired state (its latest command on the topic, if any), then each new
        command as it arrives, until ``stop`` is set. The desired state is yielded even when
        an earlier run acknowledged it: a restarted app must reach it again."""
        latest = newest(self.replay(stop))
        generation = 0
        if latest is not None:
            generation = latest.generation
            yield latest
        while stop is None or not stop.is_set():
            command = self.poll(poll_s)
            if command is None:
                continue
            if command.generation <= generation:  # superseded, or replayed by its issuer
                self.ack(command, applied={}, status="stale", error=f"generation {generation} is applied")
                continue
            generation = command.generation
            yield command

    def ack(
        self,
        command: ScalingCommand,
        applied: dict[str, int],
        status: AckStatus = "applied",
        *,
        clamped: dict[str, int] | None = None,
        error: str | None = None,
    ) -> CommandAck | None:
        """Tell the agent what now runs for ``command`` (``applied``: the parallelism of
        every operator, not only the changed ones) and commit the progress. A command an
        earlier run already acknowledged is not acknowledged again: returns None."""
        if command.decision_id in self._answered:
            log.debug("generation %d was acknowledged before: not again", command.generation)
            return None
        ack = CommandAck(
            app=self.app,
            decision_id=command.decision_id,
            generation=command.generation,
            status=status,
            applied=applied,
            clamped=clamped or {},
            error=error,
        )
        self.send_ack(ack)
        return ack

    def send_ack(self, ack: CommandAck) -> bool:
        """Publish an acknowledgement built by the caller (the supervisor builds its own)
        and commit the progress once it is on the broker. An ack not delivered in time is
        not committed (a restart answers the command again): returns False."""
        ack = self.signer.sign(ack)
        topic, timeout = self.settings.topics.acks, self.settings.kafka.timeout_s
        if problem := deliver(self._producer, topic, self.app.encode(), ack.to_bytes(), timeout):
            log.error("ack of generation %d not delivered to %s: %s", ack.generation, topic, problem)
            return False
        self._answered.add(ack.decision_id)
        self.commit()
        return True

    def commit(self) -> None:
        """Record that everything read so far is handled, up to the first message on no dead-letter topic."""
        offsets = [
            TopicPartition(t, p, self._decoder.held(t, p, offset))
            for (t, p), offset in self._position.items()
            if offset >= 0
        ]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Only costs a repeated dead letter or ack after a restart, never a wrong state.
            log.warning("could not commit control topic offsets: %s", exc)

    def _decode(self, msg: Message) -> ScalingCommand | None:
        """This app's usable command in ``msg``, or None. Messages keyed by another app (or
        by none) are not this client's business: the agent dead-letters the unkeyed ones."""
        key = msg.key()
        if key != self.app.encode() or msg.value() is None:
            return None  # another app's business, or a tombstone: nothing to apply

        def problem(command: ScalingCommand) -> str | None:
            return untrusted(key, command, self.signer, self.settings.control_auth)

        return self._decoder.decode(ScalingCommand, msg, problem)
