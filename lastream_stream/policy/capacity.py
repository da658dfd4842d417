"""What each operator's instances add up to, learnt from the agent's own observations.

DS2 assumes every instance adds the same capacity: ``capacity(p) = p * true rate per
instance`` as measured at the running parallelism. A shared store, skewed keys or a crowded
host break that (on a 2-core machine the WordCount counter's measured true rate per
instance fell from 102/s at 4 instances to 68/s at 6), and every step out is then sized on
a rate that no longer holds. ContTune's remedy is a per-operator model of capacity against
parallelism, refined with each configuration observed; this is a small one:

    capacity(p) = a * p ** b

fitted in log space over every parallelism seen (each weighted by its observed windows),
the scaling exponent ``b`` shrunk towards DS2's ``b = 1`` by a prior worth
``PRIOR_WEIGHT`` windows, and kept in
[``MIN_EXPONENT``, 1]. So it is monotone (never less capacity for more instances), concave,
DS2's linear model with one configuration seen, and the prior's pull (its uncertainty about
``b``) fades as observed windows accrue.

A scale-out whose measured capacity came out well short of the linear prediction is
*ineffective* (Flink's autoscaler detects the same): ``added_share`` says how much of the
linear gain it delivered, and ``min_parallelism`` proposes no instance, beyond those already
tried, whose marginal capacity is below ``INEFFECTIVE_SHARE`` of what the first one adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PRIOR_WEIGHT = 2.0  # DS2's linear model counts as this many observed windows
MIN_EXPONENT = 0.2
SMOOTHING = 0.5  # weight of a new observation in the running estimate at its parallelism
INEFFECTIVE_SHARE = 0.1  # an added instance bringing less than this share of a linear one is not worth it


@dataclass
class OperatorCapacity:
    """Total true rate (records/s of busy time, all instances) observed at each parallelism."""

    seen: dict[int, float] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    last: int | None = None  # the parallelism of the latest observation
    previous: int | None = None  # the one before the latest change

    def observe(self, parallelism: int, total_rate: float) -> None:
        if parallelism < 1 or not total_rate > 0 or not math.isfinite(total_rate):
            return
        if self.last is not None and parallelism != self.last:
            self.previous = self.last
        self.last = parallelism
        before = self.seen.get(parallelism)
        self.seen[parallelism] = total_rate if before is None else (1 - SMOOTHING) * before + SMOOTHING * total_rate
        self.counts[parallelism] = self.counts.get(parallelism, 0) + 1

    @property
    def exponent(self) -> float:
        """b: the least-squares slope of ln capacity on ln p (each parallelism weighted by
        its observations), averaged with DS2's b = 1 weighted ``PRIOR_WEIGHT``."""
        if len(self.seen) < 2:
            return 1.0
        total = sum(self.counts.values())
        mean_x = sum(n * math.log(p) for p, n in self.counts.items()) / total
        mean_y = sum(n * math.log(self.seen[p]) for p, n in self.counts.items()) / total
        sxx = sum(n * (math.log(p) - mean_x) ** 2 for p, n in self.counts.items())
        sxy = sum(n * (math.log(p) - mean_x) * (math.log(self.seen[p]) - mean_y) for p, n in self.counts.items())
        b = (total * sxy / sxx + PRIOR_WEIGHT) / (total + PRIOR_WEIGHT)
        return min(1.0, max(MIN_EXPONENT, b))

    def capacity(self, parallelism: int) -> float | None:
        """Predicted total true rate at ``parallelism``; None before any observation."""
        if not self.seen:
            return None
        b = self.exponent
        total = sum(self.counts.values())
        ln_a = sum(n * (math.log(self.seen[p]) - b * math.log(p)) for p, n in self.counts.items()) / total
        return math.exp(ln_a) * parallelism**b

    def min_parallelism(self, target_rate: float, cap: int, utilisation: float = 1.0) -> int | None:
        """The fewest instances whose capacity covers ``target_rate`` at ``utilisation``, within
        [1, cap]; beyond the largest parallelism seen, never an instance that would add less
        than ``INEFFECTIVE_SHARE`` of what the first one does. None before any observation."""
        if not self.seen:
            return None
        first, largest_seen = self.capacity(1), max(self.seen)
        for p in range(1, cap + 1):
            if self.capacity(p) * utilisation >= target_rate * (1 - 1e-9):
                return p
            if p >= largest_seen and self.capacity(p + 1) - self.capacity(p) < INEFFECTIVE_SHARE * first:
                return p
        return cap

    def added_share(self, before: int, after: int) -> float | None:
        """Of the capacity a linear model promised for going from ``before`` to ``after``
        instances, the share measured; None unless both were observed."""
        if before not in self.seen or after not in self.seen or after == before:
            return None
        promised = self.seen[before] * (after / before - 1)
        return (self.seen[after] - self.seen[before]) / promised

    def ineffective(self, min_share: float = 0.5) -> str | None:
        """A note when the latest scale-out delivered less than ``min_share`` of the capacity
        a linear model promised, e.g. "6 -> 7 added 3% capacity"; None otherwise."""
        if self.previous is None or self.last is None or self.last <= self.previous:
            return None
        share = self.added_share(self.previous, self.last)
        if share is None or share >= min_share:
            return None
        gained = self.seen[self.last] / self.seen[self.previous] - 1
        return f"{self.previous} -> {self.last} added {gained:.0%} capacity ({share:.0%} of linear)"

    def to_json(self) -> dict[str, object]:
        return {"seen": {str(p): [rate, self.counts[p]] for p, rate in self.seen.items()}, "last": self.last, "previous": self.previous}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> OperatorCapacity:
        seen = data["seen"]
        return cls({int(p): float(rate) for p, (rate, _) in seen.items()}, {int(p): int(n) for p, (_, n) in seen.items()},
                   data["last"], data["previous"])  # fmt: skip


@dataclass
class CapacityModels:
    """One ``OperatorCapacity`` per app and operator."""

    models: dict[tuple[str, str], OperatorCapacity] = field(default_factory=dict)

    def of(self, app: str, operator: str) -> OperatorCapacity:
        return self.models.setdefault((app, operator), OperatorCapacity())

    def to_json(self) -> dict[str, dict[str, dict[str, object]]]:
        apps: dict[str, dict[str, dict[str, object]]] = {}
        for (app, operator), model in self.models.items():
            apps.setdefault(app, {})[operator] = model.to_json()
        return apps

    @classmethod
    def from_json(cls, data: dict[str, dict[str, dict[str, object]]]) -> CapacityModels:
        return cls({(app, op): OperatorCapacity.from_json(m) for app, ops in data.items() for op, m in ops.items()})
