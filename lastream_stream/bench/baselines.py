"""The policies La-Stream is compared with, each following its published rule.

All implement ``policy.base.Policy``. They see only what the service sees, an ``AppGraph``
built from one decision window of reports, and keep whatever state their original keeps
between decisions (warm-up counters, scaling history). Time-valued knobs whose defaults are
meant for jobs that restart in minutes are scaled to the simulator, where a restart takes
seconds; each such choice is stated next to the knob.

Kafka-native adaptation, shared by Flink and KEDA: in LaStream every operator reads its own
input topic, so every operator has a consumer lag and a partition count, where Flink sees
lag and partitions only at its sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lastream_stream.policy.base import Decision, DecisionContext
from lastream_stream.policy.ds2 import DS2Settings, optimal_parallelism, parallelism_cap
from lastream_stream.policy.graph import AppGraph, OperatorStats
from lastream_stream.sim import Simulator


class StaticPolicy:
    """Never rescales: the configuration the app was started with."""

    name = "static"

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        return Decision.single(self.name, graph, graph.parallelism, note="initial configuration")


@dataclass
class OraclePolicy:
    """Knows the simulator's true rates: the minimum configuration that sustains the current rate."""

    simulator: Simulator
    name: str = "oracle"

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        return Decision.single(self.name, graph, self.simulator.oracle(), note="minimum sustaining configuration")


# -- DS2 ------------------------------------------------------------------------------------


@dataclass
class DS2Policy:
    """DS2's scaling manager (strymon-system/ds2, ``controller/src/bin/manager.rs``) around the
    shared rule in ``policy.ds2``.

    * ``warm_up_intervals``: policy intervals ignored after a reconfiguration, and after start
      (``warm_up_time = 2`` in DS2's shipped ``ds2.toml``).
    * A new configuration is issued only if some operator grows, or shrinks by more than one
      instance (``consider_change``): DS2 does not restart a job to save a single instance.
    * ``scaling_factor``: DS2's deliberate over-provisioning, 0 by default.
    """

    scaling_factor: float = 0.0
    warm_up_intervals: int = 2
    name: str = "ds2"
    _intervals_since_reconfiguration: int = field(default=0, init=False)
    _last_parallelism: dict[str, int] | None = field(default=None, init=False)

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        current = graph.parallelism
        if self._last_parallelism is not None and current != self._last_parallelism:
            self._intervals_since_reconfiguration = 0  # this window saw the reconfiguration
        self._last_parallelism = current
        if self._intervals_since_reconfiguration < self.warm_up_intervals:
            self._intervals_since_reconfiguration += 1
            return Decision.single(self.name, graph, current, note="warm-up")
        self._intervals_since_reconfiguration += 1

        cap = (context or DecisionContext()).max_parallelism
        optimum = optimal_parallelism(graph, DS2Settings(scaling_factor=self.scaling_factor, max_parallelism=cap))
        if not significant_change(current, optimum):
            return Decision.single(self.name, graph, current, note=f"optimum {optimum} within one instance below")
        return Decision.single(self.name, graph, optimum, note="ds2 optimum")


def significant_change(before: dict[str, int], after: dict[str, int]) -> bool:
    """DS2's ``consider_change``: some operator grows, or one shrinks by two or more."""
    return any(after[name] > p or after[name] < p - 1 for name, p in before.items())


# -- Flink Kubernetes Operator autoscaler ------------------------------------------------------


@dataclass(frozen=True)
class FlinkSettings:
    """``job.autoscaler.*`` options (flink-kubernetes-operator, ``AutoScalerOptions``)."""

    target_utilisation: float = 0.7  # target.utilization, default
    utilisation_boundary: float = 0.3  # target.utilization.boundary, default
    max_scale_down_factor: float = 0.6  # scale-down.max-factor, default: new >= 0.4 * current
    max_scale_up_factor: float = 100_000.0  # scale-up.max-factor, default
    vertex_max_parallelism: int = 200  # vertex.max-parallelism, default
    # catch-up.duration: 5 min as in the operator's example configuration (default 30 min).
    catch_up_s: float = 300.0
    # restart.time: what restart-time tracking would measure; the default 5 min is a
    # Kubernetes job restart, the simulated one takes ``Scenario.downtime_s``.
    restart_s: float = 5.0
    # backlog-processing.lag-threshold, default: lag worth this many seconds of input
    # suspends utilisation-driven scale-down.
    backlog_threshold_s: float = 300.0
    # stabilization.interval: no decision this long after a rescale or start. Default 5 min
    # for minute-long restarts; 30 s here keeps it past the simulated restart, like DS2's
    # two warm-up intervals.
    stabilisation_s: float = 30.0


@dataclass(frozen=True)
class VertexTarget:
    """What the Flink autoscaler evaluates per vertex (``ScalingMetricEvaluator``)."""

    target_rate: float  # TARGET_DATA_RATE, records/s
    catch_up_rate: float  # CATCH_UP_DATA_RATE, records/s
    true_processing_rate: float  # TRUE_PROCESSING_RATE, all subtasks, records/s


@dataclass
class FlinkAutoscaler:
    """The Flink Kubernetes Operator's job autoscaler (``ScalingMetricEvaluator``,
    ``JobVertexScaler``, ``ScalingExecutor``) with its default options.

    Per vertex, in topological order::

        target capacity = catch-up rate + target rate * restart / catch-up + target rate / 0.7
        new parallelism = ceil(p * clamp(target capacity / true processing rate, 0.4, 1e5))

    then aligned to the partition count (``BALANCED``, the default mode). The job is rescaled
    only if some changed vertex's true processing rate lies outside
    [capacity at utilisation 1.0, capacity at utilisation 0.4]; while any input holds more than
    ``backlog_threshold_s`` of lag the lower bound is dropped (no scale-down on backlog).

    Not modelled: the delayed scale-down interval and ineffective-scaling detection (both
    default-off or longer than a benchmark run), memory tuning and resource quotas.
    Kafka-native adaptation: each operator's own input lag adds to its catch-up rate, and
    the edge output ratio is the upstream's observed out/in.
    """

    settings: FlinkSettings = field(default_factory=FlinkSettings)
    name: str = "flink"
    _since_rescale_s: float = field(default=0.0, init=False)
    _last_parallelism: dict[str, int] | None = field(default=None, init=False)
    _last_source_lag: dict[str, int] = field(default_factory=dict, init=False)

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        current = graph.parallelism
        if self._last_parallelism is not None and current != self._last_parallelism:
            self._since_rescale_s = 0.0
        self._last_parallelism = current
        self._since_rescale_s += graph.window_s
        # Evaluated even while stabilising, so that the source lag rate always spans one window.
        targets = self.evaluate(graph)
        if self._since_rescale_s < self.settings.stabilisation_s:
            return Decision.single(self.name, graph, current, note="stabilisation")

        cap = (context or DecisionContext()).max_parallelism
        backlog = self.processing_backlog(graph)
        proposed: dict[str, int] = {}
        outside_bounds: dict[str, bool] = {}
        for name, op in graph.operators.items():
            if op.is_source or math.isnan(targets[name].true_processing_rate):
                continue  # LaStream's sources are fixed; no true rate means no decision (Flink: NaN)
            new_p = self.vertex_parallelism(op, targets[name], parallelism_cap(op, cap))
            if new_p != op.parallelism:
                proposed[name] = new_p
                outside_bounds[name] = self.outside_utilisation_bounds(targets[name], backlog)
        if not proposed:
            return Decision.single(self.name, graph, current, note="all vertices at target parallelism")
        if not any(outside_bounds.values()):
            return Decision.single(self.name, graph, current, note="all vertices within utilisation bounds")
        return Decision.single(self.name, graph, {**current, **proposed}, note=f"rescale {sorted(proposed)}")

    def evaluate(self, graph: AppGraph) -> dict[str, VertexTarget]:
        """TARGET_DATA_RATE and CATCH_UP_DATA_RATE propagated from the sources along the edges."""
        s = self.settings
        targets: dict[str, VertexTarget] = {}
        for name, op in graph.operators.items():
            if op.is_source:
                # Ingestion = what was read plus how fast the unread backlog grew.
                previous = self._last_source_lag.get(name, op.lag)
                lag_rate = (op.lag - previous) / graph.window_s if graph.window_s > 0 else 0.0
                self._last_source_lag[name] = op.lag
                target_rate = max(0.0, op.observed_input_rate + lag_rate)
                catch_up = op.lag / s.catch_up_s
            else:
                ups = [graph.operators[u] for u in op.upstreams if u in targets]
                target_rate = sum(targets[u.name].target_rate * output_ratio(u) for u in ups)
                catch_up = sum(targets[u.name].catch_up_rate * output_ratio(u) for u in ups) + op.lag / s.catch_up_s
            # Flink divides the observed rate by the busy fraction: per-instance true rate times p.
            tpr = op.true_input_rate * op.parallelism if op.true_input_rate > 0 else math.nan
            targets[name] = VertexTarget(target_rate, catch_up, tpr)
        return targets

    def target_capacity(self, target: VertexTarget, utilisation: float, with_restart: bool) -> float:
        """``AutoScalerUtils.getTargetProcessingCapacity``."""
        s = self.settings
        if utilisation <= 0:
            return math.inf
        restart_catch_up = target.target_rate * s.restart_s / s.catch_up_s if with_restart else 0.0
        return math.floor(target.catch_up_rate + restart_catch_up + target.target_rate / min(utilisation, 1.0) + 0.5)

    def vertex_parallelism(self, op: OperatorStats, target: VertexTarget, max_parallelism: int) -> int:
        """``JobVertexScaler.computeScaleTargetParallelism`` and ``scale``."""
        s = self.settings
        capacity = self.target_capacity(target, s.target_utilisation, with_restart=True)
        factor = capacity / target.true_processing_rate
        factor = min(max(factor, 1 - s.max_scale_down_factor), 1 + s.max_scale_up_factor)
        p = op.parallelism
        new_p = math.ceil(factor * p)
        upper = min(max_parallelism, max(p, s.vertex_max_parallelism))
        new_p = min(max(1, new_p), upper)  # vertex.min-parallelism, default 1
        if op.partitions is None or new_p == p:
            return new_p
        return align_balanced(new_p, p, op.partitions, upper)

    def outside_utilisation_bounds(self, target: VertexTarget, backlog: bool) -> bool:
        """``ScalingMetricEvaluator.computeProcessingRateThresholds`` and the executor's check."""
        s = self.settings
        upper, lower = (
            (1.0, 0.0)
            if backlog
            else (s.target_utilisation + s.utilisation_boundary, s.target_utilisation - s.utilisation_boundary)
        )
        scale_up_threshold = self.target_capacity(target, upper, with_restart=False)
        scale_down_threshold = self.target_capacity(target, lower, with_restart=True)
        tpr = target.true_processing_rate
        return tpr < scale_up_threshold or tpr > scale_down_threshold

    def processing_backlog(self, graph: AppGraph) -> bool:
        """``isProcessingBacklog``, over every input topic rather than only the sources'."""
        return any(
            op.lag / op.observed_input_rate > self.settings.backlog_threshold_s
            for op in graph.operators.values()
            if op.observed_input_rate > 0
        )


def output_ratio(op: OperatorStats) -> float:
    """Records out per record in, observed; 0 when nothing came in (as Flink does)."""
    return op.observed_output_rate / op.observed_input_rate if op.observed_input_rate > 0 else 0.0


def align_balanced(target: int, current: int, partitions: int, upper: int) -> int:
    """Flink's default ``BALANCED`` alignment (``ParallelismAligner.firstAlignedInRegion``):
    scan up from the target for a divisor of the partition count, or a value that lowers
    the partitions per instance; scale-downs do not scan past the current parallelism.
    Keep the target when nothing qualifies."""
    region_end = min(upper, partitions) if target > current else min(current, upper, partitions)
    for p in range(target, region_end + 1):
        if partitions % p == 0 or partitions // p < partitions // target:
            return p
    return target


# -- KEDA (Kafka scaler + Kubernetes HPA) ---------------------------------------------------------


@dataclass(frozen=True)
class KedaSettings:
    lag_threshold: float = 10.0  # kafka scaler lagThreshold, default
    max_replicas: int = 100  # ScaledObject maxReplicaCount, default
    min_replicas: int = 1  # minReplicaCount is 0 by default; LaStream does not scale to zero
    sync_period_s: float = 15.0  # HPA --horizontal-pod-autoscaler-sync-period, default
    tolerance: float = 0.1  # HPA --horizontal-pod-autoscaler-tolerance, default
    scale_down_window_s: float = 300.0  # HPA behavior.scaleDown.stabilizationWindowSeconds, default
    scale_up_percent: float = 100.0  # HPA default scaleUp policy: +100 % ...
    scale_up_pods: int = 4  # ... or +4 pods per 15 s, whichever is more


@dataclass
class KedaScaler:
    """KEDA's Kafka scaler feeding the Kubernetes HPA, per consumer-group operator.

    The scaler exports the group's total lag as an AverageValue metric with target
    ``lagThreshold``, capped so replicas never exceed the partitions (``allowIdleConsumers``
    false). The HPA, every sync period, wants ``ceil(lag / lagThreshold)`` replicas unless the
    usage ratio is within the tolerance, scales up at most by the larger of 100 % and 4 pods,
    and scales down only to the highest recommendation of the last five minutes.
    KEDA's own ``pollingInterval`` only switches between 0 and 1 replica, which does not
    arise here.
    """

    settings: KedaSettings = field(default_factory=KedaSettings)
    name: str = "keda"
    _clock_s: float = field(default=0.0, init=False)
    _next_sync_s: float = field(default=0.0, init=False)
    _recommendations: dict[str, list[tuple[float, int]]] = field(default_factory=dict, init=False)

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        self._clock_s += graph.window_s
        current = graph.parallelism
        if self._clock_s < self._next_sync_s:
            return Decision.single(self.name, graph, current, note="between HPA syncs")
        self._next_sync_s = self._clock_s + self.settings.sync_period_s
        scheme = dict(current)
        for name, op in graph.operators.items():
            if not op.is_source and op.partitions is not None:
                scheme[name] = self.replicas(name, op, op.partitions)
        return Decision.single(self.name, graph, scheme, note="lag / lagThreshold")

    def desired_replicas(self, op: OperatorStats, partitions: int) -> int:
        """The HPA's raw recommendation for an AverageValue metric, with the scaler's cap."""
        s = self.settings
        lag = min(op.lag, partitions * s.lag_threshold)  # the scaler caps the metric it exports
        usage_ratio = lag / (s.lag_threshold * op.parallelism)
        if abs(usage_ratio - 1.0) <= s.tolerance:
            return op.parallelism
        return min(max(math.ceil(lag / s.lag_threshold), s.min_replicas), s.max_replicas)

    def replicas(self, name: str, op: OperatorStats, partitions: int) -> int:
        """Recommendation after the HPA's stabilisation window and scale-up rate limit."""
        s = self.settings
        history = self._recommendations.setdefault(name, [])
        history.append((self._clock_s, self.desired_replicas(op, partitions)))
        history[:] = [(t, r) for t, r in history if t > self._clock_s - s.scale_down_window_s]
        newest = history[-1][1]
        highest_recent = max(r for _, r in history)
        current = op.parallelism
        if newest > current:
            limit = max(math.ceil(current * (1 + s.scale_up_percent / 100)), current + s.scale_up_pods)
            return min(newest, limit)
        if highest_recent < current:
            return highest_recent
        return current
