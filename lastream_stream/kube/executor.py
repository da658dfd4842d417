"""The Kubernetes executor: one process for every app in its namespaces.

While it holds the Lease it runs the supervisor's cycle (``supervisor.service.Supervisor``,
the same code as for local processes) for each app it finds labelled, in a thread per app,
with a ``KubeBackend``; apps are looked for again at every renewal. A replica without the
Lease applies nothing and waits to take it over. An app's cycle patches and acks only while
the last renewal is recent (``holds_lease``); a failed renewal stops every cycle at once.
The new holder replays the control topic, finishes any scale in progress, and acknowledges
what its predecessor had not: the consumer group's commits say what was acknowledged (an
executor killed between an ack and its commit has that command acknowledged again, as a
local supervisor would: at least once).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from lastream_stream.exposition import serve_metrics
from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.kube.backend import KubeBackend
from lastream_stream.kube.lease import LeaderElector
from lastream_stream.kube.settings import KubeSettings
from lastream_stream.kube.workloads import Cluster, api_problem
from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor.config import SupervisorSettings
from lastream_stream.supervisor.metrics import SupervisorCollector
from lastream_stream.supervisor.service import Supervisor, stop_on_signals
from lastream_stream.supervisor.status import SupervisorStatus

log = logging.getLogger(__name__)


def api_client(kube: KubeSettings) -> client.ApiClient:
    """From the kubeconfig named, else the pod's service account, else ``~/.kube/config``."""
    if kube.kubeconfig is not None:
        return config.new_client_from_config(config_file=str(kube.kubeconfig))
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        return config.new_client_from_config()
    return client.ApiClient(configuration)


@dataclass
class AppCycle:
    supervisor: Supervisor
    stop: threading.Event
    thread: threading.Thread


class Executor:
    def __init__(self, settings: LastreamSettings, kube: KubeSettings, config: SupervisorSettings | None = None):
        self.settings = settings
        self.kube = kube
        self.config = config or SupervisorSettings()
        self.api = api_client(kube)
        self.cluster = Cluster(self.api, kube.namespaces)
        self.clients = KafkaClients(settings.kafka)
        self.elector = LeaderElector(self.api, kube.lease_home, kube.lease_name, kube.holder, kube.lease_duration_s)
        self.cycles: dict[str, AppCycle] = {}
        self.leading = False
        self.renewed_at = float("-inf")  # time.monotonic() of the last successful renewal

    def statuses(self) -> list[SupervisorStatus]:
        return [cycle.supervisor.status() for cycle in list(self.cycles.values())]

    def run(self, stop: threading.Event) -> None:
        log.info(
            "Kubernetes executor %s: namespaces %s, Lease %s/%s",
            self.kube.holder,
            ", ".join(self.kube.namespaces),
            self.kube.lease_home,
            self.kube.lease_name,
        )
        try:
            while not stop.is_set():
                self._step()
                stop.wait(self.kube.renew_s)
        finally:
            self._stop_cycles()
            if self.leading:
                self.elector.release()

    def _step(self) -> None:
        try:
            leading = self.elector.try_acquire_or_renew()
            if leading:
                self.renewed_at = time.monotonic()
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            problem = api_problem(exc) if isinstance(exc, ApiException) else str(exc)
            log.error("cannot renew Lease %s/%s: %s", self.kube.lease_home, self.kube.lease_name, problem)
            leading = False
        if leading != self.leading:
            log.info(
                "%s the Lease: %s",
                "holding" if leading else "not holding",
                "applying commands" if leading else "standing by",
            )
        if not leading:
            self._stop_cycles()  # applying without the Lease could fight the replica that has it
        self.leading = leading
        if leading:
            self._follow_apps()

    def holds_lease(self) -> bool:
        """True while the last renewal is recent enough that no other replica can have taken the
        Lease over: within two thirds of its duration (client-go's renew deadline), so that a
        leader cut off from the API server stops applying before a standby may start."""
        return self.leading and time.monotonic() - self.renewed_at < self.kube.lease_duration_s * 2 / 3

    def _follow_apps(self) -> None:
        try:
            apps = self.cluster.apps()
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            log.error("cannot list the labelled workloads: %s", exc)
            return
        for app, cycle in list(self.cycles.items()):
            if not cycle.thread.is_alive():
                log.warning("%s: its cycle ended; starting it again", app)
                del self.cycles[app]
        for app in sorted(apps - set(self.cycles)):
            stop = threading.Event()
            try:
                backend = KubeBackend(app, self.cluster, self.kube, stop, self.holds_lease)
                supervisor = Supervisor(self.settings, backend, self.config, self.clients)
            except Exception:  # one app's trouble must not stop the others: tried again next round
                log.exception("%s: cannot follow its commands yet", app)
                continue
            thread = threading.Thread(target=supervisor.run, args=(stop,), name=f"executor-{app}", daemon=True)
            self.cycles[app] = AppCycle(supervisor, stop, thread)
            thread.start()
            log.info("%s: following its commands (operators %s)", app, ", ".join(sorted(backend.spec.operators)))

    def _stop_cycles(self) -> None:
        for cycle in self.cycles.values():
            cycle.stop.set()
        for cycle in self.cycles.values():
            cycle.thread.join()
        self.cycles.clear()


def run(
    settings: LastreamSettings,
    kube: KubeSettings | None = None,
    stop: threading.Event | None = None,
    config: SupervisorSettings | None = None,
) -> None:
    """Apply the scaling commands of every labelled app in ``kube.namespaces`` until ``stop``
    is set; without ``stop``, until SIGINT or SIGTERM (then it must run in the main thread)."""
    kube = kube or KubeSettings()
    executor = Executor(settings, kube, config)
    registry = CollectorRegistry()
    registry.register(SupervisorCollector(executor.statuses))
    with ExitStack() as stack:
        stack.enter_context(serve_metrics(registry, kube, "Kubernetes executor"))
        if stop is None:
            stop = threading.Event()
            stack.enter_context(stop_on_signals(stop))
        executor.run(stop)
