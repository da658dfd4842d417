"""A synthetic fleet of apps that publish ``MetricsReport``s through Kafka: load for the agent.

Each app is a chain of ``operators`` (the first a source), each operator ``instances``
instances, each instance reporting every ``interval_s`` at a steady rate and half busy, so
that every app has a full, stable window to decide on. The instances' reports are spread
evenly over the interval, as real workers started at different times are, so the load is
smooth. Payloads are rendered once per instance and only their ``interval_end`` changes,
so one Python producer offers tens of thousands of reports a second.

Used by ``benchmarks/ingest.py`` and by the agent's ingest test: both measure the service
as users run it, fed through the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from confluent_kafka import Producer

from lastream_stream.wire.contracts import MetricsReport

log = logging.getLogger(__name__)

_MARK = 1234567890.125  # an interval_end no real report has; its place in the rendered JSON is cut out


@dataclass(frozen=True)
class Fleet:
    apps: int
    operators: int
    instances: int
    interval_s: float = 1.0
    prefix: str = "fleet"
    rate_per_instance: float = 100.0  # records per second each instance takes in

    @property
    def reports_per_s(self) -> float:
        return self.apps * self.operators * self.instances / self.interval_s

    def app_names(self) -> list[str]:
        return [f"{self.prefix}-{a}" for a in range(self.apps)]

    def templates(self) -> list[tuple[bytes, bytes, bytes]]:
        """(key, JSON before interval_end, JSON after it) of every instance."""
        records = round(self.rate_per_instance * self.interval_s)
        rendered = []
        for app in self.app_names():
            for o in range(self.operators):
                for i in range(self.instances):
                    report = MetricsReport(
                        app=app,
                        operator=f"op{o}",
                        instance_id=f"op{o}-{i}",
                        interval_end=_MARK,
                        interval_s=self.interval_s,
                        records_in=records,
                        records_out=records,
                        useful_time_s=self.interval_s / 2,
                        lag=None if o == 0 else 10,
                        latency_p50_ms=20.0,
                        latency_p99_ms=60.0,
                        parallelism=self.instances,
                        upstreams=[] if o == 0 else [f"op{o - 1}"],
                        input_partitions=None if o == 0 else 64,
                    )
                    head, tail = report.to_bytes().split(repr(_MARK).encode())
                    rendered.append((app.encode(), head, tail))
        return rendered

    def publish(self, producer: Producer, topic: str, duration_s: float, stop: threading.Event | None = None) -> int:
        """Publish every instance's reports, each instance once per ``interval_s``, for
        ``duration_s``; how many were handed to ``producer``. Reports are dated by the wall clock."""
        stop = stop or threading.Event()
        templates = self.templates()
        spacing = self.interval_s / len(templates)
        started = time.monotonic()
        wall = time.time() - started  # monotonic -> epoch seconds
        sent = 0
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if elapsed >= duration_s:
                break
            due = int(elapsed / spacing) + 1  # reports due by now, counting from the start
            while sent < due:
                key, head, tail = templates[sent % len(templates)]
                end = started + wall + sent * spacing
                try:
                    producer.produce(topic, key=key, value=head + repr(end).encode() + tail)
                except BufferError:  # the producer's queue is full: let it deliver, then go on
                    producer.poll(0.05)
                    continue
                sent += 1
            producer.poll(0)
            time.sleep(0.005)
        return sent
