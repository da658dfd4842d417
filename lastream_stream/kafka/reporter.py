"""``MetricsReporter``: what any Kafka app embeds to tell LaStream how its operator is doing.

Counting follows DS2: ``records_in``/``records_out`` per interval, and *useful time*, the
time spent actually processing records (wrap the per-record work in ``reporter.busy()``),
so time spent waiting for input does not make an operator look slow.

Reports are published on a fixed interval from a background thread, which works the same
under a plain poll loop, Faust or any asyncio app. When the broker is down, librdkafka's
queue is bounded (``max_pending`` reports) and reports that do not fit are dropped and
counted: memory stays bounded and the app is never blocked by its monitoring.

The operator's parallelism is learnt, not guessed: under ``lastream supervisor`` each worker
reads it from the state file named by ``LASTREAM_WORKER_STATE``, which the supervisor keeps
current. A reporter that knows neither that nor a ``parallelism=`` says so once and reports 1.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.settings import KafkaSettings, LastreamSettings
from lastream_stream.wire.contracts import MIN_INTERVAL_S, MetricsReport

log = logging.getLogger(__name__)

LATENCY_SAMPLES = 2048


class WorkerSettings(BaseSettings):
    """What the supervisor tells each worker process it starts (``LASTREAM_WORKER_*``)."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_WORKER_", extra="ignore")

    state: Path | None = Field(
        default=None,
        description="JSON file the supervisor keeps current with the operator's running `parallelism`; "
        "set by the supervisor for each worker, read by `MetricsReporter` when no `parallelism=` is given",
    )


def parallelism_from_state(path: str | Path | None) -> int:
    """Current parallelism as the supervisor last wrote it; 1 when run by hand."""
    if not path:
        return 1
    try:
        return int(json.loads(Path(path).read_text())["parallelism"])
    except (OSError, ValueError, KeyError):
        return 1


def consumer_lag(consumer: Consumer) -> int | None:
    """Records behind the log end on the partitions assigned to ``consumer``.

    Uses the high watermarks cached from fetch responses: asking the broker instead would
    queue behind the consumer's own long-poll fetch and stall the app. Partitions not
    fetched yet are left out until their first fetch answers.
    """
    assignment = consumer.assignment()
    if not assignment:
        return 0
    lag = 0
    for tp in consumer.position(assignment):
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        if high >= 0 and tp.offset >= 0:
            lag += max(0, high - tp.offset)
    return lag


class BrokerLag:
    """Records behind the log end on given partitions, asked of the broker by a client of its
    own that never joins the group: from where the app stands (its position when it knows
    one, else the group's committed offset, else the log start) to the high watermark.

    For apps whose own consumer cannot say while it rebalances or replays its state (Faust
    pauses its input partitions then, and knows no position before a partition's first
    record): the true backlog, not the zero of partitions not read yet. Each call asks the
    broker, so it belongs on the reporter's thread, never on the app's.
    """

    def __init__(self, group_id: str, settings: KafkaSettings, timeout_s: float | None = None) -> None:
        self.timeout_s = settings.timeout_s if timeout_s is None else timeout_s
        self._consumer = Consumer(KafkaClients(settings).config(**{"group.id": group_id, "enable.auto.commit": False}))

    def __call__(
        self, partitions: Iterable[tuple[str, int]], positions: Mapping[tuple[str, int], int] | None = None
    ) -> int:
        tps = [TopicPartition(topic, p) for topic, p in partitions]
        if not tps:
            return 0
        positions = positions or {}
        lag = 0
        for tp in self._consumer.committed(tps, timeout=self.timeout_s):
            low, high = self._consumer.get_watermark_offsets(tp, timeout=self.timeout_s)
            at = max(tp.offset, positions.get((tp.topic, tp.partition), low), low)
            lag += max(0, high - at)
        return lag

    def close(self) -> None:
        self._consumer.close()


class MetricsReporter:
    """Counts one operator instance's work and publishes a ``MetricsReport`` every interval.

    ``parallelism``: the operator's running instances, or a callable returning them; by
    default read from the supervisor's state file. A source reports too, with ``upstreams=[]``.
    ``ready``: whether the instance processes its input at start; an app that first waits for
    partitions or replays state starts not ready and says when it is (``set_ready``).
    """

    def __init__(
        self,
        *,
        app: str,
        operator: str,
        upstreams: list[str] | tuple[str, ...] = (),
        parallelism: int | Callable[[], int] | None = None,
        input_partitions: int | None = None,
        lag: Callable[[], int | None] | None = None,
        instance_id: str | None = None,
        interval_s: float = 2.0,
        settings: LastreamSettings | None = None,
        max_pending: int = 1000,
        ready: bool = True,
    ) -> None:
        self.app = app
        self.operator = operator
        self.upstreams = list(upstreams)
        self.input_partitions = input_partitions
        # The thread too: instances may be threads of one process, and each must count as one.
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}-{threading.get_native_id()}-{operator}"
        self.interval_s = interval_s
        self.settings = settings or LastreamSettings()
        self.max_pending = max_pending
        if parallelism is None:
            state = WorkerSettings().state
            if state is not None:
                parallelism = functools.partial(parallelism_from_state, state)
            else:
                log.warning(
                    "%s/%s reports parallelism 1: pass MetricsReporter(parallelism=...) (the running instance "
                    "count, or a callable returning it) or run it under `lastream supervisor`, which sets "
                    "LASTREAM_WORKER_STATE",
                    app,
                    operator,
                )
                parallelism = 1
        self._parallelism = parallelism
        self._lag = lag
        self._lock = threading.Lock()
        self._process = psutil.Process()
        self._process.cpu_percent()  # first call only primes the counter
        self._rng = random.Random()
        self._interval_started = time.time()
        self._records_in = 0
        self._records_out = 0
        self._useful_s = 0.0
        self._latencies: list[float] = []
        self._latency_seen = 0
        self._ready = ready
        self._unready_in_interval = not ready
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reports_sent = 0
        self.reports_dropped = 0

    # Counting: called from the app's processing path, so cheap and thread-safe.
    def record_in(self, n: int = 1) -> None:
        with self._lock:
            self._records_in += n

    def record_out(self, n: int = 1) -> None:
        with self._lock:
            self._records_out += n

    def add_useful_time(self, seconds: float) -> None:
        with self._lock:
            self._useful_s += seconds

    def set_ready(self, ready: bool) -> None:
        """Not ready: waiting for partitions or replaying state, so what this instance does
        says nothing of its capacity. Every interval it was not ready in, for any part, says so."""
        with self._lock:
            self._ready = ready
            self._unready_in_interval |= not ready

    @contextmanager
    def busy(self, records_in: int = 1) -> Iterator[None]:
        """Wrap the work done for ``records_in`` input record(s): counts them and their useful time."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._records_in += records_in
                self._useful_s += elapsed

    def observe_latency(self, ms: float) -> None:
        """End-to-end latency of one record; reservoir-sampled so memory stays bounded."""
        with self._lock:
            self._latency_seen += 1
            if len(self._latencies) < LATENCY_SAMPLES:
                self._latencies.append(ms)
            else:
                slot = self._rng.randrange(self._latency_seen)
                if slot < LATENCY_SAMPLES:
                    self._latencies[slot] = ms

    def snapshot(self, now: float | None = None) -> MetricsReport:
        """Close the current interval and return its report (counters restart from zero)."""
        now = time.time() if now is None else now
        with self._lock:
            started, self._interval_started = self._interval_started, now
            records_in, self._records_in = self._records_in, 0
            records_out, self._records_out = self._records_out, 0
            useful, self._useful_s = self._useful_s, 0.0
            latencies, self._latencies = sorted(self._latencies), []
            self._latency_seen = 0
            ready, self._unready_in_interval = not self._unready_in_interval, not self._ready
        interval = max(now - started, MIN_INTERVAL_S)
        lag = self._read_lag()
        parallelism = self._parallelism() if callable(self._parallelism) else self._parallelism
        return MetricsReport(
            app=self.app,
            operator=self.operator,
            instance_id=self.instance_id,
            interval_end=now,
            interval_s=interval,
            records_in=records_in,
            records_out=records_out,
            useful_time_s=min(useful, interval),
            lag=lag,
            latency_p50_ms=_percentile(latencies, 0.50),
            latency_p99_ms=_percentile(latencies, 0.99),
            cpu_percent=self._process.cpu_percent(),
            memory_bytes=self._process.memory_info().rss,
            parallelism=max(1, parallelism),
            upstreams=self.upstreams,
            input_partitions=self.input_partitions,
            ready=ready,
        )

    def _read_lag(self) -> int | None:
        if self._lag is None:
            return None
        try:
            return self._lag()
        except Exception as exc:  # a monitoring read must never take the reporter down
            log.warning("lag of %s unavailable: %s", self.operator, exc)
            return None

    def publish(self, report: MetricsReport) -> None:
        producer = self._ensure_producer()
        try:
            # Keyed by the app: all its reports on one partition, so that one agent decides it.
            producer.produce(self.settings.topics.metrics, key=self.app.encode(), value=report.to_bytes())
            self.reports_sent += 1
        except BufferError:
            self.reports_dropped += 1
            log.warning("metrics queue full (%d pending): dropped a report of %s", len(producer), self.operator)
        producer.poll(0)

    def flush_once(self) -> MetricsReport:
        report = self.snapshot()
        self.publish(report)
        return report

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            clients = KafkaClients(self.settings.kafka)
            self._producer = Producer(
                clients.config(
                    **{
                        "queue.buffering.max.messages": self.max_pending,
                        "message.timeout.ms": max(1000, int(self.interval_s * 1000 * 5)),
                        "linger.ms": 20,
                    }
                )
            )
        return self._producer

    def start(self) -> MetricsReporter:
        """Publish every ``interval_s`` from a daemon thread until ``stop()``."""
        if self._thread is None:
            self._interval_started = time.time()
            self._thread = threading.Thread(target=self._loop, name=f"metrics-{self.operator}", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            try:
                self.flush_once()
            except Exception:
                log.exception("publishing metrics of %s failed", self.operator)
            # On time, the cadence stays fixed. After a publish that stalled past whole intervals
            # (a lag read during a group join), the next report comes half an interval from now,
            # not one per missed interval back to back (each a few ms long).
            next_at = max(next_at + self.interval_s, time.monotonic() + self.interval_s / 2)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread, publish the last partial interval, flush what the broker will take."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
            self.flush_once()
        if self._producer is not None:
            self._producer.flush(timeout_s)

    def __enter__(self) -> MetricsReporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
