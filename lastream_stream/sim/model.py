"""What a simulated application is: operators, their true capacities, and the source-rate schedule.

Naming, used throughout ``lastream_stream.sim``:

* *true rate* — records per second of busy time, i.e. what an instance could do if it never
  waited for input (DS2's definition). ``SimOperator.true_rate`` is the true rate of **one**
  instance when the operator runs with parallelism 1.
* *capacity* — total true rate of all instances: ``true_rate * p ** scaling_exponent``.
  With ``scaling_exponent < 1`` every added instance adds less than the one before
  (contention on a shared store, skew); the per-instance true rate then falls as ``p`` grows.
  A ``capacity_table`` of measured capacities at some parallelisms replaces the formula.
* *host contention* — with ``Scenario.host_cores`` set, all non-source instances share that
  many cores, so every instance's true rate is multiplied by ``Scenario.contention(n)``.
* *required input rate* — records per second an operator must take in to keep up with the
  sources at their current rate: its share of the source rate for a source, the sum of its
  upstreams' required input rates times their selectivities otherwise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from lastream_stream.policy.graph import topological_order
from lastream_stream.wire.contracts import MAX_PARALLELISM, NAME_PATTERN


class RateSchedule(Protocol):
    """Total source rate over time, records per second (before the per-source shares)."""

    rate: float  # the base rate that the schedule's shape is relative to

    def rate_at(self, t: float) -> float: ...

    def peak(self) -> float: ...


@dataclass(frozen=True)
class Constant:
    rate: float

    def rate_at(self, t: float) -> float:
        return self.rate

    def peak(self) -> float:
        return self.rate


@dataclass(frozen=True)
class Steps:
    """``rate`` until the first step; from ``at_s`` on, ``rate * factor`` (the latest step wins)."""

    rate: float
    steps: tuple[tuple[float, float], ...]  # (at_s, factor relative to ``rate``), ascending at_s

    def rate_at(self, t: float) -> float:
        factor = 1.0
        for at_s, step_factor in self.steps:
            if t >= at_s:
                factor = step_factor
        return self.rate * factor

    def peak(self) -> float:
        return self.rate * max([1.0, *(f for _, f in self.steps)])


@dataclass(frozen=True)
class Sine:
    """``rate * (1 + amplitude * sin(2π t / period_s))``; amplitude is a fraction in [0, 1)."""

    rate: float
    amplitude: float
    period_s: float

    def rate_at(self, t: float) -> float:
        return self.rate * (1.0 + self.amplitude * math.sin(2.0 * math.pi * t / self.period_s))

    def peak(self) -> float:
        return self.rate * (1.0 + self.amplitude)


@dataclass(frozen=True)
class SimOperator:
    name: str
    upstreams: tuple[str, ...] = ()
    true_rate: float = 1000.0  # per instance at parallelism 1, records/s of busy time
    selectivity: float = 1.0  # records out per record in
    partitions: int | None = None  # partitions of the input topic: the parallelism cap
    scaling_exponent: float = 1.0  # capacity = true_rate * p ** scaling_exponent
    parallelism: int = 1  # initial parallelism; sources keep theirs for the whole run
    share: float = 1.0  # sources only: weight of this source in the total source rate
    # Measured total capacity, ((p, records/s of busy time, all instances), ...) or {p: records/s};
    # replaces true_rate and scaling_exponent. Stored as pairs sorted by p.
    capacity_table: tuple[tuple[int, float], ...] | None = None

    def __post_init__(self) -> None:
        if self.capacity_table is None:
            return
        if self.scaling_exponent != 1.0:
            raise ValueError(f"{self.name}: give a capacity_table or a scaling_exponent, not both")
        object.__setattr__(self, "capacity_table", _capacity_points(self.name, self.capacity_table))

    @property
    def is_source(self) -> bool:
        return not self.upstreams

    @property
    def max_parallelism(self) -> int:
        return self.partitions if self.partitions is not None else MAX_PARALLELISM

    def capacity(self, p: int) -> float:
        """Total true rate of ``p`` instances, records/s."""
        if self.capacity_table is None:
            return self.true_rate * p**self.scaling_exponent
        return _interpolate(self.capacity_table, p)

    def instance_true_rate(self, p: int) -> float:
        """True rate of one of ``p`` instances, records/s of busy time."""
        return self.capacity(p) / p

    def min_parallelism_for(self, required_rate: float) -> int | None:
        """Smallest p with capacity(p) >= required_rate, or None if even the cap falls short."""
        if required_rate <= 0:
            return 1
        if self.capacity_table is not None:
            return self._search_parallelism(required_rate)
        # Closed form, then nudge for floating-point error at exact boundaries.
        p = max(1, math.ceil((required_rate / self.true_rate) ** (1.0 / self.scaling_exponent) - 1e-9))
        while p > 1 and self.capacity(p - 1) >= required_rate:
            p -= 1
        while self.capacity(p) < required_rate:
            p += 1
        return p if p <= self.max_parallelism else None

    def _search_parallelism(self, required_rate: float) -> int | None:
        # A table's capacity never decreases with p, so bisection finds the smallest p.
        low, high = 1, self.max_parallelism
        if self.capacity(high) < required_rate:
            return None
        while low < high:
            middle = (low + high) // 2
            if self.capacity(middle) >= required_rate:
                high = middle
            else:
                low = middle + 1
        return low


def _capacity_points(
    name: str, table: Mapping[int, float] | Iterable[tuple[int, float]]
) -> tuple[tuple[int, float], ...]:
    """The table as pairs sorted by parallelism, refused unless capacity never falls with p."""
    pairs = sorted(table.items() if isinstance(table, Mapping) else table)
    if not pairs:
        raise ValueError(f"{name}: capacity_table is empty")
    points = []
    for p, capacity in pairs:
        if p != int(p) or p < 1 or capacity <= 0:
            raise ValueError(
                f"{name}: capacity_table needs whole parallelisms >= 1 and capacities > 0, got {p}: {capacity}"
            )
        points.append((int(p), float(capacity)))
    for (p0, c0), (p1, c1) in itertools.pairwise(points):
        if p1 == p0:
            raise ValueError(f"{name}: capacity_table gives parallelism {p0} twice")
        if c1 < c0:
            # An added instance that removes capacity would make "more is never worse" false
            # for every policy and the oracle; a measurement like that is noise or a bottleneck
            # elsewhere, not this operator's capacity.
            raise ValueError(
                f"{name}: capacity_table decreases from {c0:g} records/s at parallelism {p0} to {c1:g} at {p1}; "
                "capacity must not fall as instances are added"
            )
    return tuple(points)


def _interpolate(points: tuple[tuple[int, float], ...], p: int) -> float:
    """Linear between measurements, proportional from (0, 0) below the first, and beyond the
    last continuing the last segment's gain per instance."""
    knots = ((0, 0.0), *points)
    k = next((i for i in range(1, len(knots)) if p <= knots[i][0]), len(knots) - 1)
    (p0, c0), (p1, c1) = knots[k - 1], knots[k]
    return c0 + (p - p0) * (c1 - c0) / (p1 - p0)


@dataclass(frozen=True)
class Scenario:
    """One simulated application and the conditions it runs under.

    ``downtime_s`` is how long an operator processes nothing after its parallelism changes
    (restart, consumer-group rebalance, state migration); its input keeps arriving meanwhile.
    ``source_noise`` is the relative standard deviation of the source rate, drawn anew each
    reporting interval, so that decisions see realistic jitter rather than a perfect signal.
    ``host_cores``, when set, is the cores every non-source instance shares (one host, as on a
    small machine): past that many instances each runs proportionally slower.
    """

    name: str
    operators: tuple[SimOperator, ...]
    schedule: RateSchedule
    interval_s: float = 2.0  # reporting interval of every instance
    tick_s: float = 0.25
    downtime_s: float = 5.0
    source_noise: float = 0.0
    horizon_s: float = 300.0  # how long the benchmark runs this scenario
    host_cores: float | None = None
    tags: frozenset[str] = field(default_factory=frozenset)
    description: str = ""

    def __post_init__(self) -> None:
        names = [op.name for op in self.operators]
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"scenario name {self.name!r} is not a valid app name")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate operator names in {self.name}")
        for op in self.operators:
            if not NAME_PATTERN.match(op.name):
                raise ValueError(f"operator name {op.name!r} is not valid on the wire")
            if unknown := set(op.upstreams) - set(names):
                raise ValueError(f"{op.name} reads from unknown operators {sorted(unknown)}")
            if op.true_rate <= 0 or op.selectivity < 0 or op.share <= 0:
                raise ValueError(f"{op.name}: true_rate and share must be > 0, selectivity >= 0")
            if not 0 < op.scaling_exponent <= 1:
                raise ValueError(f"{op.name}: scaling_exponent must be in (0, 1]")
            if not 1 <= op.parallelism <= op.max_parallelism:
                raise ValueError(f"{op.name}: initial parallelism {op.parallelism} outside [1, {op.max_parallelism}]")
        if self.host_cores is not None and self.host_cores <= 0:
            raise ValueError("host_cores must be > 0")
        topological_order({op.name: list(op.upstreams) for op in self.operators})  # raises on a cycle
        ticks = self.interval_s / self.tick_s
        if abs(ticks - round(ticks)) > 1e-9 or ticks < 1:
            raise ValueError("interval_s must be a whole number of ticks")
        # Sources are generators with fixed parallelism: if they could not keep up at the peak,
        # no scaling policy could help and the scenario would measure nothing.
        total_share = sum(op.share for op in self.operators if op.is_source)
        for op in self.operators:
            if op.is_source and op.capacity(op.parallelism) < self.schedule.peak() * op.share / total_share:
                raise ValueError(f"source {op.name} cannot keep up with the peak source rate")

    def contention(self, instances: int) -> float:
        """Factor on every non-source instance's true rate while ``instances`` non-source
        instances run (restarting ones included: they start up on the same cores)."""
        if self.host_cores is None or instances <= self.host_cores:
            return 1.0
        return self.host_cores / instances

    @property
    def by_name(self) -> dict[str, SimOperator]:
        return {op.name: op for op in self.operators}

    @property
    def order(self) -> list[str]:
        return topological_order({op.name: list(op.upstreams) for op in self.operators})

    def required_rates(self, source_rate: float) -> dict[str, float]:
        """Required input rate per operator (records/s, all instances) at a total source rate."""
        ops = self.by_name
        total_share = sum(op.share for op in self.operators if op.is_source)
        required: dict[str, float] = {}
        for name in self.order:
            op = ops[name]
            if op.is_source:
                required[name] = source_rate * op.share / total_share
            else:
                required[name] = sum(required[u] * ops[u].selectivity for u in op.upstreams)
        return required
