"""Live terminal view of an app: each operator's instances, rates, lag, and the agent's decisions.

A background thread tails the metrics and decisions topics (from their end) into a
``MetricsWindow``; ``render`` turns the current state into rich tables. Every few seconds it
also asks the broker how far the agents' group is behind on the metrics topic, and says so
in seconds of reports: an agent that is behind decides late, or not at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from confluent_kafka import OFFSET_END, TopicPartition
from rich.console import Group
from rich.table import Table
from rich.text import Text

from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.policy.graph import AppGraph
from lastream_stream.policy.window import MetricsWindow
from lastream_stream.settings import LastreamSettings
from lastream_stream.wire.contracts import DecisionRecord, MetricsReport
from lastream_stream.wire.deadletter import BadMessage, parse

log = logging.getLogger(__name__)

AGENT_LAG_EVERY_S = 5.0  # how often the view asks the broker for the agents' lag
BEHIND_S = 5.0  # an agents' lag of more seconds of reports than this is shown as behind


class AppMonitor:
    """What the view shows, kept current by ``follow`` in a thread."""

    def __init__(
        self,
        settings: LastreamSettings,
        app: str,
        window_s: float = 6.0,
        decisions_kept: int = 8,
        agent_group: str | None = None,
    ) -> None:
        self.settings = settings
        self.app = app
        self.agent_group = agent_group or AgentServiceSettings().group
        self.agent_lag: int | None = None  # reports the agents' group has not committed; None: unknown
        self.reports_per_s = 0.0  # of every app, on the metrics topic
        self.window = MetricsWindow(window_s)
        self.decisions: deque[DecisionRecord] = deque(maxlen=decisions_kept)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> AppMonitor:
        self._thread = threading.Thread(target=self.follow, name="monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def follow(self) -> None:
        clients = KafkaClients(self.settings.kafka)
        topics = self.settings.topics
        metadata = clients.metadata()
        with clients.consumer("lastream-view", **{"enable.auto.commit": False}) as consumer:
            consumer.assign(
                [
                    TopicPartition(topic, p, OFFSET_END)
                    for topic in (topics.metrics, topics.decisions)
                    for p in metadata.topics[topic].partitions
                ]
            )
            counted, since = 0, time.monotonic()
            while not self._stop.is_set():
                if time.monotonic() - since >= AGENT_LAG_EVERY_S:
                    self.reports_per_s = counted / (time.monotonic() - since)
                    self.agent_lag = self._agent_lag(clients)
                    counted, since = 0, time.monotonic()
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                counted += msg.topic() == topics.metrics
                # The view only reads: undecodable messages are the agent's to dead-letter.
                try:
                    if msg.topic() == topics.metrics:
                        report = parse(MetricsReport, msg.value())
                        if report.app == self.app:
                            with self._lock:
                                self.window.add(report)
                    else:
                        record = parse(DecisionRecord, msg.value())
                        if record.app == self.app:
                            with self._lock:
                                self.decisions.append(record)
                except BadMessage:
                    continue

    def _agent_lag(self, clients: KafkaClients) -> int | None:
        """The agents' group's lag on the metrics topic; None when it committed nothing (no agent yet, or one
        from before agents committed) or the broker does not answer."""
        topic = self.settings.topics.metrics
        try:
            committed = clients.committed_total(self.agent_group, topic)  # first: the ends, asked after, only grow
            return None if committed == 0 else sum(clients.end_offsets([topic]).values()) - committed
        except Exception as exc:  # the view goes on without it
            log.debug("cannot read the agents' lag: %s", exc)
            return None

    def agent_status(self) -> Text:
        """How far the agents are behind the reports, and how fresh the last decision's window was."""
        with self._lock:
            last = next((d for d in reversed(self.decisions) if d.kind != "outcome"), None)
        parts, style = [], "green"
        if self.agent_lag is None:
            parts.append(f"agents' lag unknown (group {self.agent_group!r} has committed nothing)")
            style = "yellow"
        else:
            behind_s = self.agent_lag / self.reports_per_s if self.reports_per_s else 0.0
            parts.append(f"agents {self.agent_lag:,} report(s) behind (~{behind_s:.1f} s)")
            if behind_s > BEHIND_S:
                parts[-1] = f"agents BEHIND: {self.agent_lag:,} report(s), ~{behind_s:.0f} s; decisions are late"
                style = "bold red"
        if last is not None and last.window_age_s is not None:
            parts.append(f"last decision {time.time() - last.at:.0f} s ago, on reports {last.window_age_s:.1f} s old")
        return Text(" | ".join(parts), style=style)

    def graph(self, since: float | None = None) -> AppGraph | None:
        """The app's current graph, read while ``follow`` may be adding reports."""
        with self._lock:
            return self.window.graph(self.app, since)

    def render(self) -> Group:
        graph = self.graph()
        with self._lock:
            decisions = list(self.decisions)
        operators = Table(title=f"{self.app}: operators (last {self.window.window_s:.0f} s)", expand=True)
        for column in (
            "operator",
            "instances",
            "parallelism",
            "in /s",
            "out /s",
            "true /s per inst.",
            "busy",
            "lag",
            "p50 ms",
        ):
            operators.add_column(column, justify="left" if column == "operator" else "right")
        if graph is not None:
            for op in graph.operators.values():
                operators.add_row(
                    op.name,
                    str(op.instances_reporting),
                    str(op.parallelism)
                    if op.reported_parallelism in (None, op.parallelism)
                    else f"{op.parallelism} (says {op.reported_parallelism})",
                    f"{op.observed_input_rate:.0f}",
                    f"{op.observed_output_rate:.0f}",
                    f"{op.true_input_rate:.0f}",
                    f"{op.busy_ratio:.0%}",
                    str(op.lag),
                    f"{op.latency_p50_ms:.0f}" if op.latency_p50_ms is not None else "-",
                )
        history = Table(title="decisions", expand=True)
        for column in (
            "time",
            "kind",
            "scheme",
            "candidates",
            "predicted",
            "measured",
            "model (recent errors)",
            "why held",
        ):
            history.add_column(column)
        for d in decisions:
            history.add_row(
                time.strftime("%H:%M:%S", time.localtime(d.at)),
                d.kind,
                " ".join(f"{k}={v}" for k, v in d.chosen.items()),
                str(len(d.candidates)),
                f"{d.predicted_reward:.3f}" if d.predicted_reward is not None else "",
                f"{d.measured_reward:.3f}" if d.measured_reward is not None else "",
                _model(d),
                "; ".join(d.notes),
            )
        # What is wrong with the app's reporting, as the latest decision found it: above all else it explains the rest.
        warnings = Table(title="reporting problems", expand=True, show_header=False)
        warnings.add_column("problem", style="yellow")
        for text in decisions[-1].warnings if decisions else ():
            warnings.add_row(text)
        parts = [self.agent_status(), *([warnings] if warnings.row_count else []), operators, history]
        return Group(*parts)


def _model(record: DecisionRecord) -> str:
    """Which model decided, and how far each one predicted the app's recent outcomes."""
    errors = " ".join(f"{model} {error:.3f}" for model, error in record.prediction_errors.items())
    return " ".join(part for part in (record.model or "", f"({errors})" if errors else "") if part)
