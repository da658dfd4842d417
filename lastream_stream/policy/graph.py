"""The application graph the policy reasons about, built from a window of ``MetricsReport``s.

Quantities follow DS2 (Kalavri et al., OSDI'18):

* observed rate: records per wall-clock second, summed over an operator's instances;
* true rate: records per second of *useful* time (busy time, excluding waiting for input),
  i.e. what the operator could do if it were never idle. We keep it per instance: the
  records of its working instances over their useful time, so each instance weighs by the
  records it did, and one that did almost nothing (less than ``ALMOST_NO_WORK`` of the
  operator's mean: it only dead-lettered, or its busy time is wrong) is left out.

Assumptions: instances of one operator are interchangeable, so the per-instance true rate
is the same for all of them; the topology is a DAG declared through ``upstreams``.

Two things the reports can get wrong are read around here, and ``diagnose.py`` says so:

* an operator's parallelism is what the supervisor last acknowledged running, or else what
  its reports say (their median: one report cannot steer it); the number of instances that
  covered the window when more did (a reporter left at parallelism 1 must not hide them);
* a declared upstream that never reports is taken as an external source emitting what its
  downstream operators take in plus how fast their lag grows: what arrives in their input
  topic. Otherwise the first operator would look like the source, which DS2 never rescales.

Operators in a cycle of declared upstreams, and those downstream of one, are left out of
the graph (``isolated``): the rest is decided on.
"""

from __future__ import annotations

import heapq
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lastream_stream.wire.contracts import MetricsReport

# An instance that reported for this share of a window ran through it: report intervals
# that straddle the window's edges take the rest.
COVERED_SHARE = 0.8
# An instance with fewer records than this share of its operator's mean did almost no work:
# its busy time says nothing of the operator's true rate.
ALMOST_NO_WORK = 0.05


def covers(reported_s: float, window_s: float) -> bool:
    """Whether an instance that reported for ``reported_s`` seconds ran through the window."""
    return reported_s >= COVERED_SHARE * window_s


@dataclass
class OperatorStats:
    name: str
    upstreams: list[str]
    parallelism: int
    partitions: int | None  # parallelism cap; None when the operator has no input topic
    observed_input_rate: float  # records/s in, all instances
    observed_output_rate: float  # records/s out, all instances
    true_input_rate: float  # per instance: records_in / useful_time; 0 when unknown
    true_output_rate: float  # per instance: records_out / useful_time; 0 when unknown
    busy_ratio: float  # useful time / wall time, mean over instances, in [0, 1]
    lag: int  # records waiting in the input, summed over instances' latest reports
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    instances_reporting: int
    # What the instances' reports said; None when no report said it (an upstream that never reports).
    reported_parallelism: int | None = None
    lag_growth: float | None = None  # records/s the lag grew over the window; None when no lag is reported

    @property
    def is_source(self) -> bool:
        return not self.upstreams

    @property
    def selectivity(self) -> float:
        """records out per record in; 1.0 when nothing came in yet."""
        if self.observed_input_rate > 0:
            return self.observed_output_rate / self.observed_input_rate
        if self.true_input_rate > 0:
            return self.true_output_rate / self.true_input_rate
        return 1.0


@dataclass
class AppGraph:
    app: str
    operators: dict[str, OperatorStats]  # in topological order
    window_s: float = 0.0
    downstreams: dict[str, list[str]] = field(default_factory=dict)
    # Declared upstreams that never reported, taken as external sources: the operators declaring each.
    unreported: dict[str, list[str]] = field(default_factory=dict)
    # Reporting operators left out: in a cycle of declared upstreams, or downstream of one.
    isolated: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(self.operators)

    @property
    def parallelism(self) -> dict[str, int]:
        return {name: op.parallelism for name, op in self.operators.items()}

    @property
    def edges(self) -> list[tuple[str, str]]:
        return [(up, name) for name, op in self.operators.items() for up in op.upstreams]

    @property
    def total_lag(self) -> int:
        return sum(op.lag for op in self.operators.values())

    @property
    def latency_ms(self) -> float:
        """End-to-end latency: the worst p50 reported by a sink (an operator with no downstream)."""
        sinks = [op for name, op in self.operators.items() if not self.downstreams.get(name)]
        values = [op.latency_p50_ms for op in sinks if op.latency_p50_ms is not None]
        return max(values) if values else 0.0


def topological_order(upstreams: dict[str, list[str]]) -> list[str]:
    """Kahn's algorithm; upstreams not in ``upstreams`` are ignored. Raises on a cycle."""
    order, cyclic = partial_order(upstreams)
    if cyclic:
        raise ValueError(f"operator graph has a cycle among {cyclic}")
    return order


def partial_order(upstreams: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Kahn's algorithm, the smallest name first among the ready; upstreams not in
    ``upstreams`` are ignored. Also returns, sorted, the operators it cannot order: those
    in a cycle or downstream of one."""
    downstreams: dict[str, list[str]] = defaultdict(list)
    waiting: dict[str, int] = {}
    for name, ups in upstreams.items():
        known = {u for u in ups if u in upstreams}
        waiting[name] = len(known)
        for up in known:
            downstreams[up].append(name)
    ready = [name for name, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for other in downstreams[name]:
            waiting[other] -= 1
            if waiting[other] == 0:
                heapq.heappush(ready, other)
    return order, sorted(set(upstreams) - set(order))


def build_graph(reports: Iterable[MetricsReport], running: Mapping[str, int] | None = None) -> AppGraph:
    """Aggregate a window of reports (one app) into per-operator statistics; ``running``:
    the parallelism the supervisor acknowledged, when known.

    Instances with zero useful time contribute to observed rates but not to true rates,
    so an idle or just-started instance does not divide by zero or drag the mean to 0.
    """
    by_op: dict[str, list[MetricsReport]] = defaultdict(list)
    apps = set()
    for report in reports:
        by_op[report.operator].append(report)
        apps.add(report.app)
    if len(apps) > 1:
        raise ValueError(f"reports from several apps in one window: {sorted(apps)}")
    if not by_op:
        raise ValueError("no reports in the window")

    upstreams = {op: sorted({u for r in rs for u in r.upstreams}) for op, rs in by_op.items()}
    order, isolated = partial_order(upstreams | {up: [] for ups in upstreams.values() for up in ups if up not in by_op})
    for name in isolated:
        del by_op[name], upstreams[name]
    if not by_op:
        raise ValueError(f"every operator is in or downstream of a cycle: {isolated}")
    unreported: dict[str, list[str]] = defaultdict(list)
    for name, ups in upstreams.items():
        for up in ups:
            if up not in by_op:
                unreported[up].append(name)
    order = [name for name in order if name in by_op or name in unreported]
    window_s = max(r.interval_end for rs in by_op.values() for r in rs) - min(
        r.interval_start for rs in by_op.values() for r in rs
    )

    running = running or {}
    operators: dict[str, OperatorStats] = {}
    for name in order:
        if name in by_op:
            operators[name] = _aggregate(name, upstreams[name], by_op[name], window_s, running.get(name))
    for name, fed in unreported.items():
        operators[name] = _external_source(name, [operators[d] for d in fed], operators, set(unreported))
    operators = {name: operators[name] for name in order}
    downstreams: dict[str, list[str]] = {name: [] for name in order}
    for name, op in operators.items():
        for up in op.upstreams:
            downstreams[up].append(name)
    return AppGraph(
        app=apps.pop(),
        operators=operators,
        window_s=window_s,
        downstreams=downstreams,
        unreported=dict(unreported),
        isolated=isolated,
    )


def expected_parallelism(claims: Iterable[int], running: int | None) -> int:
    """The instances an operator runs: what the supervisor acknowledged, or else the median
    of the parallelism its reports say (a single report cannot steer it)."""
    if running is not None:
        return running
    return statistics.median_low(claims)


def _external_source(
    name: str, fed: list[OperatorStats], operators: dict[str, OperatorStats], unreported: set[str]
) -> OperatorStats:
    """An upstream that never reports, as a source: what reaches each operator it feeds is
    that operator's input rate plus its lag growth, less what its reporting upstreams
    emit; the source emits the most any of them needs."""
    shares = []
    for op in fed:
        arriving = op.observed_input_rate + max(0.0, op.lag_growth or 0.0)
        others = sum(operators[u].observed_output_rate for u in op.upstreams if u not in unreported)
        silent = sum(1 for u in op.upstreams if u in unreported)
        shares.append(max(0.0, arriving - others) / silent)
    rate = max(shares)
    return OperatorStats(
        name=name,
        upstreams=[],
        parallelism=1,
        partitions=None,
        observed_input_rate=rate,
        observed_output_rate=rate,
        true_input_rate=0.0,
        true_output_rate=0.0,
        busy_ratio=0.0,
        lag=0,
        latency_p50_ms=None,
        latency_p99_ms=None,
        instances_reporting=0,
    )


def _aggregate(
    name: str, upstreams: list[str], reports: list[MetricsReport], window_s: float, running: int | None
) -> OperatorStats:
    latest = max(reports, key=lambda r: r.interval_end)
    by_instance: dict[str, list[MetricsReport]] = defaultdict(list)
    for r in reports:
        by_instance[r.instance_id].append(r)

    # Observed rates: per instance, records over the time it covered; then summed.
    observed_in = observed_out = 0.0
    working: list[tuple[int, int, float]] = []  # records in, records out, useful seconds
    busy: list[float] = []
    for rs in by_instance.values():
        wall = sum(r.interval_s for r in rs)
        records_in = sum(r.records_in for r in rs)
        records_out = sum(r.records_out for r in rs)
        useful = sum(r.useful_time_s for r in rs)
        observed_in += records_in / wall
        observed_out += records_out / wall
        busy.append(min(1.0, useful / wall))
        if useful > 0 and (records_in > 0 or records_out > 0):
            working.append((records_in, records_out, useful))
    true_in, true_out = _true_rates(working)

    # Each instance reports the lag of the partitions assigned to it: the latest of each sums up.
    lags = [lag for rs in by_instance.values() if (lag := max(rs, key=lambda r: r.interval_end).lag) is not None]
    growth = [g for rs in by_instance.values() if (g := _lag_growth(rs)) is not None]
    # Instances that covered most of the window ran side by side; one restarted within it counts once at most.
    covering = sum(1 for rs in by_instance.values() if covers(sum(r.interval_s for r in rs), window_s))
    p50 = [r.latency_p50_ms for r in reports if r.latency_p50_ms is not None]
    p99 = [r.latency_p99_ms for r in reports if r.latency_p99_ms is not None]
    return OperatorStats(
        name=name,
        upstreams=upstreams,
        parallelism=max(expected_parallelism((r.parallelism for r in reports), running), covering),
        partitions=latest.input_partitions,
        observed_input_rate=observed_in,
        observed_output_rate=observed_out,
        true_input_rate=true_in,
        true_output_rate=true_out,
        busy_ratio=sum(busy) / len(busy),
        lag=sum(lags),
        latency_p50_ms=sorted(p50)[len(p50) // 2] if p50 else None,
        latency_p99_ms=max(p99) if p99 else None,
        instances_reporting=len(by_instance),
        reported_parallelism=expected_parallelism((r.parallelism for r in reports), None),
        lag_growth=sum(growth) if growth else None,
    )


def _true_rates(working: list[tuple[int, int, float]]) -> tuple[float, float]:
    """Records in and out per useful second of the instances that did more than almost no work; 0 when none did."""
    if not working:
        return 0.0, 0.0
    mean = sum(records_in + records_out for records_in, records_out, _ in working) / len(working)
    kept = [w for w in working if w[0] + w[1] >= ALMOST_NO_WORK * mean]  # the busiest is always kept
    useful = sum(w[2] for w in kept)
    return sum(w[0] for w in kept) / useful, sum(w[1] for w in kept) / useful


def _lag_growth(reports: list[MetricsReport]) -> float | None:
    """Records/s one instance's lag grew from its first report with a lag to its last."""
    with_lag = sorted((r for r in reports if r.lag is not None), key=lambda r: r.interval_end)
    if len(with_lag) < 2 or with_lag[-1].interval_end <= with_lag[0].interval_end:
        return None
    first, last = with_lag[0], with_lag[-1]
    return (last.lag - first.lag) / (last.interval_end - first.interval_end)
