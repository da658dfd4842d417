"""One WordCount worker process: a Faust app running a single operator.

Each operator is its own Faust app id, hence its own consumer group, so the supervisor
scales it alone by starting or stopping processes like this one. The operator comes from
``LASTREAM_WORKER_OPERATOR`` (set by the supervisor) and its slot from ``LASTREAM_WORKER_INDEX``.

Counts are exact through kill -9 of any worker, rebalances and scale-ins (every word of
every sentence counted once), with Faust's at-least-once delivery rather than its
transactions (``exactly_once``, whose recovery has open bugs in Faust and which the
splitter's replays would still need on top):

- every operator resumes each input partition at its committed offset after a rebalance
  and skips no record, there or anywhere (``wordcount_app/recovery.py``: Faust itself
  can drop fetched records and commit past them);
- Faust commits an input offset only after the records produced for it are acknowledged
  (it flushes its producer before committing), so a sentence whose words did not all
  reach the words topic is split again, and a word is counted again, after a crash;
- a word carries its sentence's position (sentences partition, offset, word index), and a
  splitter splits sentences in order, so per word and sentences partition the positions
  of first deliveries only grow and a replayed word repeats a position already seen;
- the counter keeps, per word, its count and the last position it counted from each
  sentences partition in one table value: one changelog record per counted word, written
  to the changelog partition of the word's input partition, in processing order. The
  counter waits for the broker to acknowledge that record before it takes the next word,
  so its committed offset never passes a word whose record is not in the changelog.

A restarted counter restores exactly the records of a prefix of the words it processed
and resumes from a committed offset at or before the end of that prefix: each replayed
word inside the prefix finds its position already counted and is skipped, each word after
it is counted once. (Two separate records, progress and count, could land one without the
other: a word marked done but never counted.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import tempfile
import time
from pathlib import Path

import faust
from faust.types import TP, EventT, StreamT

from lastream_stream.kafka.reporter import BrokerLag, MetricsReporter, parallelism_from_state
from lastream_stream.logs import logging_config
from lastream_stream.settings import KafkaSettings, LastreamSettings
from lastream_stream.wire.deadletter import dead_letter
from wordcount_app import topics
from wordcount_app.recovery import ContiguousApp, SeekFirstTableManager
from wordcount_app.settings import UPSTREAMS, WordCountSettings
from wordcount_app.topk import LatestCounts

log = logging.getLogger(__name__)

# A word's position in the input is (sentence offset, word index) packed in one int, which
# Faust tables store and recover natively; the splitter drops words beyond this index.
MAX_WORDS_PER_SENTENCE = 10_000
# What reading a malformed record raises: bad JSON or UTF-8, missing keys, wrong types, no key.
BAD_RECORD = (ValueError, KeyError, TypeError, AttributeError)


class AckedTable(faust.Table):
    """A table whose last changelog write can be awaited: ``await table.written()`` returns
    once the broker acknowledged it."""

    last_write: asyncio.Future | None = None

    def send_changelog(self, *args, **kwargs):
        self.last_write = super().send_changelog(*args, **kwargs)
        return self.last_write

    async def written(self) -> None:
        if self.last_write is not None:
            await self.last_write


class ReporterSensor(faust.Sensor):
    """Feeds a ``MetricsReporter`` from inside Faust, DS2-style: useful time runs from
    ``on_stream_event_in`` to ``on_stream_event_out``, so waiting for input never counts.

    From the start of a rebalance to its end, which Faust signals only once the tables are
    recovered from their changelogs and the streams resume, the worker is not ready: it
    processes nothing, and its reports say why."""

    def __init__(self, reporter: MetricsReporter, input_topic: str, output_topic: str | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reporter = reporter
        self.input_topic = input_topic
        self.output_topic = output_topic
        self.next_offsets: dict[TP, int] = {}

    def on_rebalance_start(self, app: faust.App) -> dict:
        self.reporter.set_ready(False)
        return super().on_rebalance_start(app)

    def on_rebalance_end(self, app: faust.App, state: dict) -> None:
        super().on_rebalance_end(app, state)
        self.reporter.set_ready(True)

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT, event: EventT) -> dict:
        self.next_offsets[tp] = offset + 1
        return {"started": time.perf_counter()}

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: StreamT, event: EventT, state: dict | None = None
    ) -> None:
        if state is None:
            return
        self.reporter.add_useful_time(time.perf_counter() - state["started"])
        self.reporter.record_in()
        if event.message.timestamp:
            self.reporter.observe_latency(max(0.0, time.time() - event.message.timestamp) * 1000)

    def on_send_initiated(self, producer, topic: str, message, keysize: int, valsize: int) -> None:
        if topic == self.output_topic:
            self.reporter.record_out()

    def lag(self, app: faust.App, broker: BrokerLag) -> int:
        """Records behind the log end on this worker's assigned input partitions, those it
        has not read from yet (recovering, just assigned) included."""
        assigned = [tp for tp in list(app.consumer.assignment()) if tp.topic == self.input_topic]
        # A TP is a (topic, partition) tuple: the positions are keyed as the broker's are.
        return broker(assigned, self.next_offsets)


# The SASL mechanisms aiokafka speaks with a user name and password.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def tls_context(options: dict) -> ssl.SSLContext:
    """librdkafka's TLS options (``LASTREAM_KAFKA_EXTRA``) as an SSL context: the CA to
    trust, the client certificate and its key, host name checking."""
    ca = options.get("ssl.ca.location")
    ca_dir = ca is not None and Path(ca).is_dir()
    context = ssl.create_default_context(cafile=None if ca_dir else ca, capath=ca if ca_dir else None)
    if cert := options.get("ssl.certificate.location"):
        context.load_cert_chain(cert, options.get("ssl.key.location"), options.get("ssl.key.password"))
    if str(options.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        context.check_hostname = False
    return context


def broker_credentials(kafka: KafkaSettings) -> faust.auth.Credentials | None:
    """The ``LASTREAM_KAFKA_*`` security settings in Faust's terms, so the workers reach a
    secured cluster like every other LaStream client; None for PLAINTEXT."""
    protocol = kafka.security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    context = tls_context(kafka.extra_options()) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if protocol not in ("SASL_PLAINTEXT", "SASL_SSL"):
        raise ValueError(f"unknown LASTREAM_KAFKA_SECURITY_PROTOCOL {kafka.security_protocol!r}")
    mechanism = (kafka.sasl_mechanism or "").upper()
    if mechanism not in SASL_MECHANISMS:
        raise ValueError(
            f"WordCount's workers speak SASL {', '.join(SASL_MECHANISMS)}; "
            f"LASTREAM_KAFKA_SASL_MECHANISM is {kafka.sasl_mechanism!r}"
        )
    password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    return faust.SASLCredentials(
        username=kafka.sasl_username, password=password, mechanism=mechanism, ssl_context=context
    )


def build_app(operator: str, wc: WordCountSettings, settings: LastreamSettings, datadir: Path) -> faust.App:
    app = ContiguousApp(  # skips no input record at a jump
        wc.faust_id(operator),
        broker=f"kafka://{settings.kafka.bootstrap}",
        broker_credentials=broker_credentials(settings.kafka),
        web_enabled=False,
        store="memory://",
        datadir=str(datadir),
        topic_partitions=wc.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        # One machine: detect a departed member fast and rebalance without waiting.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=20.0,
        broker_commit_interval=1.0,
        table_standby_replicas=0,
        TableManager=SeekFirstTableManager,  # skips no input record after a rebalance
    )
    cost = wc.cost_s(operator)

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")

    words = topic(wc.words_topic)
    counts_out = topic(wc.counts_topic)
    deadletters = topic(settings.topics.deadletter)

    async def reject(event: EventT, error: Exception) -> None:
        """A record this operator cannot read goes to the dead-letter topic; the stream goes on."""
        m = event.message
        letter = dead_letter(
            m.topic, m.partition, m.offset, m.key, m.value, f"{type(error).__name__}: {error}", app.conf.id
        )
        await deadletters.send(key=m.topic.encode(), value=letter.to_bytes())
        log.warning("dead-lettered %s[%d]@%d: %s", m.topic, m.partition, m.offset, letter.error)

    if operator == "splitter":

        @app.agent(topic(wc.sentences_topic))
        async def split(stream: StreamT) -> None:
            async for event in stream.events():
                try:
                    text = json.loads(event.value)["text"].split()
                except BAD_RECORD as exc:
                    await reject(event, exc)
                    continue
                await asyncio.sleep(cost)
                origin = {"p": event.message.partition, "o": event.message.offset}
                for i, word in enumerate(text[:MAX_WORDS_PER_SENTENCE]):
                    value = json.dumps(origin | {"i": i}).encode()
                    await words.send(key=word.encode(), value=value, timestamp=event.message.timestamp)

    elif operator == "counter":
        # Per word: its count and, per sentences partition, the last position counted (module docstring).
        counts = app.tables.add(
            AckedTable(
                app, name="counts", default=dict, beacon=app.tables.beacon, partitions=wc.partitions, key_type=bytes
            )
        )

        @app.agent(words)
        async def count(stream: StreamT) -> None:
            async for event in stream.events():
                try:
                    origin = json.loads(event.value)
                    sentences = str(int(origin["p"]))
                    position = int(origin["o"]) * MAX_WORDS_PER_SENTENCE + int(origin["i"])
                    word = event.key.decode()
                except BAD_RECORD as exc:
                    await reject(event, exc)
                    continue
                await asyncio.sleep(cost)
                tally = counts[event.key]
                last = tally.get("last", {})
                if position <= last.get(sentences, -1):
                    continue  # a replayed word, counted already
                n = tally.get("n", 0) + 1
                counts[event.key] = {"n": n, "last": last | {sentences: position}}
                await counts.written()
                value = json.dumps({"word": word, "count": n}).encode()
                await counts_out.send(key=event.key, value=value, timestamp=event.message.timestamp)

    elif operator == "sink":
        latest = LatestCounts(wc.sink_max_words)
        topk_out = topic(wc.topk_topic)

        @app.agent(counts_out)
        async def sink(stream: StreamT) -> None:
            async for event in stream.events():
                try:
                    update = json.loads(event.value)
                    word, count = str(update["word"]), int(update["count"])
                except BAD_RECORD as exc:
                    await reject(event, exc)
                    continue
                await asyncio.sleep(cost)
                latest.update(word, count)

        @app.timer(interval=wc.topk_interval_s)
        async def publish_topk() -> None:
            if latest:
                top = latest.top(wc.topk)
                await topk_out.send(key=b"topk", value=json.dumps(top).encode())

    else:
        raise ValueError(f"unknown WordCount operator {operator!r}; expected splitter, counter or sink")
    return app


def input_topic(operator: str, wc: WordCountSettings) -> str:
    return {"splitter": wc.sentences_topic, "counter": wc.words_topic, "sink": wc.counts_topic}[operator]


def output_topic(operator: str, wc: WordCountSettings) -> str | None:
    return {"splitter": wc.words_topic, "counter": wc.counts_topic, "sink": wc.topk_topic}.get(operator)


def run(
    operator: str, settings: LastreamSettings, wc: WordCountSettings, index: int = 0, state_file: str | None = None
) -> None:
    """Run one worker until SIGTERM/SIGINT; Faust leaves the consumer group cleanly on the way out."""
    topics.ensure(settings, wc)
    with tempfile.TemporaryDirectory(prefix=f"lastream-{wc.faust_id(operator)}-{index}-") as datadir:
        _run_worker(operator, settings, wc, index, state_file, Path(datadir))


def _run_worker(
    operator: str, settings: LastreamSettings, wc: WordCountSettings, index: int, state_file: str | None, datadir: Path
) -> None:
    app = build_app(operator, wc, settings, datadir)
    broker = BrokerLag(app.conf.id, settings.kafka, timeout_s=wc.metrics_interval_s)
    reporter = MetricsReporter(
        app=wc.app,
        operator=operator,
        upstreams=UPSTREAMS[operator],
        input_partitions=wc.partitions,
        parallelism=lambda: parallelism_from_state(state_file),
        lag=lambda: sensor.lag(app, broker),
        instance_id=f"{socket.gethostname()}/{operator}-{index}/{os.getpid()}",
        interval_s=wc.metrics_interval_s,
        settings=settings,
        ready=False,  # until its first rebalance, with its recovery, ends
    )
    if wc.metrics_enabled:
        sensor = ReporterSensor(reporter, input_topic(operator, wc), output_topic(operator, wc))
        app.sensors.add(sensor)
        reporter.start()
    # The supervisor rotates this worker's output; the filter keeps an outage's error flood out of it.
    worker = faust.Worker(
        app, loglevel="WARNING", quiet=True, redirect_stdouts=False, logging_config=logging_config("WARNING")
    )
    try:
        worker.execute_from_commandline()
    finally:
        if wc.metrics_enabled:
            reporter.stop()
        broker.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(
        os.environ["LASTREAM_WORKER_OPERATOR"],
        LastreamSettings(),
        WordCountSettings(),
        index=int(os.environ.get("LASTREAM_WORKER_INDEX", "0")),
        state_file=os.environ.get("LASTREAM_WORKER_STATE"),
    )


if __name__ == "__main__":
    main()
