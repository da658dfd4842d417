"""Discrete-time fluid simulation of an operator DAG that emits the app's ``MetricsReport``s.

Every tick (``Scenario.tick_s``), in topological order, each operator takes the records that
arrived (from the source-rate schedule for a source, from its upstreams' output otherwise)
into its FIFO input queue, processes ``min(queue, capacity * tick)`` of them unless it is
down after a reconfiguration, and passes ``processed * selectivity`` on to every downstream.
The queue is the operator's consumer lag on its input topic.

At the end of each reporting interval every instance reports what it did, exactly like the
real app: records are split evenly over the instances running at the time, busy time is
records / per-instance true rate, lag is the instance's share of the queue.

Latency is an estimate, per operator, of the time a record spends there, chained along the
slowest path from a source: the backlog ahead of it drained at full capacity
(``queue / capacity``, Little's law with throughput = capacity), plus the remaining downtime,
plus the M/M/1 sojourn time of one instance, which is exponential with rate ``μ - λ``:
p50 = ln 2 / (μ - λ), p99 = ln 100 / (μ - λ), utilisation capped at 0.95 so a saturated
instance contributes a large but finite term (its backlog term takes over from there).
Summing per-operator quantiles is an approximation of the end-to-end quantile, on the safe side.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field

from lastream_stream.policy.reward import Measured, path_backlog_s, path_service_ms
from lastream_stream.sim.model import Scenario, SimOperator
from lastream_stream.wire.contracts import MAX_LAG, MAX_LATENCY_MS, MetricsReport

log = logging.getLogger(__name__)

EPOCH_START = 1_700_000_000.0  # wall-clock time of simulated t = 0, for ``interval_end``
UTILISATION_CAP = 0.95  # keeps the M/M/1 term finite for saturated instances
LN2 = math.log(2.0)
LN100 = math.log(100.0)


@dataclass
class _Instance:
    """What one instance did so far in the current reporting interval."""

    records_in: float = 0.0
    records_out: float = 0.0
    busy_s: float = 0.0


@dataclass
class _OperatorState:
    spec: SimOperator
    parallelism: int
    queue: float = 0.0  # records waiting in the input topic, all instances
    down_until: float = 0.0
    instances: list[_Instance] = field(default_factory=list)
    # Work since the last parallelism change or interval boundary, split over instances on flush.
    segment_in: float = 0.0
    segment_out: float = 0.0
    segment_busy_s: float = 0.0  # instance-seconds
    interval_in: float = 0.0  # records taken in during the current interval, all instances
    latency_p50_sum_ms: float = 0.0
    latency_p99_max_ms: float = 0.0
    latency_p50_ms: float = 0.0  # at the last tick, source to the output of this operator
    latency_p99_ms: float = 0.0
    # Per instance, the fraction of a record (in, out) not reported yet. Carried into the next
    # interval so that reported counts add up to what was processed: at a few records/s an
    # instance's share of an interval is below one record and would otherwise round to 0 forever.
    unreported: list[tuple[float, float]] = field(default_factory=list)

    def flush_segment(self) -> None:
        p = self.parallelism
        while len(self.instances) < p:
            self.instances.append(_Instance())
        for instance in self.instances[:p]:
            instance.records_in += self.segment_in / p
            instance.records_out += self.segment_out / p
            instance.busy_s += self.segment_busy_s / p
        self.segment_in = self.segment_out = self.segment_busy_s = 0.0

    def report_counts(self, k: int) -> tuple[int, int]:
        """Whole records in and out instance ``k`` reports for the interval, remainders carried."""
        while len(self.unreported) <= k:
            self.unreported.append((0.0, 0.0))
        carry_in, carry_out = self.unreported[k]
        exact_in = self.instances[k].records_in + carry_in
        exact_out = self.instances[k].records_out + carry_out
        records_in, records_out = round(exact_in), round(exact_out)
        self.unreported[k] = (exact_in - records_in, exact_out - records_out)
        return records_in, records_out


class Simulator:
    """Runs one ``Scenario``. Time starts at 0; ``apply`` changes parallelism, ``run`` advances."""

    def __init__(self, scenario: Scenario, seed: int = 0) -> None:
        self.scenario = scenario
        self._rng = random.Random(seed)
        self._order = scenario.order
        self._ops = {
            name: _OperatorState(scenario.by_name[name], scenario.by_name[name].parallelism) for name in self._order
        }
        self._downstreams: dict[str, list[str]] = {name: [] for name in self._order}
        for name in self._order:
            for up in scenario.by_name[name].upstreams:
                self._downstreams[up].append(name)
        # Everything scales linearly with the source rate: required input per source record/s.
        self._per_unit = scenario.required_rates(1.0)
        self._ticks = 0
        self._ticks_per_interval = round(scenario.interval_s / scenario.tick_s)
        self._noise = self._draw_noise()
        self._last_interval_in: dict[str, float] | None = None
        self._interval_arrived = 0.0  # source records that arrived in the current interval
        self._last_interval_arrived = 0.0
        self.reconfigurations = 0

    # -- state -------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Simulated seconds since the start."""
        return self._ticks * self.scenario.tick_s

    @property
    def parallelism(self) -> dict[str, int]:
        return {name: st.parallelism for name, st in self._ops.items()}

    def source_rate(self) -> float:
        """Nominal total source rate now, records/s (the schedule, without noise)."""
        return self.scenario.schedule.rate_at(self.now)

    def arrived_rate(self) -> float:
        """Total source records per second that actually arrived (noise included) in the last
        completed interval: what ``processed_rate`` should match when the app keeps up."""
        return self._last_interval_arrived / self.scenario.interval_s

    def required_rates(self) -> dict[str, float]:
        """Required input rate per operator at the current nominal source rate, records/s."""
        rate = self.source_rate()
        return {name: g * rate for name, g in self._per_unit.items()}

    def total_lag(self) -> float:
        """Records waiting in all operators' input queues."""
        return sum(st.queue for st in self._ops.values())

    def queues(self) -> dict[str, float]:
        """Records waiting in each operator's input queue."""
        return {name: st.queue for name, st in self._ops.items()}

    def measured(self) -> Measured:
        """The reward's inputs, from the ground truth: true backlog seconds and requirement."""
        required = self.required_rates()
        upstreams = {name: self._ops[name].spec.upstreams for name in self._order}
        slowdown = self._slowdown(self.parallelism)
        instance_rate = {
            name: self._capacity(name, st.parallelism, slowdown) / st.parallelism for name, st in self._ops.items()
        }
        return Measured(
            latency_ms=self.latency_ms(),
            backlog_s=path_backlog_s(self.queues(), required, upstreams),
            service_ms=path_service_ms(instance_rate, upstreams),
            lag=self.total_lag(),
            parallelism=self.parallelism,
            required=self.oracle(),
        )

    def source_equivalent_lag(self) -> float:
        """The backlog in source records: each queue divided by its operator's required input
        per source record. Unlike ``total_lag`` it does not grow when a backlog merely moves
        downstream through an operator with selectivity above 1 (an operator with several
        downstreams counts once per downstream queue its output waits in)."""
        return sum(st.queue / self._per_unit[name] for name, st in self._ops.items() if self._per_unit[name] > 0)

    def latency_ms(self) -> float:
        """Estimated end-to-end p50 latency now: the worst over sinks, milliseconds."""
        return max(st.latency_p50_ms for name, st in self._ops.items() if not self._downstreams[name])

    def processed_rate(self) -> float:
        """Source records per second the app fully processed in the last completed interval.

        Each operator's input rate is divided by its required input per unit of source rate;
        the smallest of these is the bottleneck's throughput in source records. It equals the
        source rate when everything keeps up, exceeds it while a backlog drains, and is 0
        before the first interval completes.
        """
        if self._last_interval_in is None:
            return 0.0
        interval_s = self.scenario.interval_s
        return min(self._last_interval_in[name] / interval_s / g for name, g in self._per_unit.items() if g > 0)

    # -- the oracle --------------------------------------------------------------------

    def oracle(self) -> dict[str, int]:
        """Minimum parallelism per operator that sustains the current nominal source rate.

        Sources keep their parallelism. Where the partition cap binds, the cap is returned and
        ``sustainable()`` is False: no configuration keeps up. On a shared host
        (``Scenario.host_cores``) every added instance slows all the others, so the operators
        that fall short at the slowdown the scheme itself causes are raised until nothing
        changes: each round only adds instances, so this ends at the smallest scheme that
        sustains, or with a cap reached.
        """
        required = self.required_rates()
        scheme = self._needed(required, slowdown=1.0)
        while (raised := self._needed(required, self._slowdown(scheme))) != scheme:
            scheme = raised
        return scheme

    def _needed(self, required: dict[str, float], slowdown: float) -> dict[str, int]:
        """Smallest parallelism per operator for ``required`` when non-source instances run
        ``slowdown`` times their own true rate; capped by partitions, sources as they are."""
        scheme: dict[str, int] = {}
        for name, st in self._ops.items():
            if st.spec.is_source:
                scheme[name] = st.parallelism
            else:
                needed = st.spec.min_parallelism_for(required[name] / slowdown)
                scheme[name] = needed if needed is not None else st.spec.max_parallelism
        return scheme

    def sustainable(self) -> bool:
        """Whether any configuration keeps up with the current nominal source rate."""
        return self.sustains(self.oracle())

    def sustains(self, scheme: dict[str, int]) -> bool:
        """Whether ``scheme`` (clamped as ``apply`` would) keeps up with the current source rate."""
        target = self._clamp(scheme)
        required = self.required_rates()
        slowdown = self._slowdown(target)
        # Relative slack: an exact fit must not fail on the last bit of a float.
        return all(self._capacity(n, target[n], slowdown) >= required[n] * (1 - 1e-9) for n in self._order)

    def _slowdown(self, scheme: dict[str, int]) -> float:
        """Host contention under ``scheme``: the factor on every non-source instance's true rate."""
        return self.scenario.contention(sum(p for name, p in scheme.items() if not self._ops[name].spec.is_source))

    def _capacity(self, name: str, p: int, slowdown: float) -> float:
        op = self._ops[name].spec
        return op.capacity(p) if op.is_source else op.capacity(p) * slowdown

    # -- acting ------------------------------------------------------------------------

    def apply(self, scheme: dict[str, int]) -> None:
        """Change parallelism. Like the real supervisor it clamps to [1, partitions] and keeps
        sources as they are; every operator whose parallelism changes is down ``downtime_s``."""
        target = self._clamp(scheme)
        changed = [name for name, p in target.items() if p != self._ops[name].parallelism]
        for name in changed:
            st = self._ops[name]
            st.flush_segment()  # work so far was done by the old instances
            log.debug("t=%.1f %s: parallelism %d -> %d", self.now, name, st.parallelism, target[name])
            st.parallelism = target[name]
            st.down_until = self.now + self.scenario.downtime_s
        if changed:
            self.reconfigurations += 1

    def _clamp(self, scheme: dict[str, int]) -> dict[str, int]:
        if unknown := set(scheme) - set(self._ops):
            raise KeyError(f"unknown operators in scheme: {sorted(unknown)}")
        target = {}
        for name, st in self._ops.items():
            if st.spec.is_source or name not in scheme:
                target[name] = st.parallelism
            else:
                target[name] = min(max(1, int(scheme[name])), st.spec.max_parallelism)
        return target

    # -- time --------------------------------------------------------------------------

    def run(self, seconds: float) -> list[MetricsReport]:
        """Advance ``seconds`` (a whole number of ticks); return the reports of every
        reporting interval that completed meanwhile."""
        ticks = round(seconds / self.scenario.tick_s)
        if ticks < 0 or abs(ticks * self.scenario.tick_s - seconds) > 1e-6:
            raise ValueError(f"cannot run {seconds} s in ticks of {self.scenario.tick_s} s")
        reports: list[MetricsReport] = []
        for _ in range(ticks):
            self._tick()
            if self._ticks % self._ticks_per_interval == 0:
                reports.extend(self._close_interval())
        return reports

    def _draw_noise(self) -> float:
        if self.scenario.source_noise <= 0:
            return 1.0
        return max(0.0, self._rng.gauss(1.0, self.scenario.source_noise))

    def _tick(self) -> None:
        dt = self.scenario.tick_s
        t = self.now
        source_rate = self.scenario.schedule.rate_at(t) * self._noise
        slowdown = self._slowdown(self.parallelism)
        emitted: dict[str, float] = {}
        for name in self._order:
            st = self._ops[name]
            op = st.spec
            if op.is_source:
                arrivals = source_rate * self._per_unit[name] * dt  # the source's share
                self._interval_arrived += arrivals
                upstream_p50 = upstream_p99 = 0.0
            else:
                arrivals = sum(emitted[u] for u in op.upstreams)
                upstream_p50 = max(self._ops[u].latency_p50_ms for u in op.upstreams)
                upstream_p99 = max(self._ops[u].latency_p99_ms for u in op.upstreams)
            p = st.parallelism
            down_s = max(0.0, st.down_until - t)
            speed = 1.0 if op.is_source else slowdown
            capacity = op.capacity(p) * speed
            # Busy time at the slowed rate: on a contended host, reports show the true rate fall.
            instance_rate = op.instance_true_rate(p) * speed
            processed = min(st.queue + arrivals, capacity * dt) if down_s <= 0 else 0.0
            # In this order it is exactly 0 when everything was processed (processed is then
            # queue + arrivals); queue + (arrivals - processed) could round to about -1e-13.
            st.queue = st.queue + arrivals - processed
            emitted[name] = processed * op.selectivity
            st.segment_in += processed
            st.segment_out += processed * op.selectivity
            st.segment_busy_s += processed / instance_rate
            st.interval_in += processed

            utilisation = min(arrivals / dt / p / instance_rate, UTILISATION_CAP)
            wait_s = st.queue / capacity + down_s
            sojourn_scale_s = 1.0 / (instance_rate * (1.0 - utilisation))
            st.latency_p50_ms = min(upstream_p50 + 1000.0 * (wait_s + LN2 * sojourn_scale_s), MAX_LATENCY_MS)
            st.latency_p99_ms = min(upstream_p99 + 1000.0 * (wait_s + LN100 * sojourn_scale_s), MAX_LATENCY_MS)
            st.latency_p50_sum_ms += st.latency_p50_ms
            st.latency_p99_max_ms = max(st.latency_p99_max_ms, st.latency_p99_ms)
        self._ticks += 1

    def _close_interval(self) -> list[MetricsReport]:
        interval_s = self.scenario.interval_s
        interval_end = EPOCH_START + self.now
        reports: list[MetricsReport] = []
        for name, st in self._ops.items():
            st.flush_segment()
            p = st.parallelism
            lag_total = min(round(st.queue), MAX_LAG)
            del st.unreported[p:]  # instances that stopped take their fractions with them
            for k, instance in enumerate(st.instances[:p]):
                records_in, records_out = st.report_counts(k)
                reports.append(
                    MetricsReport(
                        app=self.scenario.name,
                        operator=name,
                        instance_id=f"{name}-{k}",
                        interval_end=interval_end,
                        interval_s=interval_s,
                        records_in=records_in,
                        records_out=records_out,
                        # Never above the interval: an instance is busy at most dt per tick.
                        useful_time_s=min(instance.busy_s, interval_s),
                        lag=lag_total // p + (1 if k < lag_total % p else 0),
                        latency_p50_ms=st.latency_p50_sum_ms / self._ticks_per_interval,
                        latency_p99_ms=st.latency_p99_max_ms,
                        cpu_percent=100.0 * min(instance.busy_s, interval_s) / interval_s,
                        parallelism=p,
                        upstreams=list(st.spec.upstreams),
                        input_partitions=st.spec.partitions,
                    )
                )
            st.instances = []
            st.latency_p50_sum_ms = st.latency_p99_max_ms = 0.0
        self._last_interval_in = {name: st.interval_in for name, st in self._ops.items()}
        for st in self._ops.values():
            st.interval_in = 0.0
        self._last_interval_arrived, self._interval_arrived = self._interval_arrived, 0.0
        self._noise = self._draw_noise()
        return reports
