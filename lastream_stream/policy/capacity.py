"""What each operator's instances add up to, learnt from the agent's own observations.

DS2 assumes every instance adds the same capacity: ``capacity(p) = p * true rate per
instance`` as measured at the running parallelism. A shared store, skewed keys or a crowded
host break that (on a 2-core machine the WordCount counter's measured true rate per
instance fell from 102/s at 4 instances to 68/s at 6), and every step out is then sized on
a rate that no longer holds. ContTune's remedy is a per-operator model of capacity against
parallelism, refined with each configuration observed; this is a small one:

    capacity(p) = capacity(p0) * (p / p0) ** b

anchored at a measured point ``(p0, capacity(p0))`` (the running parallelism and what was
just measured there, when deciding), the scaling exponent ``b`` fitted in log space over
every parallelism seen and shrunk towards DS2's ``b = 1`` by a prior worth
``PRIOR_WEIGHT`` windows, and kept in [``MIN_EXPONENT``, 1]. The evidence for ``b`` is
the windows seen at every parallelism but the most observed one: a hundred windows at 4
and a single noisy one at 5 say little about the slope. So the curve is monotone (never
less capacity for more instances), concave, DS2's linear model with one configuration seen,
and the prior's pull fades as windows at other parallelisms accrue. Below the anchor it
claims no more than DS2's linear model, except what as few instances were seen to deliver:
a scale-in is sized on evidence, never on the slope alone.

A scale-out that delivered less than a quarter of the capacity a linear model promised is
*ineffective* (Flink's autoscaler detects the same): measured fact overrides the prior, and
``min_parallelism`` proposes no more instances than it went to. Beyond the parallelisms
tried, it proposes no instance whose marginal capacity is below ``INEFFECTIVE_SHARE`` of
what the first one adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PRIOR_WEIGHT = 2.0  # DS2's linear model counts as this many observed windows
MIN_EXPONENT = 0.2
SMOOTHING = 0.5  # weight of a new observation in the running estimate at its parallelism
INEFFECTIVE_SHARE = 0.1  # an added instance bringing less than this share of the first one is not worth it
INEFFECTIVE_SCALE_OUT = 0.25  # a scale-out that delivered less than this share of the linear gain was ineffective
MIN_WINDOWS = 2  # windows at both ends of a scale-out before it is judged


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
    def fitted(self) -> bool:
        """Seen at two parallelisms or more: the curve may bend."""
        return len(self.seen) > 1

    @property
    def exponent(self) -> float:
        """b: the least-squares slope of ln capacity on ln p over the parallelisms seen,
        averaged with DS2's b = 1 weighted ``PRIOR_WEIGHT`` against the evidence."""
        if not self.fitted:
            return 1.0
        xs = {p: math.log(p) for p in self.seen}
        mean_x = sum(xs.values()) / len(xs)
        mean_y = sum(math.log(rate) for rate in self.seen.values()) / len(xs)
        slope = sum((xs[p] - mean_x) * (math.log(self.seen[p]) - mean_y) for p in xs) / sum(
            (x - mean_x) ** 2 for x in xs.values()
        )
        evidence = sum(self.counts.values()) - max(self.counts.values())
        b = (evidence * slope + PRIOR_WEIGHT) / (evidence + PRIOR_WEIGHT)
        return min(1.0, max(MIN_EXPONENT, b))

    def capacity(self, parallelism: int, anchor: tuple[int, float] | None = None) -> float | None:
        """Predicted total true rate at ``parallelism``, through ``anchor`` (a parallelism
        and the capacity measured there) or else the most observed parallelism seen; None
        before any observation."""
        if anchor is None:
            if not self.seen:
                return None
            p0 = max(self.counts, key=lambda p: (self.counts[p], p))
            anchor = (p0, self.seen[p0])
        return float(self.capacities(np.array(parallelism, dtype=np.float64), anchor))

    def capacities(self, parallelism: np.ndarray, anchor: tuple[float, float]) -> np.ndarray:
        """``capacity`` of every parallelism in the array at once, through ``anchor``."""
        p0, c0 = anchor
        curve = c0 * (parallelism / p0) ** self.exponent
        # Fewer instances each doing more than measured at the anchor is the fitted slope's
        # claim, which a few noisy windows make (ones right after a scale-out once did): below
        # the anchor, no more than DS2's linear model but what as few instances or fewer
        # were actually observed to deliver.
        seen = np.vectorize(
            lambda p: max((rate for q, rate in self.seen.items() if q <= p), default=0.0), otypes=[np.float64]
        )(parallelism)
        return np.where(parallelism >= p0, curve, np.minimum(curve, np.maximum(c0 * parallelism / p0, seen)))

    def min_parallelism(
        self, target_rate: float, cap: int, utilisation: float = 1.0, anchor: tuple[int, float] | None = None
    ) -> int | None:
        """The fewest instances whose capacity covers ``target_rate`` at ``utilisation``, within
        [1, cap]; beyond the largest parallelism seen, never an instance that would add less
        than ``INEFFECTIVE_SHARE`` of what the first one does. None before any observation."""
        if not self.seen:
            return None
        first, largest_seen, ceiling = self.capacity(1, anchor), max(self.seen), self.ceiling()
        for p in range(1, cap + 1):
            if self.capacity(p, anchor) * utilisation >= target_rate * (1 - 1e-9) or p == ceiling:
                return p
            if (
                p >= largest_seen
                and self.capacity(p + 1, anchor) - self.capacity(p, anchor) < INEFFECTIVE_SHARE * first
            ):
                return p
        return cap

    def added_share(self, before: int, after: int) -> float | None:
        """Of the capacity a linear model promised for going from ``before`` to ``after``
        instances, the share measured; None unless both were observed."""
        if before not in self.seen or after not in self.seen or after == before:
            return None
        promised = self.seen[before] * (after / before - 1)
        return (self.seen[after] - self.seen[before]) / promised

    def ceiling(self) -> int | None:
        """The parallelism of the latest scale-out when it was ineffective: no more instances
        than that are proposed. None otherwise."""
        if self.previous is None or self.last is None or self.last <= self.previous:
            return None
        if min(self.counts[self.previous], self.counts[self.last]) < MIN_WINDOWS:
            return None
        share = self.added_share(self.previous, self.last)
        return self.last if share is not None and share < INEFFECTIVE_SCALE_OUT else None

    def ineffective(self) -> str | None:
        """A note when the latest scale-out was ineffective, e.g. "6 -> 7 added 3% capacity
        (18% of linear); holding at 7"; None otherwise."""
        if (ceiling := self.ceiling()) is None:
            return None
        gained = self.seen[self.last] / self.seen[self.previous] - 1
        return f"{self.previous} -> {self.last} added {gained:.0%} capacity ({self.added_share(self.previous, self.last):.0%} of linear); holding at {ceiling}"

    def to_json(self) -> dict[str, object]:
        return {
            "seen": {str(p): [rate, self.counts[p]] for p, rate in self.seen.items()},
            "last": self.last,
            "previous": self.previous,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> OperatorCapacity:
        seen = data["seen"]
        return cls(
            {int(p): float(rate) for p, (rate, _) in seen.items()},
            {int(p): int(n) for p, (_, n) in seen.items()},
            data["last"],
            data["previous"],
        )


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
