"""The local backend: an app's workers as processes on this host, one per (operator, slot).

It starts missing slots, stops surplus ones highest first, restarts crashed workers after a
backoff, keeps each operator's state file current for its workers, and adopts the workers
a previous supervisor left running (``workers.RunDir``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from lastream_stream.supervisor.config import SupervisorSettings
from lastream_stream.supervisor.reconcile import DesiredState, Slot, backoff_delay, plan_slots
from lastream_stream.supervisor.spec import AppSpec
from lastream_stream.supervisor.workers import RunDir, Worker, stop_workers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingRestart:
    due: float  # time.monotonic()
    after: str  # how the previous worker ended, for the log


class ProcessBackend:
    def __init__(self, spec: AppSpec, config: SupervisorSettings, cluster_env: Mapping[str, str]) -> None:
        self.spec = spec
        self.config = config
        self.run_dir = RunDir(config.run_dir(spec.app), cluster_env)
        self.slots: dict[Slot, Worker] = {}
        self.crashes: dict[Slot, int] = {}  # consecutive crashes per slot, for the backoff
        self.pending: dict[Slot, PendingRestart] = {}
        self._restarts = {op: 0 for op in spec.operators}
        self._states: dict[str, tuple[int, int, int]] = {}  # as last written to the state files
        self._unwritten: dict[str, tuple[int, int, int]] = {}  # failed to write (a full disk), as logged

    def refresh(self) -> None:
        pass  # a spec file's app does not change while it runs

    @contextmanager
    def session(self) -> Iterator[None]:
        """One supervisor per run directory; it adopts the workers its predecessor left."""
        with self.run_dir.locked():
            self.slots = {(w.operator, w.slot): w for w in self.run_dir.adopt()}
            yield

    def recorded(self) -> dict[str, int]:
        return {op: n for op, n in self.run_dir.read_states().items() if op in self.spec.operators}

    def reconcile(self, state: DesiredState) -> list[str]:
        start, stop = plan_slots(state.parallelism, self.slots)
        self._stop(stop)
        self.pending = {s: p for s, p in self.pending.items() if s[1] < state.parallelism.get(s[0], 0)}
        self.crashes = {s: n for s, n in self.crashes.items() if s[1] < state.parallelism.get(s[0], 0)}
        start = [slot for slot in start if slot not in self.pending]  # a crashed worker waits out its backoff
        self._write_states(state, starting=start)
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
        self._write_states(state)
        return failures

    def supervise(self, state: DesiredState) -> None:
        """Bound the logs; notice crashed workers and restart them once their backoff has passed."""
        for slot, worker in list(self.slots.items()):
            self.run_dir.rotate_log(worker, self.config.log_max_bytes, self.config.log_backups)
            if worker.alive():
                continue
            del self.slots[slot]
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
        self._write_states(state, starting=due)
        for slot in due:
            pending = self.pending.pop(slot)
            worker = self._start(slot)
            if worker is not None:
                self._restarts[slot[0]] += 1
                log.warning("restarted %s after %s (restart #%d)", worker.name, pending.after, self._restarts[slot[0]])
        self._write_states(state)

    def running(self) -> dict[str, int]:
        running = {op: 0 for op in self.spec.operators}
        for (op, _), worker in self.slots.items():
            if worker.alive():
                running[op] = running.get(op, 0) + 1
        return running

    def workers(self) -> dict[str, dict[int, int]]:
        workers: dict[str, dict[int, int]] = {op: {} for op in self.spec.operators}
        for (op, slot), worker in sorted(self.slots.items()):
            if worker.alive():
                workers.setdefault(op, {})[slot] = worker.pid
        return workers

    def restarts(self) -> dict[str, int]:
        return dict(self._restarts)

    def shutdown(self, stop_workers: bool) -> None:
        app = self.spec.app
        if stop_workers:
            self._stop(sorted(self.slots, key=lambda s: (-s[1], s[0])))
            log.info("%s supervisor stopped with its workers", app)
        else:
            log.info("%s supervisor stopped; %d worker(s) left running", app, len(self.slots))

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
        self.slots[slot] = worker
        log.info("started %s (pid %d)", worker.name, worker.pid)
        return worker

    def _stop(self, slots: list[Slot]) -> None:
        workers = [self.slots.pop(slot) for slot in slots if slot in self.slots]
        if not workers:
            return
        graceful = stop_workers(workers, self.config.stop_timeout_s)
        for worker in workers:
            self.run_dir.forget(worker)
            log.info("stopped %s (pid %d)%s", worker.name, worker.pid, "" if graceful[worker.name] else " with SIGKILL")

    def _write_states(self, state: DesiredState, starting: Iterable[Slot] = ()) -> None:
        """Tell the workers how many of their operator run, counting those about to start
        (they read it at start-up) until they are seen to fail. Only changes are written."""
        running = self.running()
        for op, _ in starting:
            running[op] += 1
        for op, desired in state.parallelism.items():
            written = (running[op], desired, state.generation)
            if self._states.get(op) == written:
                continue
            try:
                self.run_dir.write_state(op, *written)
            except OSError as exc:
                # Retried at every tick until it succeeds; said once per state, not per tick.
                if self._unwritten.get(op) != written:
                    log.error("cannot write the state file of %s: %s; the workers read the previous one", op, exc)
                self._unwritten[op] = written
                continue
            self._states[op] = written
            self._unwritten.pop(op, None)
