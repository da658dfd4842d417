"""DS2's scaling rule (Kalavri et al., OSDI'18) on an :class:`AppGraph`.

Walk the operators in topological order. Each operator must absorb what its upstreams
would emit once they run at *their* optimal parallelism, so::

    target_in(op)   = sum over upstreams u of target_out(u)
    optimal(op)     = ceil(target_in(op) / true_input_rate(op))      # per-instance true rate
    target_out(op)  = target_in(op) * true_output_rate(op) / true_input_rate(op)

which is DS2's "true output rate per instance of u times u's (unrounded) optimal
parallelism" written once per operator, so selectivity != 1 needs no special case.
A source is not rescaled (unless configured): its target output is what it emits now.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from lastream_stream.policy.capacity import OperatorCapacity
from lastream_stream.policy.graph import AppGraph, OperatorStats
from lastream_stream.wire.contracts import MAX_PARALLELISM

# ceil(3.0000000000000004) must stay 3: rates are ratios of floats.
_CEIL_SLACK = 1e-9


@dataclass(frozen=True)
class DS2Settings:
    # Plan for instances busy this fraction of the time: 0.8 leaves 20 % headroom for bursts.
    target_utilisation: float = 1.0
    # DS2's over-provisioning factor: ``factor`` * 100 % more instances than the optimum.
    scaling_factor: float = 0.0
    # Cap for operators that report no input partitions.
    max_parallelism: int = MAX_PARALLELISM
    # Sources keep their parallelism unless an entry here says otherwise.
    source_parallelism: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.target_utilisation <= 1:
            raise ValueError(f"target_utilisation must be in (0, 1], got {self.target_utilisation}")
        if self.scaling_factor < 0:
            raise ValueError(f"scaling_factor must be >= 0, got {self.scaling_factor}")


@dataclass(frozen=True)
class DS2Plan:
    target_input_rate: dict[str, float]  # records/s the operator must take in, all instances
    required: dict[str, float]  # fractional instances at full utilisation; 0 when the true rate is unknown
    parallelism: dict[str, int]


def parallelism_cap(op: OperatorStats, max_parallelism: int = MAX_PARALLELISM) -> int:
    """A Kafka consumer group cannot use more instances than its input topic has partitions."""
    return op.partitions if op.partitions is not None else max_parallelism


def ds2_plan(
    graph: AppGraph, settings: DS2Settings | None = None, capacity: Mapping[str, OperatorCapacity] | None = None
) -> DS2Plan:
    """DS2's plan; with ``capacity`` models, an operator seen at two parallelisms or more is
    sized on its learnt capacity curve through what was measured at its current
    parallelism, instead of on ``p`` times the true rate measured there."""
    settings = settings or DS2Settings()
    capacity = capacity or {}
    target_in: dict[str, float] = {}
    target_out: dict[str, float] = {}
    required: dict[str, float] = {}
    parallelism: dict[str, int] = {}
    for name, op in graph.operators.items():
        known = op.true_input_rate > 0
        if op.is_source:
            target_in[name] = op.observed_input_rate
            target_out[name] = op.observed_output_rate
        else:
            target_in[name] = sum(target_out[u] for u in op.upstreams)
            # Unknown true rate: pass records on at the observed selectivity.
            ratio = op.true_output_rate / op.true_input_rate if known else op.selectivity
            target_out[name] = target_in[name] * ratio
        required[name] = target_in[name] / op.true_input_rate if known else 0.0

        if op.is_source and name not in settings.source_parallelism:
            parallelism[name] = op.parallelism
        elif op.is_source:
            parallelism[name] = settings.source_parallelism[name]
        elif not known:
            parallelism[name] = op.parallelism
        elif (model := capacity.get(name)) is not None and model.fitted:
            measured = (op.parallelism, op.parallelism * op.true_input_rate)
            sized = model.min_parallelism(
                target_in[name], parallelism_cap(op, settings.max_parallelism), settings.target_utilisation, measured
            )
            parallelism[name] = math.ceil(sized * (1 + settings.scaling_factor) - _CEIL_SLACK)
        else:
            instances = required[name] / settings.target_utilisation * (1 + settings.scaling_factor)
            parallelism[name] = math.ceil(instances - _CEIL_SLACK)
        parallelism[name] = min(max(parallelism[name], 1), parallelism_cap(op, settings.max_parallelism))
    return DS2Plan(target_input_rate=target_in, required=required, parallelism=parallelism)


def required_instances(graph: AppGraph, plan: DS2Plan, max_parallelism: int = MAX_PARALLELISM) -> dict[str, int]:
    """The fewest instances that sustain the target rate at full utilisation, within [1, cap]:
    what the reward measures resources against. Sources and operators of unknown true rate
    count as they run."""
    return {
        name: op.parallelism
        if op.is_source or plan.required[name] <= 0
        else min(max(1, math.ceil(plan.required[name] - _CEIL_SLACK)), parallelism_cap(op, max_parallelism))
        for name, op in graph.operators.items()
    }


def falling_behind(graph: AppGraph, plan: DS2Plan) -> set[str]:
    """Operators that need more instances than they run: the running scheme cannot sustain the rate."""
    return {name for name, n in required_instances(graph, plan).items() if n > graph.operators[name].parallelism}


def optimal_parallelism(graph: AppGraph, settings: DS2Settings | None = None) -> dict[str, int]:
    """DS2's optimal parallelism per operator, clamped to [1, partitions]."""
    return ds2_plan(graph, settings).parallelism
