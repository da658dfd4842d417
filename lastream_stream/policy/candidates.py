"""Candidate schemes: where the parallelism configurations the evaluator ranks come from.

The analytic generator is always in the pool, so a decision never depends on the LLM
being reachable; the LLM only adds variety on top of it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from lastream_stream.policy.base import Candidate, DecisionContext
from lastream_stream.policy.ds2 import DS2Settings, ds2_plan, parallelism_cap
from lastream_stream.policy.graph import AppGraph
from lastream_stream.wire.contracts import MAX_PARALLELISM

log = logging.getLogger(__name__)


def dedupe(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Keep the first candidate of each scheme, so earlier generators keep the provenance."""
    seen: set[tuple[tuple[str, int], ...]] = set()
    unique = []
    for candidate in candidates:
        if candidate.key not in seen:
            seen.add(candidate.key)
            unique.append(candidate)
    return unique


def clamp_scheme(
    graph: AppGraph, scheme: dict[str, int], max_parallelism: int = MAX_PARALLELISM, pin_sources: bool = True
) -> dict[str, int]:
    """The scheme as it can be applied: exactly the graph's operators, each within [1, cap]; a
    missing operator, and a source when ``pin_sources``, keeps its current value."""
    return {
        name: op.parallelism
        if name not in scheme or (pin_sources and op.is_source)
        else min(max(int(scheme[name]), 1), parallelism_cap(op, max_parallelism))
        for name, op in graph.operators.items()
    }


@dataclass
class AnalyticGenerator:
    """DS2's optimum, variants with headroom, the current scheme, a step halfway from the
    current scheme to the optimum, and ±1 around the optimum on the operators under pressure
    or that the optimum moves: where DS2's linear model is most likely to be off, and where
    the reward may prefer spare instances (an app so slow that queueing delay outweighs
    their cost)."""

    # DS2 planned for instances busy this share of the time: the evaluator picks the headroom.
    target_utilisations: tuple[float, ...] = (0.9, 0.8)
    busy_threshold: float = 0.8
    # An input backlog worth this many seconds of input marks an operator as falling behind.
    lag_threshold_s: float = 1.0
    max_neighbour_ops: int = 8
    name: str = "analytic"

    def propose(self, graph: AppGraph, context: DecisionContext | None = None) -> list[Candidate]:
        cap = context.max_parallelism if context is not None else MAX_PARALLELISM
        capacity = {
            name: model for name, model in (context.capacity if context is not None else {}).items() if model.fitted
        }
        settings = DS2Settings(max_parallelism=cap)
        optimum = ds2_plan(graph, settings).parallelism
        pool = [Candidate(optimum, "analytic", "ds2")]
        for utilisation in self.target_utilisations:
            headroom = ds2_plan(graph, replace(settings, target_utilisation=utilisation)).parallelism
            pool.append(Candidate(headroom, "analytic", f"ds2 at {utilisation:.0%} utilisation"))
        # Once an operator ran at two parallelisms its capacity curve is known to bend (or not).
        if capacity:
            for utilisation in (1.0, *self.target_utilisations):
                modelled = ds2_plan(graph, replace(settings, target_utilisation=utilisation), capacity).parallelism
                pool.append(Candidate(modelled, "capacity", f"ds2 on learnt capacity at {utilisation:.0%} utilisation"))
        current = graph.parallelism
        pool.append(Candidate(current, "analytic", "current"))
        halfway = {name: math.ceil((current[name] + optimum[name]) / 2) for name in optimum}
        pool.append(Candidate(halfway, "analytic", "halfway to ds2"))
        moved = [name for name in optimum if optimum[name] != current[name] and not graph.operators[name].is_source]
        neighbours = list(dict.fromkeys(self.pressured(graph) + moved))
        for name in neighbours[: self.max_neighbour_ops]:
            limit = parallelism_cap(graph.operators[name], cap)
            for step in (-1, 1):
                value = optimum[name] + step
                if 1 <= value <= limit:
                    pool.append(Candidate({**optimum, name: value}, "analytic", f"ds2 with {name} {step:+d}"))
        return dedupe(pool)

    def pressured(self, graph: AppGraph) -> list[str]:
        """Scalable operators that are busy or falling behind, busiest first."""
        names = [
            name
            for name, op in graph.operators.items()
            if not op.is_source
            and (
                op.busy_ratio >= self.busy_threshold or op.lag > self.lag_threshold_s * max(op.observed_input_rate, 1.0)
            )
        ]
        return sorted(names, key=lambda name: -graph.operators[name].busy_ratio)
