"""Builders of valid messages for tests; override any field by keyword."""

import time

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
