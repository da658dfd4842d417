"""The reward's inputs as a window of reports shows them: observed rates, DS2's requirement.

The simulator measures the same quantities from its ground truth (``Simulator.measured``);
the controller and the agent only ever see this, the observed side.
"""

from __future__ import annotations

from lastream_stream.policy.ds2 import DS2Plan, ds2_plan, required_instances
from lastream_stream.policy.graph import AppGraph
from lastream_stream.policy.reward import Measured, path_backlog_s, path_service_ms


def observed(graph: AppGraph, plan: DS2Plan | None = None) -> Measured:
    plan = plan or ds2_plan(graph)
    upstreams = {name: op.upstreams for name, op in graph.operators.items()}
    return Measured(
        latency_ms=graph.latency_ms,
        backlog_s=path_backlog_s(
            {name: float(op.lag) for name, op in graph.operators.items()}, plan.target_input_rate, upstreams
        ),
        service_ms=path_service_ms({name: op.true_input_rate for name, op in graph.operators.items()}, upstreams),
        lag=float(graph.total_lag),
        parallelism=graph.parallelism,
        required=required_instances(graph, plan),
    )
