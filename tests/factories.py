"""Builders of valid messages for tests; override any field by keyword."""

import time

from lastream_stream.policy.graph import AppGraph, build_graph
from lastream_stream.wire.contracts import CommandAck, MetricsReport, ScalingCommand


def sample_report(**overrides) -> MetricsReport:
    fields = dict(
        app="wordcount",
        operator="splitter",
        instance_id="w-1",
        interval_end=time.time(),
        interval_s=2.0,
        records_in=400,
        records_out=2400,
        useful_time_s=1.6,
        lag=120,
        latency_p50_ms=35.0,
        latency_p99_ms=90.0,
        cpu_percent=55.0,
        memory_bytes=80_000_000,
        parallelism=2,
        upstreams=["source"],
        input_partitions=8,
    )
    fields.update(overrides)
    return MetricsReport(**fields)


def applied_ack(command: ScalingCommand, applied: dict[str, int]) -> CommandAck:
    """The supervisor's answer that ``command`` was applied and ``applied`` now runs."""
    return CommandAck(
        app=command.app,
        decision_id=command.decision_id,
        generation=command.generation,
        status="applied",
        applied=applied,
    )


def work_window(parallelism: int, per_instance: float, true_rate: float, at: float, lag: int = 0) -> AppGraph:
    """App "a": a source "src" feeding ``parallelism`` instances of "work", each taking
    ``per_instance`` records/s with a true rate of ``true_rate``, over a 10 s window ending ``at``."""
    reports = [
        sample_report(
            app="a",
            operator="src",
            instance_id="s",
            interval_end=at,
            interval_s=10.0,
            records_in=int(10 * per_instance * parallelism),
            records_out=int(10 * per_instance * parallelism),
            useful_time_s=1.0,
            lag=None,
            upstreams=[],
            input_partitions=None,
            parallelism=1,
        )
    ] + [
        sample_report(
            app="a",
            operator="work",
            instance_id=f"w{i}",
            interval_end=at,
            interval_s=10.0,
            records_in=int(10 * per_instance),
            records_out=int(10 * per_instance),
            useful_time_s=10 * per_instance / true_rate,
            lag=lag,
            latency_p50_ms=30.0,
            latency_p99_ms=90.0,
            upstreams=["src"],
            input_partitions=8,
            parallelism=parallelism,
        )
        for i in range(parallelism)
    ]
    return build_graph(reports)
