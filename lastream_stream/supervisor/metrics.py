"""A supervisor's Prometheus metrics, read from its status snapshot at every scrape.

The supervisor already keeps what there is to expose (desired and running workers,
restarts, acks by status, dead letters) in the immutable ``SupervisorStatus`` its loop
swaps in, so a scrape from the server's thread reads one consistent snapshot and the
supervisor itself knows nothing of Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lastream_stream.exposition import (
    DEAD_LETTER_FAILURES,
    DEAD_LETTER_FAILURES_HELP,
    DEAD_LETTERS,
    DEAD_LETTERS_HELP,
)
from lastream_stream.supervisor.status import SupervisorStatus


class SupervisorCollector(Collector):
    """The metrics of the apps ``statuses`` returns: one locally, every app a Kubernetes executor serves."""

    def __init__(self, statuses: Callable[[], Iterable[SupervisorStatus]]) -> None:
        self.statuses = statuses

    def collect(self) -> Iterator[Metric]:
        per_operator = ["app", "operator"]
        desired = GaugeMetricFamily(
            "lastream_supervisor_desired_parallelism", "Workers the applied commands ask for", labels=per_operator
        )
        running = GaugeMetricFamily(
            "lastream_supervisor_running_workers",
            "Live worker processes (ready pods on Kubernetes)",
            labels=per_operator,
        )
        restarts = CounterMetricFamily(
            "lastream_supervisor_worker_restarts", "Crashed workers restarted", labels=per_operator
        )
        commands = CounterMetricFamily(
            "lastream_supervisor_commands", "Commands acknowledged, by ack status", labels=["app", "status"]
        )
        dead_letters = CounterMetricFamily(DEAD_LETTERS, DEAD_LETTERS_HELP, labels=["consumer"])
        failures = CounterMetricFamily(DEAD_LETTER_FAILURES, DEAD_LETTER_FAILURES_HELP, labels=["consumer"])
        for status in self.statuses():
            for operator, n in status.desired.items():
                desired.add_metric([status.app, operator], n)
            for operator, n in status.running.items():
                running.add_metric([status.app, operator], n)
            for operator, n in status.restarts.items():
                restarts.add_metric([status.app, operator], n)
            for ack_status, n in status.acks.items():
                commands.add_metric([status.app, ack_status], n)
            for consumer, n in status.dead_letters.items():
                dead_letters.add_metric([consumer], n)
            for consumer, n in status.dead_letter_failures.items():
                failures.add_metric([consumer], n)
        yield from (desired, running, restarts, commands, dead_letters, failures)
