"""Fixtures that run real WordCount worker processes against the real broker."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from scrape import free_port

from lastream_stream.kafka.clients import KafkaClients, TopicSpec
from lastream_stream.settings import LastreamSettings
from wordcount_app import topics
from wordcount_app.settings import WordCountSettings
from wordcount_app.source import corpus
from wordcount_app.topology import worker_env


@pytest.fixture
def supervisor_home(tmp_path, monkeypatch):
    # The supervisor runs as a subprocess: it reads its settings from the environment.
    monkeypatch.setenv("LASTREAM_SUPERVISOR_HOME", str(tmp_path / "supervisor"))
    monkeypatch.setenv("LASTREAM_SUPERVISOR_SETTLE_S", "0.5")
    monkeypatch.setenv("LASTREAM_SUPERVISOR_METRICS_PORT", str(free_port()))
    return tmp_path / "supervisor"


@pytest.fixture
def wc() -> WordCountSettings:
    """Fast, finite WordCount: the corpus once, light costs, short metric intervals."""
    return WordCountSettings(
        prefix=f"wc-{uuid.uuid4().hex[:8]}",
        repeat=1,
        rate=400,
        cost_splitter_ms=2,
        cost_counter_ms=0.5,
        cost_sink_ms=0.1,
        metrics_interval_s=1.0,
        partitions=4,
    )


@pytest.fixture
def spawn_worker(
    settings: LastreamSettings, wc: WordCountSettings, tmp_path
) -> Iterator[Callable[..., subprocess.Popen]]:
    procs: list[subprocess.Popen] = []

    def spawn(operator: str, index: int = 0) -> subprocess.Popen:
        env = (
            os.environ
            | worker_env(settings, wc)
            | {"LASTREAM_WORKER_OPERATOR": operator, "LASTREAM_WORKER_INDEX": str(index)}
        )
        with open(tmp_path / f"{operator}-{index}.log", "wb") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "wordcount_app.worker"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_group(clients: KafkaClients, group: str, members: int, timeout_s: float = 60.0) -> None:
    """Wait until the broker reports the consumer group stable with ``members`` members."""
    deadline = time.monotonic() + timeout_s
    state = ("?", 0)
    while time.monotonic() < deadline:
        state = clients.group_state(group)
        if state == ("STABLE", members):
            return
        time.sleep(0.3)
    raise AssertionError(f"group {group} not stable with {members} member(s) after {timeout_s} s: {state}")


def expected_counts(repeat: int = 1) -> dict[str, int]:
    return dict(collections.Counter(w for line in corpus() for w in line.split() for _ in range(repeat)))


def final_counts(clients: KafkaClients, topic: str, expected_total: int, timeout_s: float = 90.0) -> dict[str, int]:
    """Latest count per word on the counter's output, read until the totals add up or time runs out."""
    latest: dict[str, int] = {}
    with clients.consumer(f"reader-{uuid.uuid4().hex[:8]}", [topic]) as consumer:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                update = json.loads(msg.value())
                latest[update["word"]] = max(latest.get(update["word"], 0), update["count"])
            elif sum(latest.values()) >= expected_total:
                break  # caught up and nothing more arrives: a duplicate would have shown by now
    return latest


def committed_lag(clients: KafkaClients, group: str, topic: str, timeout_s: float = 15.0) -> int:
    """The group's lag on ``topic`` once it is 0, or after ``timeout_s``: it commits every second."""
    deadline = time.monotonic() + timeout_s
    while True:
        lag = clients.group_lag(group, topic)
        if lag == 0 or time.monotonic() > deadline:
            return lag
        time.sleep(0.5)


def counter_backlog(
    settings: LastreamSettings, clients: KafkaClients, wc: WordCountSettings, records: int, words: int
) -> None:
    """A counter's changelog of ``records`` counts, as a long-running counter leaves it, and
    ``words`` new words for it to count: ``word0``..``word7`` in turn, from sentences partition 0."""
    topics.ensure(settings, wc)
    changelog = f"{wc.faust_id('counter')}-counts-changelog"
    clients.ensure_topics([TopicSpec(changelog, wc.partitions, config=(("cleanup.policy", "compact"),))])
    count = json.dumps({"n": 1, "last": {"0": 0}}).encode()
    with clients.producer(**{"linger.ms": 50}) as producer:
        for i in range(records):
            producer.produce(changelog, key=f"w{i}".encode(), value=count, partition=i % wc.partitions)
            if i % 10_000 == 0:
                producer.poll(0)
        for i in range(words):
            value = json.dumps({"p": 0, "o": i, "i": 0}).encode()
            producer.produce(wc.words_topic, key=f"word{i % 8}".encode(), value=value)
