"""A plain confluent-kafka app that LaStream scales: no Faust, no framework, one file.

    orders (source) --orders topic--> parser --items topic--> tally (sink)

``orders`` emits orders at a set rate (optionally a schedule), ``parser`` turns each order
into its items (a slow step: ``SHOP_PARSER_MS`` per order), ``tally`` counts items per
product. Each operator is a consumer group of its own, so each scales alone: its
parallelism is the number of processes (or threads) running it, capped by the partitions
of its input topic.

What LaStream needs from every operator, all through ``MetricsReporter``:
- a report from every instance, the source included (``upstreams=[]``);
- ``reporter.busy()`` around the work of each input record (useful time, DS2-style);
- ``record_out`` for what it emits, ``lag`` from its consumer;
- parallelism: learnt from ``LASTREAM_WORKER_STATE`` under the supervisor; given
  explicitly when the app scales itself (see ``self_scaling.py``);
- at the sink, ``observe_latency`` from the source's timestamp, carried through every hop
  as the Kafka message timestamp.

Run one operator: ``python examples/plain_kafka/shop.py parser``. The supervisor runs
them all from ``shop.yaml``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from lastream_stream.kafka.reporter import MetricsReporter, consumer_lag

BOOTSTRAP = os.environ.get("LASTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
APP = os.environ.get("SHOP_APP", "shop")
PREFIX = os.environ.get("SHOP_PREFIX", APP)  # of the app's own topics and consumer groups
PARTITIONS = int(os.environ.get("SHOP_PARTITIONS", "8"))
RATE = os.environ.get("SHOP_RATE", "20")  # orders/s, or steps "0:20,120:4" (from t seconds on, rate r)
PARSER_MS = float(os.environ.get("SHOP_PARSER_MS", "100"))
TALLY_MS = float(os.environ.get("SHOP_TALLY_MS", "5"))
REPORT_S = float(os.environ.get("SHOP_REPORT_S", "2"))
ORDERS, ITEMS = f"{PREFIX}.orders", f"{PREFIX}.items"
PRODUCTS = ["tea", "cake", "bread", "jam", "milk", "eggs"]

log = logging.getLogger("shop")


def create_topics() -> None:
    """The app's own topics: LaStream creates only its own (``lastream topics ensure``)."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (ORDERS, ITEMS)]).values():
        try:
            future.result(30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def rate_at(schedule: str) -> Callable[[float], float]:
    """``"20"``, or steps ``"0:20,120:4"``: from t seconds on, r orders/s."""
    if ":" not in schedule:
        return lambda t: float(schedule)
    steps = sorted((float(at), float(r)) for at, r in (step.split(":") for step in schedule.split(",")))
    return lambda t: next((r for at, r in reversed(steps) if at <= t), steps[0][1])


def reporter(operator: str, upstreams: list[str], consumer: Consumer | None, parallelism=None) -> MetricsReporter:
    return MetricsReporter(
        app=APP,
        operator=operator,
        upstreams=upstreams,
        parallelism=parallelism,  # None: learnt from the supervisor's LASTREAM_WORKER_STATE
        input_partitions=PARTITIONS if consumer is not None else None,
        lag=(lambda: consumer_lag(consumer)) if consumer is not None else None,
        interval_s=REPORT_S,
    )


def run_orders(stop: threading.Event, parallelism=None) -> None:
    rate = rate_at(RATE)
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 10})
    started = next_due = time.monotonic()
    with reporter("orders", [], None, parallelism=1) as report:
        while not stop.wait(max(0.0, next_due - time.monotonic())):
            now = time.monotonic()
            next_due = max(next_due, now - 1.0) + 1.0 / rate(now - started)
            with report.busy():
                order = {"items": random.choices(PRODUCTS, k=random.randint(1, 5))}
                # The timestamp travels with the order to the sink: the end-to-end latency.
                producer.produce(ORDERS, json.dumps(order).encode(), timestamp=int(time.time() * 1000))
                producer.poll(0)
            report.record_out()
    producer.flush(10)


def consume(
    operator: str,
    upstream: str,
    topic: str,
    stop: threading.Event,
    parallelism,
    work: Callable[[MetricsReporter, Message], None],
) -> None:
    """One instance of ``operator``: its own consumer group on ``topic``, reporting from the start."""
    consumer = Consumer(
        {"bootstrap.servers": BOOTSTRAP, "group.id": f"{PREFIX}-{operator}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    try:
        with reporter(operator, [upstream], consumer, parallelism) as report:
            while not stop.is_set():
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    work(report, msg)
    finally:
        consumer.close()  # leaves the group at once: the other instances take over its partitions


def run_parser(stop: threading.Event, parallelism=None) -> None:
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 10})

    def work(report: MetricsReporter, msg: Message) -> None:
        with report.busy():
            time.sleep(PARSER_MS / 1000)  # the slow part: what parallelism pays for
            items = json.loads(msg.value())["items"]
            for item in items:
                value = json.dumps({"product": item}).encode()
                producer.produce(ITEMS, value, key=item.encode(), timestamp=msg.timestamp()[1])
            producer.poll(0)
        report.record_out(len(items))

    try:
        consume("parser", "orders", ORDERS, stop, parallelism, work)
    finally:
        producer.flush(10)


def run_tally(stop: threading.Event, parallelism=None) -> None:
    counts: Counter[str] = Counter()

    def work(report: MetricsReporter, msg: Message) -> None:
        with report.busy():
            time.sleep(TALLY_MS / 1000)
            counts[json.loads(msg.value())["product"]] += 1
        report.observe_latency(time.time() * 1000 - msg.timestamp()[1])

    consume("tally", "parser", ITEMS, stop, parallelism, work)
    log.info("tallied %s", dict(counts))


OPERATORS = {"orders": run_orders, "parser": run_parser, "tally": run_tally}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    operator = sys.argv[1] if len(sys.argv) == 2 else os.environ.get("LASTREAM_WORKER_OPERATOR", "")
    if operator not in OPERATORS:
        sys.exit(f"usage: shop.py {{{'|'.join(OPERATORS)}}}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # the supervisor stops a worker with SIGTERM
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    create_topics()
    log.info("%s of %s running on %s", operator, APP, BOOTSTRAP)
    OPERATORS[operator](stop)


if __name__ == "__main__":
    main()
