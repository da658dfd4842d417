"""A fetch position that jumps past unread records (as Faust leaves it after dropping a
fetched batch): plain Faust commits past the records it never processed, ``ContiguousApp``
fetches them again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from lastream_stream.kafka.clients import KafkaClients

from .conftest import committed_lag

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("jump_worker.py")
BEFORE = 20  # records produced before the jump: offsets 0..19
JUMP_TO = BEFORE + 50  # the worker jumps there once it has processed the last of them
TOTAL = JUMP_TO + 30


def produce(clients: KafkaClients, topic: str, count: int) -> None:
    with clients.producer() as producer:
        for _ in range(count):
            producer.produce(topic, value=b"x")


def run_jump(kind, clients, make_topic, group_id, reader, tmp_path) -> tuple[set[int], int, str]:
    """Offsets the worker processed, its group's lag once committed up to the end, and its log."""
    source, sink = make_topic(prefix="jump-in"), make_topic(prefix="jump-out")
    produce(clients, source, BEFORE)
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    args = [kind, clients.settings.bootstrap, group_id, source, sink, str(BEFORE - 1), str(JUMP_TO)]
    log_path = tmp_path / f"{kind}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(WORKER), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        reader(sink, BEFORE)  # the jump is done before the last of these is written
        produce(clients, source, TOTAL - BEFORE)
        lag = committed_lag(clients, group_id, source, timeout_s=15)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    written = sum(clients.end_offsets([sink]).values())
    processed = {int(m.value()) for m in reader(sink, written)}
    return processed, lag, log_path.read_text()


def test_contiguous_app_processes_every_record_before_committing_it(clients, make_topic, group_id, reader, tmp_path):
    processed, lag, log = run_jump("contiguous", clients, make_topic, group_id, reader, tmp_path)

    missing = sorted(set(range(TOTAL)) - processed)
    assert lag == 0, f"committed {TOTAL - lag} of {TOTAL}\n{log}"
    assert not missing, (
        f"{len(missing)} record(s) never processed ({missing[0]}..{missing[-1]}), committed {TOTAL - lag}"
    )


def test_plain_faust_commits_past_the_records_it_skipped(clients, make_topic, group_id, reader, tmp_path):
    """The fault the test above guards against, reproduced: were it gone (a Faust fix, or a
    jump this worker no longer makes), ``ContiguousApp`` would be passing untested."""
    processed, lag, _ = run_jump("plain", clients, make_topic, group_id, reader, tmp_path)

    assert lag == 0
    assert sorted(set(range(TOTAL)) - processed) == list(range(BEFORE, JUMP_TO))
