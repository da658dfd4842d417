"""The worker supervisor of one app: reads scaling commands from the control topic, keeps
the desired number of workers per operator running, and acknowledges each command with the
parallelism it actually reached. Where the workers run is a ``Backend`` (``backend.py``):
local processes by default, Kubernetes workloads with ``lastream_stream.kube``.

Start-up: take the backend's session (locally: lock the app's run directory, one supervisor
per app, and adopt the workers a previous supervisor left), wait for the broker (with
backoff, for as long as it takes), take the parallelism the backend last recorded (state
files), replay the app's commands on the compacted control topic from the beginning,
reconcile once, then follow the topic, all through the same ``ControlClient`` an app that
scales itself uses.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import get_args

from prometheus_client import CollectorRegistry

from lastream_stream.exposition import MetricsPortInUse, serve_metrics
from lastream_stream.kafka.clients import BrokerUnreachable, KafkaClients
from lastream_stream.kafka.control import ControlClient, newest
from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor.backend import Backend, Interrupted
from lastream_stream.supervisor.config import SupervisorSettings
from lastream_stream.supervisor.local import ProcessBackend
from lastream_stream.supervisor.metrics import SupervisorCollector
from lastream_stream.supervisor.reconcile import Verdict, ack_for, backoff_delay, fold, initial_state, judge
from lastream_stream.supervisor.spec import AppSpec
from lastream_stream.supervisor.status import SupervisorStatus
from lastream_stream.wire.contracts import AckStatus, CommandAck

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(
        self,
        settings: LastreamSettings,
        workers: AppSpec | Backend,
        config: SupervisorSettings | None = None,
        clients: KafkaClients | None = None,
    ) -> None:
        """``workers``: where the app's workers run; an ``AppSpec`` runs them here as processes."""
        self.settings = settings
        self.config = config or SupervisorSettings()
        self.clients = clients or KafkaClients(settings.kafka)
        if isinstance(workers, AppSpec):
            workers = ProcessBackend(workers, self.config, settings.process_env())
        self.backend = workers
        self.app = workers.spec.app
        self.state = initial_state(workers.spec, self.config.initial)
        self.acks = dict.fromkeys(get_args(AckStatus), 0)
        self.consumer_name = f"supervisor-{self.app}"  # in its dead letters
        self.dead_letters = {self.consumer_name: 0}
        self.dead_letter_failures = {self.consumer_name: 0}
        self._ready = False
        self._status = self._snapshot()

    # Read from any thread: a fresh immutable snapshot is swapped in by the loop.
    def status(self) -> SupervisorStatus:
        return self._status

    def run(self, stop: threading.Event) -> None:
        """Supervise until ``stop`` is set: only then (a deliberate shutdown) are the workers
        stopped, if so configured. On an error of its own the supervisor exits and leaves
        them running: the app goes on, and the next supervisor adopts them."""
        with self.backend.session():
            self._status = self._snapshot()
            try:
                self._supervise_until(stop)
            except Exception:
                running = sum(self.backend.running().values())
                log.error(
                    "%s supervisor failed: leaving %d worker(s) running; a restarted supervisor adopts them",
                    self.app,
                    running,
                )
                raise
            finally:
                self._status = self._snapshot()
            self.backend.shutdown(self.config.stop_workers_on_exit)
            self._status = self._snapshot()

    def _supervise_until(self, stop: threading.Event) -> None:
        config = self.config
        if not wait_for_broker(self.clients.metadata, stop, config.broker_retry_initial_s, config.broker_retry_max_s):
            return
        with ControlClient(self.app, self.settings, name=self.consumer_name, clients=self.clients) as control:
            try:
                self._supervise_commands(control, stop)
            except Interrupted as exc:
                log.info("%s; its successor answers the command", exc)

    def _supervise_commands(self, control: ControlClient, stop: threading.Event) -> None:
        config = self.config
        self._start_up(control, stop)
        while not stop.is_set():
            command = control.poll(config.tick_s)
            if command is not None:
                self.backend.refresh()
                self._adopt_new_operators()
                verdict = judge(self.backend.spec, self.state, command)
                failures = self._apply(verdict)
                self._ack(control, self._ack_of(verdict, failures))
            self.backend.supervise(self.state)
            self.dead_letters[self.consumer_name] = control.dead_letters
            self.dead_letter_failures[self.consumer_name] = control.dead_letter_failures
            self._status = self._snapshot()

    def _start_up(self, control: ControlClient, stop: threading.Event) -> None:
        """The desired state from the recorded parallelism and the control topic's history,
        reached once; only the latest of the commands nobody acknowledged yet is answered
        (the others were superseded while the supervisor was down)."""
        history = control.replay(stop)
        self.backend.refresh()
        spec = self.backend.spec
        recorded = self.backend.recorded()
        # Without a record of its own (a new run directory), the latest command's whole target:
        # compaction may have removed the commands that changed the operators it does not.
        latest = newest(history)
        known = {op: n for op, n in latest.target.items() if op in spec.operators} if latest else {}
        base = initial_state(spec, self.config.initial | known | recorded)
        self.state, verdicts = fold(spec, base, [r.command for r in history])
        log.info(
            "%s: desired %s (generation %d) from %d command(s) on %s, %d worker(s) adopted",
            self.app,
            self.state.parallelism,
            self.state.generation,
            len(history),
            self.settings.topics.control,
            sum(self.backend.running().values()),
        )
        failures = self.backend.reconcile(self.state)
        self._status = self._snapshot()
        unanswered = [verdict for verdict, replayed in zip(verdicts, history, strict=True) if replayed.new]
        if unanswered:
            self._ack(control, self._ack_of(unanswered[-1], failures))
        control.commit()
        self._ready = True
        self._status = self._snapshot()

    # Control messages

    def _adopt_new_operators(self) -> None:
        """An operator the backend found since (a newly labelled workload) joins the desired
        state at what it runs as; a local spec never changes, so locally this does nothing."""
        new = [op for op in self.backend.spec.operators if op not in self.state.parallelism]
        if not new:
            return
        recorded = self.backend.recorded()
        found = {op: recorded.get(op, 1) for op in new}
        log.info("%s: new operator(s) %s", self.app, found)
        self.state = replace(self.state, parallelism=self.state.parallelism | found)

    def _ack_of(self, verdict: Verdict, failures: list[str]) -> CommandAck:
        unmanaged = [op for op, bounds in self.backend.spec.operators.items() if not bounds.managed]
        return ack_for(self.app, verdict, self.backend.running(), failures, unmanaged)

    def _apply(self, verdict: Verdict) -> list[str]:
        command = verdict.command
        if verdict.status == "stale":
            log.info("ignored stale command %s: %s", command.decision_id, "; ".join(verdict.notes))
            return []
        if verdict.status == "rejected":
            notes = "; ".join(verdict.notes)
            log.warning("rejected command %s (generation %d): %s", command.decision_id, command.generation, notes)
            return []
        for op, (old, new) in verdict.changes.items():
            log.info("%s: %d -> %d (generation %d)", op, old, new, command.generation)
        for note in verdict.notes:
            log.warning("generation %d: %s", command.generation, note)
        self.state = verdict.state
        failures = self.backend.reconcile(self.state)
        self._status = self._snapshot()
        return failures

    def _ack(self, control: ControlClient, ack: CommandAck) -> None:
        if not control.send_ack(ack):
            return  # not on the broker, so not committed either: a restart answers the command again
        self.acks[ack.status] += 1
        error = f" ({ack.error})" if ack.error else ""
        log.info("ack generation %d: %s, running %s%s", ack.generation, ack.status, ack.applied, error)

    def _snapshot(self) -> SupervisorStatus:
        running = self.backend.running()
        return SupervisorStatus(
            app=self.app,
            ready=self._ready,
            generation=self.state.generation,
            decision_id=self.state.decision_id,
            desired=dict(self.state.parallelism),
            running={op: running.get(op, 0) for op in self.backend.spec.operators},
            workers=self.backend.workers(),
            restarts=self.backend.restarts(),
            acks=dict(self.acks),
            dead_letters=dict(self.dead_letters),
            dead_letter_failures=dict(self.dead_letter_failures),
        )


def wait_for_broker(probe: Callable[[], object], stop: threading.Event, initial_s: float, max_s: float) -> bool:
    """Call ``probe`` until it stops raising BrokerUnreachable, backing off from ``initial_s``
    to at most ``max_s`` between attempts; False when ``stop`` was set first."""
    attempt = 0
    while not stop.is_set():
        try:
            probe()
            return True
        except BrokerUnreachable as exc:
            attempt += 1
            delay = backoff_delay(attempt, initial_s, max_s)
            log.warning("Kafka unreachable (attempt %d): %s; retrying in %.3g s", attempt, exc, delay)
            stop.wait(delay)
    return False


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (main thread only), so the supervisor exits cleanly."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(
    settings: LastreamSettings,
    app_spec: AppSpec,
    stop: threading.Event | None = None,
    config: SupervisorSettings | None = None,
) -> None:
    """Supervise ``app_spec``'s workers, serving their Prometheus metrics, until ``stop`` is
    set; without ``stop``, until SIGINT or SIGTERM (then it must run in the main thread)."""
    supervisor = Supervisor(settings, app_spec, config)
    registry = CollectorRegistry()
    registry.register(SupervisorCollector(lambda: [supervisor.status()]))
    with ExitStack() as metrics:
        try:
            metrics.enter_context(serve_metrics(registry, supervisor.config, f"{app_spec.app} supervisor"))
        except MetricsPortInUse as exc:
            # Keeping the workers at their desired count matters more than showing it (another
            # app's supervisor on this host has the default port).
            log.error("%s; supervising without metrics", exc)
        if stop is not None:
            supervisor.run(stop)
            return
        stop = threading.Event()
        with stop_on_signals(stop):
            supervisor.run(stop)
