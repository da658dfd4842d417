"""WordCount counts every sentence the source produced exactly once, through kill -9 of
splitter and counter workers, a scale-in, and a restart on a long changelog."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import threading
import time

from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.supervisor import Supervisor, SupervisorSettings
from lastream_stream.wire.contracts import ScalingCommand
from wordcount_app import source
from wordcount_app.settings import WordCountSettings
from wordcount_app.topology import app_spec

from .conftest import committed_lag, counter_backlog, final_counts, wait_group

CHANGELOG_RECORDS = 30_000
WORDS = 40


def test_a_counter_restarted_on_a_long_changelog_counts_every_new_word(settings, clients, wc, spawn_worker):
    counter_backlog(settings, clients, wc, CHANGELOG_RECORDS, WORDS)

    spawn_worker("counter")

    expected = {f"word{k}": WORDS // 8 for k in range(8)}
    assert final_counts(clients, wc.counts_topic, sum(expected.values()), timeout_s=60) == expected
    assert committed_lag(clients, wc.faust_id("counter"), wc.words_topic) == 0


def sentence_counts(clients: KafkaClients, wc: WordCountSettings) -> dict[str, int]:
    """Word counts of every sentence on the sentences topic: what the source produced."""
    counts: collections.Counter[str] = collections.Counter()
    for msg in clients.read_history(clients.end_offsets([wc.sentences_topic])):
        counts.update(json.loads(msg.value())["text"].split())
    return dict(counts)


def assert_counted_once(clients: KafkaClients, wc: WordCountSettings, timeout_s: float) -> int:
    """Every word of every sentence on the sentences topic counted exactly once on the
    counter's output, within ``timeout_s``; the number of words."""
    expected = sentence_counts(clients, wc)
    got = final_counts(clients, wc.counts_topic, sum(expected.values()), timeout_s)
    wrong = {w: (got.get(w, 0), n) for w, n in expected.items() if got.get(w, 0) != n}
    missing, extra = sum(n - c for c, n in wrong.values() if c < n), sum(c - n for c, n in wrong.values() if c > n)
    assert not wrong, f"{missing} words never counted, {extra} counted twice: {dict(list(wrong.items())[:10])}"
    return sum(expected.values())


def test_counts_stay_exact_through_kills_of_splitters_and_counters_and_a_scale_in(settings, clients, wc, tmp_path):
    wc = wc.model_copy(update={"repeat": 0, "rate": 20.0, "cost_splitter_ms": 20.0, "cost_counter_ms": 5.0})
    home = tmp_path / "run"
    config = SupervisorSettings(
        home=home, settle_s=0.5, backoff_initial_s=0.2, initial={"splitter": 2, "counter": 3, "sink": 1}
    )
    supervisor = Supervisor(settings, app_spec(settings, wc), config, clients)
    stop_supervisor, stop_source = threading.Event(), threading.Event()
    supervising = threading.Thread(target=supervisor.run, args=(stop_supervisor,), daemon=True)
    sent: list[int] = []
    producing = threading.Thread(target=lambda: sent.append(source.run(settings, wc, stop_source)), daemon=True)
    rng = random.Random(14)

    def kill(operator: str) -> None:
        """SIGKILL one running instance of ``operator``, then wait for its replacement to join."""
        running = supervisor.status().running[operator]
        pid_file = home / wc.app / f"{operator}-{rng.randrange(running)}.pid"
        os.kill(json.loads(pid_file.read_text())["pid"], signal.SIGKILL)
        time.sleep(2.0)  # processing goes on in the others while the replacement starts
        wait_group(clients, wc.faust_id(operator), running, timeout_s=60)

    supervising.start()
    try:
        for operator, n in config.initial.items():
            wait_group(clients, wc.faust_id(operator), n)
        producing.start()
        for operator in ("counter", "splitter", "counter", "splitter"):
            time.sleep(3.0)
            kill(operator)
        command = ScalingCommand(app=wc.app, generation=1, target={"counter": 2}, reason="test")
        with clients.producer() as producer:
            producer.produce(settings.topics.control, key=wc.app.encode(), value=command.to_bytes())
        wait_group(clients, wc.faust_id("counter"), 2, timeout_s=60)
        time.sleep(3.0)
        stop_source.set()
        producing.join(30)
        assert sent and sent[0] > 0, "the source did not stop"

        assert assert_counted_once(clients, wc, timeout_s=60) > 1000
        assert committed_lag(clients, wc.faust_id("counter"), wc.words_topic) == 0
    finally:
        stop_source.set()
        stop_supervisor.set()
        supervising.join(60)
