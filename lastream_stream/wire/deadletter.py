"""Decoding of every message a LaStream consumer reads, with a dead-letter topic for the rest.

A message that is not JSON, carries an unknown ``schema_version`` or fails validation is
never dropped and never crashes the consumer: it is published (base64 payload and key) with
its source topic/partition/offset and the error to the dead-letter topic, and the consumer
moves on to the next message. A payload too large to travel inside a dead letter (over
``MAX_KEPT_BYTES``) is cut to its first bytes, with its size and SHA-256 noted.

Each bad message is dead-lettered once, by one component:

- metrics: by the agent, which reads them from the end offsets at start-up, so never twice;
- acks: by the agent, their only reader. It keeps how far it has dead-lettered each
  partition beside its checkpoint (``checkpoint.deadletters.json``), so the history it
  replays at every start is not dead-lettered again;
- control: by the follower of the app the message is keyed by (``ControlClient``: the
  supervisor, or an app that scales itself), which commits its progress, so once. The
  agent reads them too and leaves the bad ones out (``kafka.control.usable_command``). One keyed by a name nobody
  follows (a forged key) is dead-lettered by no one: the agent ignores it. The compacted
  control topic takes no message without a key.

A dead letter the broker does not take (down, the dead-letter topic refusing its size) is
tried ``attempts`` times with doubling pauses, then counted and logged, and the consumer
goes on. Its offset is held (``held``): the ``ControlClient`` commits no further on that
partition and the agent records no further mark, so the next start tries again (and
writes once more any dead letter after it on that partition: at least once, never lost).

Bad metrics reports are dead-lettered without waiting (``wait=False``): a flood of garbage
must not hold up the real reports behind it (one broker round trip each made 1 076 bad
messages stall decisions for 54 s). Up to ``MAX_IN_FLIGHT`` such letters may wait for the
broker; beyond, a letter is dropped and counted as a failure, as is one the broker then
refuses (through its delivery report, served by the consumer's ``producer.poll``). Their
offsets need no holding: reports are samples, and the agent reads them from the end.

Dead letters are logged as a summary per ``SUMMARY_EVERY_S`` ("dead-lettered 1 076 in
10 s: 1 000 not JSON, 76 invalid MetricsReport"), not a line each; the first after a quiet
spell is logged whole, with its reason.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import ValidationError

from lastream_stream.wire.contracts import DeadLetter, WireMessage
from lastream_stream.wire.delivery import deliver

log = logging.getLogger(__name__)

# Of a bad payload, what its dead letter keeps: its base64 fits any topic's default 1 MB limit with room.
MAX_KEPT_BYTES = 64 * 1024
MAX_KEPT_KEY_BYTES = 1024

M = TypeVar("M", bound=WireMessage)
MAX_IN_FLIGHT = 10_000  # dead letters sent without waiting and not acknowledged yet; beyond, dropped (counted)
SUMMARY_EVERY_S = 10.0  # dead letters are logged as one summary per this many seconds
DROPPED = "dropped"


class BadMessage(ValueError):
    """Why a payload cannot be used. The text goes into the dead letter."""


def parse(model: type[M], payload: bytes | None) -> M:
    """Decode one JSON payload into ``model``; raise ``BadMessage`` with a readable reason."""
    if payload is None:
        raise BadMessage("empty payload (tombstone or null value)")
    try:
        # The common case in one pass of pydantic's JSON parser, a third of the time of the
        # steps below; a message it refuses goes through them, which say why in words.
        return model.model_validate_json(payload)
    except ValidationError:
        pass
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, 4300+ digit ints, deep nesting
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage(f"expected a JSON object, got {type(data).__name__}")
    # Absent means the current version, as the published schemas say: a producer written from them may omit it.
    version = data.get("schema_version", model.current_version())
    if version not in model.readable_versions():
        readable = ", ".join(map(str, model.readable_versions()))
        raise BadMessage(f"unknown schema_version {version!r} of {model.__name__} (this consumer reads {readable})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise BadMessage(f"invalid {model.__name__}: {reasons}") from None


def dead_letter(
    topic: str, partition: int, offset: int, key: bytes | None, payload: bytes | None, error: str, consumer: str
) -> DeadLetter:
    """The dead letter for one message: its bytes (the first ones if too many), where it came from, and why."""
    payload = payload or b""
    kept_key = None if key is None else key[:MAX_KEPT_KEY_BYTES]
    kept = payload[:MAX_KEPT_BYTES]
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        key_b64=base64.b64encode(kept_key).decode() if kept_key is not None else None,
        payload_b64=base64.b64encode(kept).decode(),
        payload_size=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        truncated=len(kept) < len(payload) or kept_key != key,
        error=error,
        consumer=consumer,
    )


class DeadLetterDecoder:
    """Decodes consumed messages for one consumer; sends the undecodable ones to the DLQ.

    A dead letter is on the broker before ``decode`` returns, or its offset is held (module
    docstring): the consumer commits at most ``held(...)``. ``done`` says, per partition,
    below which offset the bad messages were dead-lettered by an earlier run: those are only
    logged. ``on_dead_letter`` and ``on_failure`` are told of each one written or not
    (a service's metrics count them).
    """

    def __init__(
        self,
        producer: Producer,
        deadletter_topic: str,
        consumer_name: str,
        flush_timeout_s: float = 10.0,
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
        on_failure: Callable[[DeadLetter], None] | None = None,
        attempts: int = 3,
        backoff_s: float = 0.5,
        background: Producer | None = None,
    ):
        """``background``: the producer of the letters not waited for (``wait=False``), whose
        delivery reports its owner serves; ``producer`` must carry only messages that are
        waited for, since ``deliver`` flushes and, on a timeout, purges its whole queue."""
        self.producer = producer
        self.background = background
        self.topic = deadletter_topic
        self.consumer_name = consumer_name
        self.flush_timeout_s = flush_timeout_s
        self.on_dead_letter = on_dead_letter
        self.on_failure = on_failure
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.dead_letters = 0
        self.failures = 0
        self.done: dict[tuple[str, int], int] = {}  # per partition: below this offset, dead-lettered before
        self.undelivered: dict[tuple[str, int], int] = {}  # per partition: the first offset not dead-lettered
        self.in_flight = 0  # sent without waiting, not yet acknowledged
        self._kinds: Counter[str] = Counter()  # dead-lettered since the last summary, by kind of reason
        self._summary_since: float | None = None  # when the summary being counted began; None: quiet

    def decode(
        self,
        model: type[M],
        msg: Message,
        check: Callable[[M], str | None] | None = None,
        *,
        wait: bool = True,
    ) -> M | None:
        """The decoded message, or None when it went to the dead-letter topic: undecodable, or
        valid but refused by ``check`` (which returns why, or None). With ``wait`` off, its
        dead letter is not waited for (module docstring)."""
        try:
            message = parse(model, msg.value())
            if check is not None and (problem := check(message)):
                raise BadMessage(problem)
            return message
        except BadMessage as exc:
            self.send(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), str(exc), wait=wait)
            return None

    def held(self, topic: str, partition: int, offset: int) -> int:
        """How far progress on a partition may be recorded: ``offset``, or the first offset of
        a message that is on no dead-letter topic."""
        return min(offset, self.undelivered.get((topic, partition), offset))

    def send(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        payload: bytes | None,
        error: str,
        wait: bool = True,
    ) -> bool:
        """Dead-letter one message; False when the broker would not take it (its offset is then
        held). Without ``wait``: False only when it could not even be sent (too many waiting)."""
        if offset < self.done.get((topic, partition), 0):
            log.debug("%s[%d]@%d was dead-lettered before: %s", topic, partition, offset, error)
            return True
        letter = dead_letter(topic, partition, offset, key, payload, error, self.consumer_name)
        if not wait and self.background is not None:
            return self._send_later(self.background, letter)
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            problem = deliver(self.producer, self.topic, topic.encode(), letter.to_bytes(), self.flush_timeout_s)
            if problem is None:
                self._written(letter)
                return True
        self._failed(letter, f"after {self.attempts} attempt(s): {problem}")
        return False

    def summarise(self, now: float | None = None) -> None:
        """Log the dead letters counted since the last summary, once ``SUMMARY_EVERY_S`` has passed."""
        now = time.monotonic() if now is None else now
        if self._summary_since is None or now - self._summary_since < SUMMARY_EVERY_S:
            return
        if self._kinds:
            kinds = ", ".join(f"{n:,} {kind}" for kind, n in self._kinds.most_common())
            log.warning(
                "%s dead-lettered %s more in %.0f s: %s",
                self.consumer_name,
                f"{self._kinds.total():,}",
                now - self._summary_since,
                kinds,
            )
            self._kinds.clear()
            self._summary_since = now
        else:
            self._summary_since = None  # quiet: the next one is logged whole

    def _send_later(self, producer: Producer, letter: DeadLetter) -> bool:
        if self.in_flight >= MAX_IN_FLIGHT:
            self._failed(letter, f"{DROPPED}: {self.in_flight:,} dead letters already wait for the broker")
            return False
        try:
            producer.produce(
                self.topic,
                key=letter.source_topic.encode(),
                value=letter.to_bytes(),
                on_delivery=functools.partial(self._delivered, letter),
            )
        except (KafkaException, BufferError) as exc:  # refused before sending: too large, queue full
            self._failed(letter, str(exc))
            return False
        self.in_flight += 1
        return True

    def _delivered(self, letter: DeadLetter, error: KafkaError | None, _msg: Message) -> None:
        self.in_flight -= 1
        if error is None:
            self._written(letter)
        else:
            self._failed(letter, error.str())

    def _written(self, letter: DeadLetter) -> None:
        self.dead_letters += 1
        if self.on_dead_letter is not None:
            self.on_dead_letter(letter)
        where = f"{letter.source_topic}[{letter.partition}]@{letter.offset}"
        if self._summary_since is None:
            log.warning("dead-lettered %s: %s", where, letter.error)
            self._summary_since = time.monotonic()
        else:
            self._kinds[reason_kind(letter.error)] += 1
        self.summarise()

    def _failed(self, letter: DeadLetter, problem: str) -> None:
        self.failures += 1
        self.undelivered.setdefault((letter.source_topic, letter.partition), letter.offset)
        if self.on_failure is not None:
            self.on_failure(letter)
        if problem.startswith(DROPPED):  # a flood past the cap: in the summary, not a line each
            self._kinds[f"NOT dead-lettered ({DROPPED})"] += 1
            self.summarise()
            return
        log.error(
            "could not dead-letter %s[%d]@%d to %s (%s); going on, its offset held: %s",
            letter.source_topic,
            letter.partition,
            letter.offset,
            self.topic,
            problem,
            letter.error,
        )


def reason_kind(error: str) -> str:
    """The kind of a dead letter's reason, for summaries: the reason up to its first colon
    ("not JSON", "invalid MetricsReport"), or its first words."""
    head = error.split(":", 1)[0]
    return head if len(head) <= 60 else f"{head[:57]}..."
