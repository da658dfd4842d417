"""How the WordCount splitter's sustained rate scales with its parallelism, and what the
metrics sensor costs.

For each configuration: a fresh set of topics, ``p`` splitter worker processes, and a
source well above what one splitter sustains. After the consumer group is stable and a
warm-up, the processed rate is the growth of the group's committed offsets on the
sentences topic over the measurement window, read from the broker.

    .venv/bin/python benchmarks/wordcount_scaling.py [--seconds 20] [--out benchmarks/results/wordcount_scaling.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.settings import LastreamSettings
from wordcount_app import source
from wordcount_app.settings import WordCountSettings
from wordcount_app.topology import worker_env

log = logging.getLogger("wordcount_scaling")
SPLITTER_COST_MS = 30.0  # 33.3 sentences/s per instance at best


def wait_stable(clients: KafkaClients, group: str, members: int, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while clients.group_state(group) != ("STABLE", members):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{group} not stable with {members} members")
        time.sleep(0.5)


def measure(
    settings: LastreamSettings, parallelism: int, metrics: bool, rate: float, seconds: float, warmup: float
) -> dict:
    # The splitter cost its README table was measured at, whatever WordCount's default.
    wc = WordCountSettings(
        prefix=f"bench-{uuid.uuid4().hex[:8]}", rate=rate, metrics_enabled=metrics, cost_splitter_ms=SPLITTER_COST_MS
    )
    clients = KafkaClients(settings.kafka)
    env = os.environ | worker_env(settings, wc) | {"LASTREAM_WORKER_OPERATOR": "splitter"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "wordcount_app.worker"],
            env=env | {"LASTREAM_WORKER_INDEX": str(i)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(parallelism)
    ]
    stop = threading.Event()
    producer = threading.Thread(target=source.run, args=(settings, wc, stop), daemon=True)
    try:
        group = wc.faust_id("splitter")
        wait_stable(clients, group, parallelism)
        producer.start()
        time.sleep(warmup)
        start_offsets, started = clients.committed_total(group, wc.sentences_topic), time.monotonic()
        time.sleep(seconds)
        end_offsets, ended = clients.committed_total(group, wc.sentences_topic), time.monotonic()
    finally:
        stop.set()
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
        producer.join(10)
    processed = (end_offsets - start_offsets) / (ended - started)
    capacity = parallelism * 1000.0 / wc.cost_splitter_ms
    return {
        "parallelism": parallelism,
        "metrics_sensor": metrics,
        "source_rate": rate,
        "processed_rate": round(processed, 1),
        "ideal_rate": round(min(rate, capacity), 1),
        "efficiency": round(processed / min(rate, capacity), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per configuration")
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=200.0, help="source sentences/s (saturates 4 default splitters)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/wordcount_scaling.json"))
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(message)s", handlers=[RichHandler(show_path=False)])
    settings = LastreamSettings()
    configs = [(1, True), (2, True), (4, True), (1, False)]
    rows = []
    for parallelism, metrics in configs:
        log.info("splitter x%d, metrics sensor %s ...", parallelism, "on" if metrics else "off")
        rows.append(measure(settings, parallelism, metrics, args.rate, args.seconds, args.warmup))
    table = Table(title="WordCount splitter: sustained rate (sentences/s)")
    for column in rows[0]:
        table.add_column(column.replace("_", " "), justify="right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "seconds": args.seconds, "at": time.time()}, indent=2))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
