"""The agent's Prometheus metrics, in the spirit of the Flink autoscaler's ``AutoScaler.*`` gauges.

Everything the agent decides is in the ``DecisionRecord`` it publishes for every step, so
the metrics are read from those records, in one place (``observe``): the per-operator
gauges are the state and scheme of the app's last decision; an outcome only sets the
measured reward. Only the dead letters and the published commands are counted where they
happen.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

from lastream_stream.exposition import (
    DEAD_LETTER_FAILURES,
    DEAD_LETTER_FAILURES_HELP,
    DEAD_LETTERS,
    DEAD_LETTERS_HELP,
)
from lastream_stream.wire.contracts import DeadLetter, DecisionKind, DecisionRecord, HoldReason, ScalingCommand

# The label of a hold no rule forced: the policy preferred the running scheme.
POLICY_HOLD = "policy"
HOLD_REASONS = (POLICY_HOLD, *get_args(HoldReason))


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        per_operator = ["app", "operator"]

        def gauge(name: str, doc: str, labels: list[str] = per_operator) -> Gauge:
            return Gauge(f"lastream_autoscaler_{name}", doc, labels, registry=self.registry)

        self.parallelism = gauge("parallelism", "Instances running at the last decision")
        self.recommended = gauge(
            "recommended_parallelism",
            "Instances of the scheme chosen at the last decision (held, commanded or advised)",
        )
        self.ds2 = gauge("ds2_parallelism", "Instances DS2 needs at 100% busy at the last decision")
        self.true_rate = gauge(
            "true_processing_rate_records_per_second", "Records one instance processes per second of useful time"
        )
        self.input_rate = gauge("observed_input_rate_records_per_second", "Records per second taken in, all instances")
        self.busy = gauge("busy_ratio", "Fraction of the window the instances were busy")
        self.lag = gauge("lag_records", "Consumer lag of the operator's input, records")
        self.predicted = gauge(
            "predicted_reward", "Predicted reward (0-1] of the last decision's scheme; NaN when unscored", ["app"]
        )
        self.measured = gauge("measured_reward", "Measured reward (0-1] of the last decision judged", ["app"])
        self.prediction_error = gauge(
            "prediction_error",
            "Mean absolute error of each model's predicted reward over the app's recent outcomes, each measured "
            "before the online model trained on it",
            ["app", "model"],
        )
        self.decisions = Counter(
            "lastream_autoscaler_decisions",
            "Decision records published, by kind",
            ["app", "kind"],
            registry=self.registry,
        )
        self.commands = Counter(
            "lastream_autoscaler_commands",
            "Scaling commands published to the control topic",
            ["app"],
            registry=self.registry,
        )
        self.holds = Counter(
            "lastream_autoscaler_holds",
            "Holds, by each rule that held a proposed change ('policy': none did, the policy kept the running scheme)",
            ["app", "reason"],
            registry=self.registry,
        )
        self.dead_letters = Counter(DEAD_LETTERS, DEAD_LETTERS_HELP, ["consumer"], registry=self.registry)
        self.dead_letter_failures = Counter(
            DEAD_LETTER_FAILURES, DEAD_LETTER_FAILURES_HELP, ["consumer"], registry=self.registry
        )
        self.unpublished = Counter(
            "lastream_autoscaler_unpublished_commands",
            "Scaling commands the broker did not acknowledge: not awaited, the app observed again",
            ["app"],
            registry=self.registry,
        )
        self.window_age = gauge(
            "window_age_seconds",
            "Age of the newest report in the window of the app's last decision, when decided: how stale it was",
            ["app"],
        )
        self.metrics_lag = Gauge(
            "lastream_agent_metrics_lag_records",
            "Reports on the agent's metrics partitions it has not read yet, per partition: above a few seconds "
            "of reports, the agent is behind",
            ["partition"],
            registry=self.registry,
        )
        self.operators: dict[str, set[str]] = {}  # per app, the operators its gauges have series for
        self.partitions: set[int] = set()  # the metrics partitions the lag gauge has series for

    def observe(self, record: DecisionRecord) -> None:
        if record.app not in self.operators:
            self._start_app(record.app)
        self.decisions.labels(record.app, record.kind).inc()
        for model, error in record.prediction_errors.items():
            self.prediction_error.labels(record.app, model).set(error)
        if record.kind == "outcome":
            # An outcome's state is the window it closed in, not a decision's: the gauges keep the last decision's.
            if record.measured_reward is not None:
                self.measured.labels(record.app).set(record.measured_reward)
            return
        # A command may have held some operators too; a hold that no rule made is the policy's own.
        for reason in record.held_by or ([POLICY_HOLD] if record.kind == "hold" else []):
            self.holds.labels(record.app, reason).inc()
        predicted = record.predicted_reward
        self.predicted.labels(record.app).set(float("nan") if predicted is None else predicted)
        if record.window_age_s is not None:
            self.window_age.labels(record.app).set(record.window_age_s)
        for gone in self.operators[record.app] - record.state.keys():
            for metric in self._per_operator:
                metric.remove(record.app, gone)
        self.operators[record.app] = set(record.state)
        for name, op in record.state.items():
            labels = (record.app, name)
            self.parallelism.labels(*labels).set(op.parallelism)
            self.recommended.labels(*labels).set(record.chosen.get(name, op.parallelism))
            if op.ds2_parallelism is not None:
                self.ds2.labels(*labels).set(op.ds2_parallelism)
            self.true_rate.labels(*labels).set(op.true_rate_per_instance)
            self.input_rate.labels(*labels).set(op.input_rate)
            self.busy.labels(*labels).set(op.busy_ratio)
            self.lag.labels(*labels).set(op.lag)

    def agent_lag(self, lags: dict[int, int]) -> None:
        """Each assigned metrics partition's lag; the partitions no longer assigned lose their series."""
        for gone in self.partitions - lags.keys():
            self.metrics_lag.remove(str(gone))
        self.partitions = set(lags)
        for partition, lag in lags.items():
            self.metrics_lag.labels(str(partition)).set(lag)

    def command_published(self, command: ScalingCommand) -> None:
        self.commands.labels(command.app).inc()

    def command_failed(self, command: ScalingCommand) -> None:
        self.unpublished.labels(command.app).inc()

    def dead_lettered(self, letter: DeadLetter) -> None:
        self.dead_letters.labels(letter.consumer).inc()

    def dead_letter_failed(self, letter: DeadLetter) -> None:
        self.dead_letter_failures.labels(letter.consumer).inc()

    @property
    def _per_operator(self) -> tuple[Gauge, ...]:
        return (self.parallelism, self.recommended, self.ds2, self.true_rate, self.input_rate, self.busy, self.lag)

    def _start_app(self, app: str) -> None:
        """Every series of the app's counters from zero, so that a first increase shows as one."""
        self.operators[app] = set()
        self.commands.labels(app)
        for kind in get_args(DecisionKind):
            self.decisions.labels(app, kind)
        for reason in HOLD_REASONS:
            self.holds.labels(app, reason)
