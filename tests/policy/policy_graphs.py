"""Graphs for the policy tests, built the way the service builds them: from MetricsReports.

Imported by the test modules by name: pytest puts this folder on sys.path (no __init__.py).
"""

from __future__ import annotations

from lastream_stream.policy.graph import AppGraph, build_graph
from lastream_stream.wire.contracts import MetricsReport

INTERVAL_S = 10.0
END = 1_700_000_000.0


def operator_reports(
    name: str,
    *,
    upstreams: tuple[str, ...] = (),
    instances: int = 1,
    records_in: int,
    records_out: int,
    useful_s: float,
    partitions: int | None = None,
    lag: int = 0,
    latency_ms: float | None = None,
    app: str = "test-app",
) -> list[MetricsReport]:
    """One 10 s report per instance, every instance doing the same (per-instance numbers)."""
    return [
        MetricsReport(
            app=app,
            operator=name,
            instance_id=f"{name}-{i}",
            interval_end=END,
            interval_s=INTERVAL_S,
            records_in=records_in,
            records_out=records_out,
            useful_time_s=useful_s,
            lag=lag,
            latency_p50_ms=latency_ms,
            latency_p99_ms=None if latency_ms is None else 2 * latency_ms,
            parallelism=instances,
            upstreams=list(upstreams),
            input_partitions=partitions,
        )
        for i in range(instances)
    ]


def graph_of(*operators: list[MetricsReport]) -> AppGraph:
    return build_graph([report for reports in operators for report in reports])


def chain_graph() -> AppGraph:
    """src -> split (x3) -> count (x0.5) -> sink, split falling behind. Numbers in test_ds2.py."""
    return graph_of(
        operator_reports("src", records_in=10_000, records_out=10_000, useful_s=5.0, partitions=4),
        operator_reports(
            "split",
            upstreams=("src",),
            instances=2,
            records_in=4_000,
            records_out=12_000,
            useful_s=10.0,
            partitions=8,
            lag=4_000,
        ),
        operator_reports(
            "count",
            upstreams=("split",),
            instances=2,
            records_in=12_000,
            records_out=6_000,
            useful_s=9.6,
            partitions=8,
            lag=100,
        ),
        operator_reports(
            "sink", upstreams=("count",), records_in=12_000, records_out=0, useful_s=2.0, partitions=8, latency_ms=250.0
        ),
    )
