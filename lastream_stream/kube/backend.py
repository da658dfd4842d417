"""The Kubernetes backend of one app (``supervisor.backend.Backend``): its workers are the
pods of its labelled Deployments and StatefulSets (``workloads.py``).

A desired state is applied by patching the scale of each object that differs, then waiting
until every one of them has exactly its desired pods ready (the ack's ``applied``), for at
most ``ready_timeout_s``; the ack then says ``applied``, or ``partial`` with what is ready.
The agent's warm-up runs from the ack, so it starts at readiness, not at the patch.
The desired state the backend records is the objects' own ``spec.replicas``: a new executor
(or the one that takes over a Lease) starts from what the cluster was asked for.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from kubernetes.client.exceptions import ApiException

from lastream_stream.kube.settings import KubeSettings
from lastream_stream.kube.workloads import Cluster, KubeApp, api_problem
from lastream_stream.supervisor.backend import Interrupted
from lastream_stream.supervisor.reconcile import DesiredState

log = logging.getLogger(__name__)


class KubeBackend:
    def __init__(
        self,
        app: str,
        cluster: Cluster,
        settings: KubeSettings,
        stop: threading.Event,
        holds_lease: Callable[[], bool] = lambda: True,
    ) -> None:
        self.app = app
        self.cluster = cluster
        self.settings = settings
        self.stop = stop  # cuts a wait for readiness short when the executor stops or loses its Lease
        self.holds_lease = holds_lease  # whether the Lease is surely still this executor's: checked before each write
        self.spec = KubeApp(app)
        self._first = True  # the first reconcile finishes whatever a predecessor began
        self._said: set[str] = set()  # problems logged, each once while it lasts
        self._read_at = float("-inf")
        self.refresh()

    def refresh(self) -> None:
        self.spec = self.cluster.read(self.app)
        self._read_at = time.monotonic()
        problems = set(self.spec.problems) | {w.fixed_by for w in self.spec.operators.values() if w.fixed_by}
        for problem in sorted(problems - self._said):
            log.warning("%s: %s", self.app, problem)
        self._said = problems

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        yield  # the Lease (executor.py) is what keeps a second executor from applying

    def recorded(self) -> dict[str, int]:
        return {op: w.replicas for op, w in self.spec.operators.items()}

    def reconcile(self, state: DesiredState) -> list[str]:
        """Patch what differs, then wait for the patched operators to be ready; at the first
        reconcile (a new executor, or one that took the Lease over) for every operator, so
        that a scale its predecessor began is finished before it is acknowledged. The view is
        the one read just before (``refresh``, called by the supervisor)."""
        failures = list(self.spec.problems)
        waiting = []
        for op, desired in state.parallelism.items():
            workload = self.spec.operators.get(op)
            if workload is None:
                failures.append(f"{op}: no labelled Deployment or StatefulSet any more")
                continue
            if not workload.scalable:
                continue  # the verdict already kept it where it is, and says why
            if workload.replicas == desired:
                if self._first:
                    waiting.append(op)
                continue
            self._check_lease()
            try:
                self.cluster.scale(workload, desired)
            except ApiException as exc:
                failures.append(f"{op}: cannot scale {workload.ref}: {api_problem(exc)}")
                continue
            waiting.append(op)
            log.info("%s: scaled %s %d -> %d", op, workload.ref, workload.replicas, desired)
        failures += self._wait_ready(state, waiting)
        self._first = False
        self._check_lease()  # the ack follows: not from an executor that may have lost the Lease
        return failures

    def _check_lease(self) -> None:
        if not self.holds_lease():
            raise Interrupted(f"{self.app}: the Lease may have passed to another executor")

    def _wait_ready(self, state: DesiredState, operators: list[str]) -> list[str]:
        """Wait until each of ``operators`` has exactly its desired pods, all ready."""
        deadline = time.monotonic() + self.settings.ready_timeout_s
        waiting = list(operators)
        while True:
            self.refresh()
            waiting = [op for op in waiting if not self._reached(op, state.parallelism[op])]
            if not waiting or time.monotonic() >= deadline:
                break
            if self.stop.wait(self.settings.poll_s):
                raise Interrupted(f"{self.app}: stopped while waiting for {', '.join(waiting)} to be ready")
        return [
            f"{op}: {self._ready(op)}/{state.parallelism[op]} pods ready after {self.settings.ready_timeout_s:.0f} s"
            for op in waiting
        ]

    def _reached(self, op: str, desired: int) -> bool:
        workload = self.spec.operators.get(op)
        return workload is not None and workload.updated and workload.replicas == desired and workload.ready == desired

    def _ready(self, op: str) -> int:
        workload = self.spec.operators.get(op)
        return workload.ready if workload else 0

    def supervise(self, state: DesiredState) -> None:
        # Pods are the cluster's to restart; between commands only the view is kept fresh.
        if time.monotonic() - self._read_at >= self.settings.refresh_s:
            try:
                self.refresh()
            except ApiException as exc:
                log.warning("%s: cannot read its workloads: %s", self.app, api_problem(exc))

    def running(self) -> dict[str, int]:
        return {op: w.ready for op, w in self.spec.operators.items()}

    def workers(self) -> dict[str, dict[int, int]]:
        return {}

    def restarts(self) -> dict[str, int]:
        return {}

    def shutdown(self, stop_workers: bool) -> None:
        # The workloads are the user's: an executor that stops leaves them as they are.
        log.info("%s: executor stopped; its workloads keep their replicas", self.app)
