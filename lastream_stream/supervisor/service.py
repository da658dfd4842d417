"""The worker supervisor of one app: reads scaling commands from the control topic, keeps
the desired number of worker processes per operator running, and acknowledges each
command with the parallelism it actually reached.

Start-up: lock the app's run directory (one supervisor per app), adopt the workers a
previous supervisor left (pid files), wait for the broker (with backoff, for as long as it
takes), take the parallelism it last recorded (state files), replay the app's commands on the compacted control topic
from the beginning, reconcile once, then follow the topic, all through the same
``ControlClient`` an app that scales itself uses.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import get_args

from prometheus_client import CollectorRegistry

from lastream_stream.exposition import MetricsPortInUse, serve_metrics
from lastream_stream.kafka.clients import BrokerUnreachable, KafkaClients
from lastream_stream.kafka.control import ControlClient, newest
from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor.config import SupervisorSettings
from lastream_stream.supervisor.metrics import SupervisorCollector
from lastream_stream.supervisor.reconcile import (
    Slot,
    Verdict,
    ack_for,
    backoff_delay,
    fold,
    initial_state,
    judge,
    plan_slots,
)
from lastream_stream.supervisor.spec import AppSpec
from lastream_stream.supervisor.workers import RunDir, Worker, stop_workers
from lastream_stream.wire.contracts import AckStatus, CommandAck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SupervisorStatus:
    app: str
    ready: bool  # caught up with the control topic and reconciled at least once
    generation: int
    decision_id: str | None
    desired: dict[str, int]
    workers: dict[str, dict[int, int]]  # operator -> slot -> pid, live workers only
    restarts: dict[str, int]  # crashed workers restarted, per operator
    acks: dict[str, int]  # commands acknowledged, per ack status
    dead_letters: dict[str, int]  # control messages written to the dead-letter topic, per consumer name
    dead_letter_failures: dict[str, int]  # bad control messages the dead-letter topic did not take, per consumer name

    @property
    def running(self) -> dict[str, int]:
        return {op: len(slots) for op, slots in self.workers.items()}


@dataclass(frozen=True)
class PendingRestart:
    due: float  # time.monotonic()
    after: str  # how the previous worker ended, for the log


class Supervisor:
    def __init__(
        self,
        settings: LastreamSettings,
        app_spec: AppSpec,
        config: SupervisorSettings | None = None,
        clients: KafkaClients | None = None,
    ) -> None:
        self.settings = settings
        self.spec = app_spec
        self.config = config or SupervisorSettings()
        self.clients = clients or KafkaClients(settings.kafka)
        self.run_dir = RunDir(self.config.run_dir(app_spec.app), settings.process_env())
        self.state = initial_state(app_spec, self.config.initial)
        self.workers: dict[Slot, Worker] = {}
        self.crashes: dict[Slot, int] = {}  # consecutive crashes per slot, for the backoff
        self.pending: dict[Slot, PendingRestart] = {}
        self.restarts = {op: 0 for op in app_spec.operators}
        self.acks = dict.fromkeys(get_args(AckStatus), 0)
        self.consumer_name = f"supervisor-{app_spec.app}"  # in its dead letters
        self.dead_letters = {self.consumer_name: 0}
        self.dead_letter_failures = {self.consumer_name: 0}
        self._states: dict[str, tuple[int, int, int]] = {}  # as last written to the state files
        self._unwritten: dict[str, tuple[int, int, int]] = {}  # failed to write (a full disk), as logged
        self._ready = False
        self._status = self._snapshot()

    # Read from any thread: a fresh immutable snapshot is swapped in by the loop.
    def status(self) -> SupervisorStatus:
        return self._status

    def run(self, stop: threading.Event) -> None:
        """Supervise until ``stop`` is set: only then (a deliberate shutdown) are the workers
        stopped, if so configured. On an error of its own the supervisor exits and leaves
        them running: the app goes on, and the next supervisor adopts them."""
        app = self.spec.app
        with self.run_dir.locked():
            self.workers = {(w.operator, w.slot): w for w in self.run_dir.adopt()}
            self._status = self._snapshot()
            try:
                self._supervise_until(stop)
            except Exception:
                log.error(
                    "%s supervisor failed: leaving %d worker(s) running; a restarted supervisor adopts them",
                    app,
                    len(self.workers),
                )
                raise
            finally:
                self._status = self._snapshot()
            if self.config.stop_workers_on_exit:
                self._stop(sorted(self.workers, key=lambda s: (-s[1], s[0])))
                log.info("%s supervisor stopped with its workers", app)
            else:
                log.info("%s supervisor stopped; %d worker(s) left running", app, len(self.workers))
            self._status = self._snapshot()

    def _supervise_until(self, stop: threading.Event) -> None:
        config = self.config
        if not wait_for_broker(self.clients.metadata, stop, config.broker_retry_initial_s, config.broker_retry_max_s):
            return
        with ControlClient(self.spec.app, self.settings, name=self.consumer_name, clients=self.clients) as control:
            self._start_up(control, stop)
            while not stop.is_set():
                command = control.poll(config.tick_s)
                if command is not None:
                    verdict = judge(self.spec, self.state, command)
                    failures = self._apply(verdict)
                    self._ack(control, ack_for(self.spec.app, verdict, self._running(), failures))
                self._supervise()
                self.dead_letters[self.consumer_name] = control.dead_letters
                self.dead_letter_failures[self.consumer_name] = control.dead_letter_failures
                self._status = self._snapshot()

    def _start_up(self, control: ControlClient, stop: threading.Event) -> None:
        """The desired state from the recorded parallelism and the control topic's history,
        reached once; only the latest of the commands nobody acknowledged yet is answered
        (the others were superseded while the supervisor was down)."""
        history = control.replay(stop)
        recorded = {op: n for op, n in self.run_dir.read_states().items() if op in self.spec.operators}
        # Without a record of its own (a new run directory), the latest command's whole target:
        # compaction may have removed the commands that changed the operators it does not.
        latest = newest(history)
        known = {op: n for op, n in latest.target.items() if op in self.spec.operators} if latest else {}
        base = initial_state(self.spec, self.config.initial | known | recorded)
        self.state, verdicts = fold(self.spec, base, [r.command for r in history])
        log.info(
            "%s: desired %s (generation %d) from %d command(s) on %s, %d worker(s) adopted",
            self.spec.app,
            self.state.parallelism,
            self.state.generation,
            len(history),
            self.settings.topics.control,
            len(self.workers),
        )
        failures = self._reconcile()
        unanswered = [verdict for verdict, replayed in zip(verdicts, history, strict=True) if replayed.new]
        if unanswered:
            self._ack(control, ack_for(self.spec.app, unanswered[-1], self._running(), failures))
        control.commit()
        self._ready = True
        self._status = self._snapshot()

    # Control messages

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
        return self._reconcile()

    def _ack(self, control: ControlClient, ack: CommandAck) -> None:
        if not control.send_ack(ack):
            return  # not on the broker, so not committed either: a restart answers the command again
        self.acks[ack.status] += 1
        error = f" ({ack.error})" if ack.error else ""
        log.info("ack generation %d: %s, running %s%s", ack.generation, ack.status, ack.applied, error)

    # Workers

    def _reconcile(self) -> list[str]:
        """Make the workers match ``self.state``; returns what went wrong, for the ack."""
        start, stop = plan_slots(self.state.parallelism, self.workers)
        self._stop(stop)
        self.pending = {s: p for s, p in self.pending.items() if s[1] < self.state.parallelism.get(s[0], 0)}
        self.crashes = {s: n for s, n in self.crashes.items() if s[1] < self.state.parallelism.get(s[0], 0)}
        start = [slot for slot in start if slot not in self.pending]  # a crashed worker waits out its backoff
        self._write_states(starting=start)
        failures, started = [], []
        for slot in start:
            worker = self._start(slot)
            if worker is None:
                failures.append(f"{slot[0]}-{slot[1]} could not be started")
            else:
                started.append(worker)
        if started:
            deadline = time.monotonic() + self.config.settle_s
            while time.monotonic() < deadline and any(w.alive() for w in started):
                time.sleep(0.05)
            failures += [f"{w.name} exited at start-up with {w.exit_description()}" for w in started if not w.alive()]
        self._write_states()
        self._status = self._snapshot()
        return failures

    def _start(self, slot: Slot) -> Worker | None:
        op, index = slot
        try:
            worker = self.run_dir.start(op, index, self.spec.operators[op])
        except OSError as exc:
            failures = self.crashes[slot] = self.crashes.get(slot, 0) + 1
            delay = backoff_delay(failures, self.config.backoff_initial_s, self.config.backoff_max_s)
            self.pending[slot] = PendingRestart(time.monotonic() + delay, f"a failed start ({exc})")
            log.error("cannot start %s-%d: %s; retrying in %.1f s", op, index, exc, delay)
            return None
        self.workers[slot] = worker
        log.info("started %s (pid %d)", worker.name, worker.pid)
        return worker

    def _stop(self, slots: list[Slot]) -> None:
        workers = [self.workers.pop(slot) for slot in slots if slot in self.workers]
        if not workers:
            return
        graceful = stop_workers(workers, self.config.stop_timeout_s)
        for worker in workers:
            self.run_dir.forget(worker)
            log.info("stopped %s (pid %d)%s", worker.name, worker.pid, "" if graceful[worker.name] else " with SIGKILL")

    def _supervise(self) -> None:
        """Bound the logs; notice crashed workers and restart them once their backoff has passed."""
        for slot, worker in list(self.workers.items()):
            self.run_dir.rotate_log(worker, self.config.log_max_bytes, self.config.log_backups)
            if worker.alive():
                continue
            del self.workers[slot]
            self.run_dir.forget(worker)
            ran_s = time.time() - worker.started_at
            # A worker that ran stably before crashing starts the backoff over.
            failures = 1 if ran_s >= self.config.stable_after_s else self.crashes.get(slot, 0) + 1
            self.crashes[slot] = failures
            delay = backoff_delay(failures, self.config.backoff_initial_s, self.config.backoff_max_s)
            self.pending[slot] = PendingRestart(time.monotonic() + delay, worker.exit_description())
            log.warning(
                "%s (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                worker.name,
                worker.pid,
                worker.exit_description(),
                ran_s,
                delay,
            )
        now = time.monotonic()
        due = sorted(slot for slot, pending in self.pending.items() if pending.due <= now)
        self._write_states(starting=due)
        for slot in due:
            pending = self.pending.pop(slot)
            worker = self._start(slot)
            if worker is not None:
                self.restarts[slot[0]] += 1
                log.warning("restarted %s after %s (restart #%d)", worker.name, pending.after, self.restarts[slot[0]])
        self._write_states()

    def _write_states(self, starting: Iterable[Slot] = ()) -> None:
        """Tell the workers how many of their operator run, counting those about to start
        (they read it at start-up) until they are seen to fail. Only changes are written."""
        running = self._running()
        for op, _ in starting:
            running[op] += 1
        for op, desired in self.state.parallelism.items():
            state = (running[op], desired, self.state.generation)
            if self._states.get(op) == state:
                continue
            try:
                self.run_dir.write_state(op, *state)
            except OSError as exc:
                # Retried at every tick until it succeeds; said once per state, not per tick.
                if self._unwritten.get(op) != state:
                    log.error("cannot write the state file of %s: %s; the workers read the previous one", op, exc)
                self._unwritten[op] = state
                continue
            self._states[op] = state
            self._unwritten.pop(op, None)

    def _running(self) -> dict[str, int]:
        running = {op: 0 for op in self.spec.operators}
        for (op, _), worker in self.workers.items():
            if worker.alive():
                running[op] = running.get(op, 0) + 1
        return running

    def _snapshot(self) -> SupervisorStatus:
        workers: dict[str, dict[int, int]] = {op: {} for op in self.spec.operators}
        for (op, slot), worker in sorted(self.workers.items()):
            if worker.alive():
                workers.setdefault(op, {})[slot] = worker.pid
        return SupervisorStatus(
            app=self.spec.app,
            ready=self._ready,
            generation=self.state.generation,
            decision_id=self.state.decision_id,
            desired=dict(self.state.parallelism),
            workers=workers,
            restarts=dict(self.restarts),
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
    registry.register(SupervisorCollector(supervisor.status))
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
