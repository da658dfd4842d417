"""The WordCount source: sentences from the shipped corpus at a controlled rate.

A plain producer process (its rate is the app's input, so it is never scaled). Each
sentence carries a sequence number and its event time as the Kafka timestamp, which every
downstream operator propagates so the sink can measure end-to-end latency. It never drops
a sentence: through a broker outage it retries, then waits once its bounded queue is full.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources

from confluent_kafka import KafkaError, Message, Producer

from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.kafka.reporter import MetricsReporter
from lastream_stream.settings import LastreamSettings
from wordcount_app import topics
from wordcount_app.settings import UPSTREAMS, WordCountSettings

log = logging.getLogger(__name__)


def corpus() -> list[str]:
    text = resources.files("wordcount_app").joinpath("corpus.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def rate_schedule(base: float, schedule: str | None) -> Callable[[float], float]:
    """Sentences per second at ``t`` seconds after start.

    ``"0:100,60:250"`` steps to 250/s at t=60; ``"sine:100,50,120"`` oscillates around 100
    with amplitude 50 and a 120 s period; no schedule means ``base`` throughout.
    """
    if not schedule:
        return lambda t: base
    if schedule.startswith("sine:"):
        mean, amplitude, period = (float(x) for x in schedule[5:].split(","))
        return lambda t: max(0.1, mean + amplitude * math.sin(2 * math.pi * t / period))
    steps = sorted((float(at), float(rate)) for at, rate in (item.split(":") for item in schedule.split(",")))
    if any(rate <= 0 for _, rate in steps):
        raise ValueError(f"rates in a schedule must be positive: {schedule!r}")
    if not steps or steps[0][0] > 0:
        steps.insert(0, (0.0, base))

    def rate(t: float) -> float:
        return [r for at, r in steps if at <= t][-1]

    return rate


def sentences(lines: list[str], repeat: int) -> Iterator[tuple[int, str]]:
    """(sequence number, text); cycles forever when ``repeat`` is 0."""
    seq = 0
    rounds = 0
    while repeat == 0 or rounds < repeat:
        for line in lines:
            yield seq, line
            seq += 1
        rounds += 1


@dataclass
class Deliveries:
    """What the broker confirmed of the sentences handed to the producer; the producer
    calls ``on_delivery`` from ``poll`` and ``flush``, in the source's own thread."""

    delivered: int = 0
    failed: int = 0

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            return
        # With no local timeout only a permanent or fatal error ends up here.
        self.failed += 1
        log.error("sentence %s was not delivered: %s", msg.key().decode(), err)


def producer_options(wc: WordCountSettings) -> dict[str, object]:
    return {
        "linger.ms": 10,
        # A retried sentence is kept once by the broker, at its first place.
        "enable.idempotence": True,
        "acks": "all",
        # Retry for as long as an outage lasts (0: no local timeout), holding at most
        # ``source_queue_max`` sentences; a full queue makes the source wait, never drop.
        "message.timeout.ms": 0,
        "queue.buffering.max.messages": wc.source_queue_max,
    }


def enqueue(producer: Producer, topic: str, seq: int, text: str, deliveries: Deliveries, stop: threading.Event) -> bool:
    """Hand one sentence to the producer, waiting while its queue is full; False if stopped first."""
    payload = json.dumps({"seq": seq, "text": text}).encode()
    while not stop.is_set():
        try:
            producer.produce(
                topic,
                key=str(seq).encode(),
                value=payload,
                timestamp=int(time.time() * 1000),
                on_delivery=deliveries.on_delivery,
            )
        except BufferError:
            producer.poll(0.1)
            continue
        producer.poll(0)
        return True
    return False


def run(settings: LastreamSettings, wc: WordCountSettings, stop: threading.Event | None = None) -> int:
    """Produce until the corpus is exhausted (``repeat`` > 0) or ``stop`` is set, then flush;
    return the count the broker confirmed."""
    stop = stop or threading.Event()
    topics.ensure(settings, wc)
    rate = rate_schedule(wc.rate, wc.schedule)
    reporter = MetricsReporter(
        app=wc.app,
        operator="source",
        upstreams=UPSTREAMS["source"],
        interval_s=wc.metrics_interval_s,
        settings=settings,
        instance_id="source-0",
    )
    deliveries = Deliveries()
    generated = 0
    started = next_due = time.monotonic()
    try:
        with KafkaClients(settings.kafka).producer(**producer_options(wc)) as producer, reporter:
            for seq, text in sentences(corpus(), wc.repeat):
                if (wait := next_due - time.monotonic()) > 0 and stop.wait(wait):
                    break
                now = time.monotonic()
                # Catch up on short hiccups, but never burst for more than a second of backlog.
                next_due = max(next_due, now - 1.0) + 1.0 / rate(now - started)
                with reporter.busy():
                    if not enqueue(producer, wc.sentences_topic, seq, text, deliveries, stop):
                        break
                reporter.record_out()
                generated += 1
    finally:
        pending = generated - deliveries.delivered - deliveries.failed
        log.info(
            "source stopped: generated %d, delivered %d, failed %d, pending %d",
            generated,
            deliveries.delivered,
            deliveries.failed,
            pending,
        )
    return deliveries.delivered


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s source: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(LastreamSettings(), WordCountSettings(), stop)


if __name__ == "__main__":
    main()
