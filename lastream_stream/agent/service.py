"""``lastream agent``: the long-running service around the decision cycle.

On start it replays the history of the control and acks topics; each app's controller
starts from it (restart safety: the generation continues; an unacknowledged command signed
with a configured key is awaited, not re-issued). Commands and acks that fail the control plane's
rule (``wire/signing.py``: keyed by their app, not dated ahead, signed when keys are
configured) are not used; the agent dead-letters the acks, once across restarts, and leaves
the commands to their app's follower (``wire/deadletter.py``).
A command counts as published once the broker acknowledged it; one it did not is not
awaited: it is logged and counted, and the app is observed again. The agent signs the
commands it publishes. Then a manually assigned consumer (no consumer group, so no
rebalance ever pauses it) follows control and acks where the history stopped, and a
consumer in the agents' group follows the metrics partitions the group assigns it, from
their end (older reports describe a past state): the agent decides the apps whose reports
arrive there (``agent/ownership.py``), and hands an app over, its state saved, when its
partition is revoked.

Ingest is never throttled by waiting: each pass takes whatever both consumers have fetched
(up to ``INGEST_BATCH`` messages each, without waiting when there is work to do), and the
apps' decision cycles run in slices of at most ``TICK_SLICE_S`` between two passes, round
robin, so that ticking a thousand apps never stops ingestion for long and every app is
ticked once a round. The metrics consumer commits its position every second: the group's
lag is visible to any lag exporter, and the agent exports it itself
(``lastream_agent_metrics_lag_records``). A restarted agent still reads from the end.
Reports are timed by their arrival at the broker (the metrics topic's ``LogAppendTime``),
so a backlog of the agent's own is never taken for the workers' clocks being off.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from lastream_stream.agent.controller import AppController, Publish
from lastream_stream.agent.metrics import AgentMetrics
from lastream_stream.agent.ownership import ControlHistory, Ownership
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.agent.state import StabilityStore
from lastream_stream.exposition import serve_metrics
from lastream_stream.kafka.clients import KafkaClients, project_topics
from lastream_stream.kafka.control import control_signer, untrusted, usable_command
from lastream_stream.policy.agent import LaStreamAgent
from lastream_stream.policy.base import Policy
from lastream_stream.policy.checkpoint import partial_path
from lastream_stream.policy.llm import LLMGenerator
from lastream_stream.policy.reward import RewardParams
from lastream_stream.settings import LastreamSettings
from lastream_stream.wire.contracts import CommandAck, DecisionRecord, MetricsReport, ScalingCommand
from lastream_stream.wire.deadletter import DeadLetterDecoder
from lastream_stream.wire.delivery import deliver

log = logging.getLogger(__name__)

INGEST_BATCH = 1000  # most messages taken from one consumer in one pass
POLL_S = 0.05  # the longest a pass waits for messages, when no app is due a tick
TICK_SLICE_S = 0.05  # the longest the decision cycles run before ingesting again
LAG_EVERY_S = 1.0  # how often the agent's own lag is exported


def build_agent(service: AgentServiceSettings) -> LaStreamAgent:
    """Own checkpoint if any, else the shipped pretrained model; analytic candidates always,
    the LLM's when enabled and a key is set."""
    torch.set_num_threads(service.torch_threads)  # the process's: the agent is its one user
    agent = LaStreamAgent.pretrained(service.checkpoint)
    if service.llm:
        agent.add_llm(LLMGenerator())
    agent.config = agent.config.model_copy(update={"restart_s": service.restart_s})
    source = (
        f"model and replay from {service.checkpoint}" if service.checkpoint.exists() else "the shipped pretrained model"
    )
    log.info(
        "agent uses %s (%d replayed outcome(s)); candidates from %s",
        source,
        len(agent.replay),
        ", ".join(g.name for g in agent.generators),
    )
    return agent


class AgentService:
    def __init__(self, settings: LastreamSettings, service: AgentServiceSettings, agent: Policy | None = None) -> None:
        """``agent`` defaults to the LaStream agent; any ``Policy`` (a baseline) runs the same cycle."""
        self.settings = settings
        self.service = service
        self.agent = agent or build_agent(service)
        self.clients = KafkaClients(settings.kafka)
        self.signer = control_signer(settings.control_auth)
        self.controllers: dict[str, AppController] = {}  # of the apps this agent owns
        self.ownership = Ownership()
        self.history = ControlHistory(service.max_apps)
        self.metrics = AgentMetrics()
        self.started_at = time.time()
        self.unsaved = False  # outcomes learnt from since the checkpoint was last saved
        self.saved_at = float("-inf")  # when a save was last tried, monotonic
        self.ready = threading.Event()  # set from the group joined, history replayed, until the agent stops
        self.stability = StabilityStore(self.stability_dir)

    def controller(self, app: str) -> AppController | None:
        if self.service.apps and app not in self.service.apps or self._beyond_max_apps(app):
            return None
        if app not in self.controllers:
            log.info("now scaling app %r", app)
            # The controller scores windows with the same reward the agent learnt.
            reward = self.agent.config.reward if isinstance(self.agent, LaStreamAgent) else RewardParams()
            controller = AppController(
                app,
                self.agent,
                self.service.controller,
                reward,
                since=self.started_at,
                stability=self.stability.load(app),
            )
            # Only a signature vouches that a command is LaStream's (ours before a restart, or
            # the app's previous owner's): without keys, whoever can write the topic could have.
            self.history.replay(controller, time.time(), signed=self.signer.enabled)
            self.controllers[app] = controller
        return self.controllers[app]

    def _beyond_max_apps(self, app: str) -> str | None:
        if app in self.controllers or len(self.controllers) < self.service.max_apps:
            return None
        return f"the agent scales {len(self.controllers)} apps, the most allowed (LASTREAM_AGENT_MAX_APPS); not {app!r}"

    def _controller_for(self, decoder: DeadLetterDecoder, msg, app: str) -> AppController | None:
        """``app``'s controller; a message of an app beyond ``max_apps`` is dead-lettered."""
        if (refused := self._beyond_max_apps(app)) is not None:
            decoder.send(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), refused, wait=False)
            return None
        return self.controller(app)

    def serve_metrics(self) -> AbstractContextManager[str | None]:
        """The agent's metrics served over HTTP for the duration of a ``with`` block (its URL, or None when off)."""
        return serve_metrics(self.metrics.registry, self.service, "agent")

    @property
    def stability_dir(self) -> Path:
        """Each app's last change and recent needs per operator, beside the agent's checkpoint:
        what stabilisation is counted from, across agent restarts (``agent/state.py``)."""
        return self.service.checkpoint.with_name(f"{self.service.checkpoint.stem}.stability")

    @property
    def marks_path(self) -> Path:
        """How far the agent has dead-lettered each acks partition, beside its checkpoint:
        what a restart does not dead-letter again."""
        return self.service.checkpoint.with_name(f"{self.service.checkpoint.stem}.deadletters.json")

    def _saved_marks(self) -> dict[tuple[str, int], int]:
        try:
            saved = _read_json(self.marks_path, "dead-lettering afresh")
            return {(topic, int(p)): int(offset) for topic, per in saved.items() for p, offset in per.items()}
        except (TypeError, ValueError, AttributeError) as exc:  # valid JSON of the wrong shape
            log.warning("unusable dead-letter marks in %s (%s): dead-lettering afresh", self.marks_path, exc)
            return {}

    def _save_marks(self, decoder: DeadLetterDecoder, read: dict[tuple[str, int], int]) -> None:
        """Up to where each partition's bad messages are dead-lettered: ``read``, held before
        any the broker did not take."""
        marks: dict[str, dict[str, int]] = {}
        for (topic, p), offset in read.items():
            marks.setdefault(topic, {})[str(p)] = decoder.held(topic, p, offset)
        _write_json(self.marks_path, marks)

    def run(
        self,
        stop: threading.Event,
        max_decisions: int | None = None,
        on_publish: Callable[[Publish], None] | None = None,
    ) -> None:
        topics = self.settings.topics
        self.clients.ensure_topics(project_topics(topics))
        with (
            self.clients.confirmed_producer() as producer,
            # Decision records and the metrics' dead letters, not waited for one by one: apart,
            # so that waiting for a command (which flushes its producer) never waits for them.
            self.clients.confirmed_producer() as background,
            self.clients.consumer("lastream-agent", **{"enable.auto.commit": False}) as control,
            self.clients.consumer(self.service.group, **self._group_options()) as metrics,
        ):
            decoder = DeadLetterDecoder(
                producer,
                topics.deadletter,
                consumer_name="lastream-agent",
                flush_timeout_s=self.clients.settings.timeout_s,
                on_dead_letter=self.metrics.dead_lettered,
                on_failure=self.metrics.dead_letter_failed,
                background=background,
            )
            decoder.done = self._saved_marks()
            history = self.clients.end_offsets([topics.control, topics.acks])
            log.info("agent started: replaying up to %d control/ack record(s), then deciding", sum(history.values()))
            for msg in self.clients.read_history(history):
                if stop.is_set():
                    return
                self._dispatch(decoder, msg)
            read = {tp: end for tp, end in history.items() if tp[0] == topics.acks}
            self._save_marks(decoder, read)
            # Explicit offsets: every message published after end_offsets is read, none twice.
            control.assign([TopicPartition(topic, partition, end) for (topic, partition), end in history.items()])
            metrics.subscribe(
                [topics.metrics], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            due: deque[str] = deque()  # apps still to tick in this round
            next_round = next_lag = time.monotonic()
            while not stop.is_set():
                background.poll(0)  # the delivery reports of the decision records and the metrics' dead letters
                decoder.summarise()
                taken = self._ingest(control, decoder, read, timeout_s=0)
                wait = 0.0 if taken or due else max(0.0, min(POLL_S, next_round - time.monotonic()))
                self._ingest(metrics, decoder, read, timeout_s=wait)
                if not due and time.monotonic() >= next_round:
                    due.extend(self.controllers)
                    next_round = time.monotonic() + self.service.tick_s
                slice_ends = time.monotonic() + TICK_SLICE_S
                while due and time.monotonic() < slice_ends:
                    # An app handed over since the round began is no longer this agent's.
                    if controller := self.controllers.get(due.popleft()):
                        self._tick(producer, background, controller, on_publish)
                if time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + LAG_EVERY_S
                    self.metrics.agent_lag(metrics_lag(metrics))
                self._save_if_due()
                if max_decisions is not None and sum(c.decisions for c in self.controllers.values()) >= max_decisions:
                    log.info("reached %d decision(s): stopping", max_decisions)
                    break
            # The step in progress finished and published (the producer flushes as it closes);
            # what it changed must be there when the agent starts again.
            for app, controller in self.controllers.items():
                self.stability.save(app, controller.stability)
            self.stability.close()
            self._save_unsaved()
            # Leaving the group as the consumer closes revokes every partition: nothing left to hand over.
            self.ready.clear()

    def _ingest(
        self, consumer: Consumer, decoder: DeadLetterDecoder, read: dict[tuple[str, int], int], timeout_s: float
    ) -> int:
        """Dispatch what ``consumer`` has fetched, waiting up to ``timeout_s`` for the first
        message when it has none; how many messages were taken."""
        messages = consumer.consume(INGEST_BATCH, timeout=timeout_s)
        acks = self.settings.topics.acks
        for msg in messages:
            if msg.error() is not None:
                continue
            letters = decoder.dead_letters + decoder.failures
            self._dispatch(decoder, msg)
            if msg.topic() == acks:
                read[(msg.topic(), msg.partition())] = msg.offset() + 1
                if decoder.dead_letters + decoder.failures != letters:
                    self._save_marks(decoder, read)
        return len(messages)

    def _tick(
        self,
        producer: Producer,
        background: Producer,
        controller: AppController,
        on_publish: Callable[[Publish], None] | None,
    ) -> None:
        try:
            actions = controller.tick(time.time())
        except Exception:  # one app's failure must not stop the others being scaled
            log.exception("%s: decision cycle failed; retrying next tick", controller.app)
            return
        for action in self._published(producer, background, controller, records_first(actions)):
            if on_publish is not None:
                on_publish(action)
        if any(isinstance(a.message, DecisionRecord) and a.message.kind != "outcome" for a in actions):
            # A decision records the needs later scale-ins respect.
            self.stability.save(controller.app, controller.stability)

    def _group_options(self) -> dict[str, object]:
        """The metrics consumer's: positions committed, new partitions read from their end (older
        reports describe a past state); cooperative, so a rebalance moves only the partitions
        that change hands and the others' apps are decided on throughout."""
        options: dict[str, object] = {
            # Committed for the group's lag to be seen (lag exporters, KEDA); not read back: see _on_assign.
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "latest",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": int(self.service.session_timeout_s * 1000),
        }
        if self.service.member:
            options["group.instance.id"] = self.service.member
        return options

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Read new partitions from their end offsets now: every report published once the
        agent is ready is read (``auto.offset.reset`` would look the end up later)."""
        if partitions:
            log.info("assigned metrics partition(s) %s", sorted(tp.partition for tp in partitions))
        timeout = self.clients.settings.timeout_s
        at_end = [
            TopicPartition(tp.topic, tp.partition, consumer.get_watermark_offsets(tp, timeout=timeout)[1])
            for tp in partitions
        ]
        consumer.incremental_assign(at_end)
        if at_end:
            # Committed at once: a partition that stays quiet must not count its history as lag.
            consumer.commit(offsets=at_end, asynchronous=True)
        self.ownership.assigned(tp.partition for tp in partitions)
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Hand the apps of ``partitions`` over: what their next owner starts from is saved first."""
        apps = self.ownership.revoked(tp.partition for tp in partitions)
        if not apps or not self.ready.is_set():
            return
        log.info("metrics partition(s) %s revoked: handing over %s", sorted(tp.partition for tp in partitions), apps)
        for app in apps:
            if (controller := self.controllers.get(app)) is not None:
                self.stability.save(app, controller.stability)
        if not self.stability.flush():
            log.warning("the stabilisation state of %s was not all written before the handover", apps)
        self._save_unsaved()
        for app in apps:
            self.controllers.pop(app, None)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions lost without a handover (the session timed out): their apps may be
        another agent's already, so their state is not saved over the new owner's."""
        apps = self.ownership.revoked(tp.partition for tp in partitions)
        if apps:
            log.warning(
                "metrics partition(s) %s lost: dropping %s unsaved", sorted(tp.partition for tp in partitions), apps
            )
        for app in apps:
            self.controllers.pop(app, None)

    def _dispatch(self, decoder: DeadLetterDecoder, msg) -> None:
        topics = self.settings.topics
        # Windows are judged on the agent's clock: a worker's may be off, so control
        # messages are timed when the agent reads them and reports by their arrival at the
        # broker, which a backlog of the agent's does not delay.
        received_at = broker_time(msg) if msg.topic() == topics.metrics else time.time()

        def problem(message: CommandAck) -> str | None:
            return untrusted(msg.key(), message, self.signer, self.settings.control_auth)

        if msg.topic() == topics.metrics:
            # Not waited for: a flood of bad reports must not hold up the good ones behind it.
            report = decoder.decode(MetricsReport, msg, wait=False)
            owned = report and self.ownership.owns(report.app, msg.partition())
            controller = owned and self._controller_for(decoder, msg, report.app)
            if controller and (refused := controller.on_report(report, received_at)) is not None:
                decoder.send(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), refused, wait=False)
        elif msg.topic() == topics.control:
            # A bad command (or a tombstone) is its app's follower's to dead-letter (wire/deadletter.py).
            command = usable_command(msg, self.signer, self.settings.control_auth)
            if command and self.history.refused(command.app) is None:
                self.history.command(command)
                if controller := self.controllers.get(command.app):
                    controller.on_command(command, received_at)
        elif msg.topic() == topics.acks and (ack := decoder.decode(CommandAck, msg, problem)):
            if (refused := self.history.refused(ack.app)) is not None:
                decoder.send(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), refused)
                return
            self.history.ack(ack)
            if controller := self.controllers.get(ack.app):
                controller.on_ack(ack, received_at)
                self.stability.save(ack.app, controller.stability)  # an applied change starts a stabilisation interval

    def _published(
        self, producer: Producer, background: Producer, controller: AppController, actions: list[Publish]
    ) -> list[Publish]:
        """The actions whose message the broker acknowledged. A command it did not is not
        awaited: the controller observes again (its record, published before, stands)."""
        published = []
        for action in actions:
            message = action.message
            if (problem := self._publish(producer, background, action)) is None:
                published.append(action)
            elif isinstance(message, ScalingCommand):
                log.error(
                    "%s: generation %d (decision %s) not published, not awaited; observing again: %s",
                    message.app,
                    message.generation,
                    message.decision_id,
                    problem,
                )
                self.metrics.command_failed(message)
                controller.on_publish_failed(message.decision_id, time.time())
            else:
                log.error("%s: decision record %s not published: %s", message.app, message.decision_id, problem)
        return published

    def _publish(self, producer: Producer, background: Producer, action: Publish) -> str | None:
        """Publish one action's message; why it is not on its way to the broker, or None.

        A decision record goes through ``background`` and is not waited for: a broker round
        trip per record was most of the agent's time with a thousand apps; one the broker
        then refuses is logged by ``_record_delivered``. A command is waited for until the
        broker has it, and only once every record before it is there (a step's records go
        first: ``records_first``), so no command goes out without its record."""
        message = action.message
        timeout_s = self.clients.settings.timeout_s
        if isinstance(message, ScalingCommand):
            if unsent := background.flush(timeout_s):
                return f"{unsent} decision record(s) before it not on the broker within {timeout_s:.0f} s"
            command = self.signer.sign(message)
            if problem := deliver(
                producer, self.settings.topics.control, command.app.encode(), command.to_bytes(), timeout_s
            ):
                return problem
            self.metrics.command_published(command)
            return None
        try:
            background.produce(
                self.settings.topics.decisions,
                key=message.app.encode(),
                value=message.to_bytes(),
                on_delivery=self._record_delivered,
            )
        except (KafkaException, BufferError) as exc:  # refused before sending: too large, queue full
            return str(exc)
        self.metrics.observe(message)
        if message.kind == "outcome":
            self.unsaved = True
            self._save_if_due()
        return None

    def _save_if_due(self) -> None:
        """Save what outcomes taught the agent, at most once every ``checkpoint_every_s``."""
        if self.unsaved and time.monotonic() - self.saved_at >= self.service.checkpoint_every_s:
            self._save_unsaved()

    def _save_unsaved(self) -> None:
        if self.unsaved and isinstance(self.agent, LaStreamAgent):
            self._save_checkpoint(self.agent)

    @staticmethod
    def _record_delivered(error: KafkaError | None, msg: Message) -> None:
        if error is not None:
            log.error("decision record of %s not published: %s", (msg.key() or b"").decode(errors="replace"), error)

    def _save_checkpoint(self, agent: LaStreamAgent) -> None:
        """A failure (a full disk) is logged, not raised: the previous checkpoint stays whole,
        scaling goes on, and the next save that is due tries again."""
        self.saved_at = time.monotonic()
        try:
            agent.save(self.service.checkpoint)
        except OSError as exc:
            log.warning(
                "cannot save the checkpoint to %s (%s); the previous one is kept, next try in %.0f s",
                self.service.checkpoint,
                exc.strerror or exc,
                self.service.checkpoint_every_s,
            )
            return
        self.unsaved = False


def _read_json(path: Path, otherwise: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s): %s", path, exc, otherwise)
        return {}


def _write_json(path: Path, data: dict) -> None:
    """Written aside and renamed. A failure is logged, not raised: the state matters after a
    restart, the scaling goes on without it."""
    partial = partial_path(path)  # agents may share the file, even within one process
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(data))
        os.replace(partial, path)
    except OSError as exc:
        log.warning("cannot save %s (%s)", path, exc)


def broker_time(msg: Message) -> float:
    """When ``msg`` reached the broker, epoch seconds: its ``LogAppendTime``, which
    ``project_topics`` sets on the metrics topic; the time it is read otherwise (a message
    from before the topic was set so)."""
    kind, ms = msg.timestamp()
    return ms / 1000 if kind == TIMESTAMP_LOG_APPEND_TIME else time.time()


def metrics_lag(consumer: Consumer) -> dict[int, int]:
    """Records not yet read of each assigned metrics partition, from the high watermarks the
    last fetches brought (no request to the broker); partitions with no position yet left out."""
    lags = {}
    for tp in consumer.position(consumer.assignment()):
        high = consumer.get_watermark_offsets(tp, cached=True)[1]
        if tp.offset >= 0 and high >= 0:
            lags[tp.partition] = max(0, high - tp.offset)
    return lags


def records_first(actions: list[Publish]) -> list[Publish]:
    """A step's decision records before its command: an agent killed between the two
    leaves a record whose command never went out, never a command nobody recorded."""
    return sorted(actions, key=lambda action: isinstance(action.message, ScalingCommand))


def run(
    settings: LastreamSettings,
    service: AgentServiceSettings | None = None,
    stop: threading.Event | None = None,
    max_decisions: int | None = None,
) -> AgentService:
    """Run the agent, serving its Prometheus metrics, until ``stop`` is set or ``max_decisions``
    decisions were made."""
    agent_service = AgentService(settings, service or AgentServiceSettings())
    with agent_service.serve_metrics():
        agent_service.run(stop or threading.Event(), max_decisions)
    return agent_service
