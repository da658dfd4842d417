"""The WordCount source through a broker outage: a real source process, a private broker
stopped and restarted on the same data, every sentence on the topic exactly once."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid

from lastream_stream.kafka.clients import KafkaClients, TopicSpec, project_topics
from lastream_stream.settings import KafkaSettings, LastreamSettings
from wordcount_app import source, topics
from wordcount_app.settings import WordCountSettings
from wordcount_app.topology import worker_env

OUTAGE_S = 20.0
RATE = 20.0
QUEUE_MAX = 100
FINAL_COUNTS = re.compile(r"generated (\d+), delivered (\d+), failed (\d+), pending (\d+)")


def wait_sentences(clients: KafkaClients, topic: str, at_least: int, timeout_s: float = 30.0) -> int:
    """Ask the broker until ``topic`` holds ``at_least`` messages; return how many it holds."""
    deadline = time.monotonic() + timeout_s
    while (held := sum(clients.end_offsets([topic]).values())) < at_least:
        assert time.monotonic() < deadline, f"{topic} holds {held} of {at_least} sentences after {timeout_s} s"
        time.sleep(0.2)
    return held


def test_no_sentence_is_lost_or_duplicated_through_a_broker_outage(private_broker, tmp_path):
    broker = private_broker()
    # A client timeout well under the outage: the source must outlast any timeout of its own.
    settings = LastreamSettings(kafka=KafkaSettings(bootstrap=broker.bootstrap, timeout_s=5.0))
    clients = KafkaClients(settings.kafka)
    clients.ensure_topics(project_topics(settings.topics))
    # A queue of QUEUE_MAX sentences fills 5 s into the outage: the source must then wait, not drop.
    wc = WordCountSettings(
        prefix=f"wc-{uuid.uuid4().hex[:8]}", rate=RATE, partitions=2, metrics_interval_s=1.0, source_queue_max=QUEUE_MAX
    )
    topics.ensure(settings, wc)
    log_path = tmp_path / "source.log"
    launched = time.monotonic()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wordcount_app.source"],
            env=os.environ | worker_env(settings, wc),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_sentences(clients, wc.sentences_topic, 40)
        broker.stop()
        assert not broker.status().running
        time.sleep(OUTAGE_S)  # the fault itself lasts this long
        assert proc.poll() is None, f"the source died during the outage:\n{log_path.read_text()[-3000:]}"
        broker.start()
        held = wait_sentences(clients, wc.sentences_topic, 1)
        wait_sentences(clients, wc.sentences_topic, held + int(3 * RATE), timeout_s=60.0)
        ran_s = time.monotonic() - launched
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()

    ends = clients.end_offsets([wc.sentences_topic])
    seqs = sorted(json.loads(msg.value())["seq"] for msg in clients.read_history(ends))
    duplicates = len(seqs) - len(set(seqs))
    missing = sorted(set(range(seqs[-1] + 1)) - set(seqs))
    assert (duplicates, missing[:20], len(missing)) == (0, [], 0), f"{duplicates} duplicate(s), missing {missing[:20]}"

    log_text = log_path.read_text()
    final = FINAL_COUNTS.findall(log_text)
    assert final, f"no final counts in the source's log:\n{log_text[-3000:]}"
    generated, delivered, failed, pending = map(int, final[-1])
    assert (failed, pending) == (0, 0)
    assert generated == delivered == len(seqs)
    # Unbounded, it would have generated through the outage too.
    assert generated < RATE * (ran_s - OUTAGE_S + QUEUE_MAX / RATE + 2), "the source did not wait on its full queue"


def test_failed_deliveries_are_counted_and_logged(settings, clients, wc, caplog):
    # The broker refuses every sentence for good: a record batch over the topic's limit.
    clients.ensure_topics([TopicSpec(wc.sentences_topic, wc.partitions, config=(("max.message.bytes", "20"),))])

    with caplog.at_level(logging.INFO, logger="wordcount_app.source"):
        delivered = source.run(settings, wc)

    lines = len(source.corpus())
    assert delivered == 0
    assert FINAL_COUNTS.findall(caplog.text)[-1] == (str(lines), "0", str(lines), "0")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == lines
    assert all("was not delivered" in e and "too large" in e.lower() for e in errors), errors[:3]
