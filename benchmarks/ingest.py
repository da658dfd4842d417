"""How much one agent takes through the real broker, and what two agents in one group take.

Each step starts a fleet (``bench/fleet.py``: apps of chained operators, every instance
reporting every second) and the agent exactly as users run it, in a process of its own:
``lastream agent --no-llm --dry-run`` with the shipped learned model deciding, on fresh
topics and a fresh group. The fleet publishes for --seconds; then per step:

  offered /s       reports published per second (the publisher may fall short of the plan)
  lag start / end  the agent group's lag as the broker has it (committed every second),
                   averaged over the first and the last quarter of the step
  lag trend /s     slope of the lag over the second half: flat (about 0) means it keeps up
  CPU / RSS        the agent process's CPU (cores) over the step and its resident memory
  decisions /s     decision records (hold or recommendation) per second over the second half
  apps decided     apps with a decision in the last two windows of the step, of all apps
  age p50 / max    the decision records' ``window_age_s``: seconds from the newest report
                   in a decided window to its decision

Then the --pair-steps run again with two agents in one group: each one's apps and CPU.

    .venv/bin/python benchmarks/ingest.py [--seconds 60] [--steps 100,1000,...] [--pair-steps 10000,20000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from lastream_stream.bench.fleet import Fleet
from lastream_stream.kafka.clients import KafkaClients, project_topics
from lastream_stream.settings import LastreamSettings, TopicSettings
from lastream_stream.wire.contracts import DecisionRecord
from lastream_stream.wire.deadletter import BadMessage, parse

log = logging.getLogger("ingest")
WINDOW_S = 10.0  # the controller's default window, which the agents run with

# (apps, operators, instances): every instance reports every second.
STEPS = {
    100: (10, 5, 2),
    1_000: (100, 10, 1),
    5_000: (250, 10, 2),
    10_000: (1_000, 10, 1),
    20_000: (1_000, 10, 2),
}


@dataclass
class Agent:
    process: subprocess.Popen
    metrics_url: str
    cpu_at_start: float

    def cpu_s(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def rss_mb(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def apps_decided(self) -> int:
        """Apps this agent has published a decision for, from its own Prometheus metrics."""
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        return len(
            {
                sample.labels["app"]
                for family in text_string_to_metric_families(text)
                if family.name == "lastream_autoscaler_decisions"
                for sample in family.samples
                if sample.name.endswith("_total") and sample.value > 0 and sample.labels["kind"] != "outcome"
            }
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_agent(settings: LastreamSettings, group: str, home: Path, name: str) -> Agent:
    port = free_port()
    env = os.environ | {
        "LASTREAM_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
        "LASTREAM_TOPIC_METRICS": settings.topics.metrics,
        "LASTREAM_TOPIC_CONTROL": settings.topics.control,
        "LASTREAM_TOPIC_ACKS": settings.topics.acks,
        "LASTREAM_TOPIC_DECISIONS": settings.topics.decisions,
        "LASTREAM_TOPIC_DEADLETTER": settings.topics.deadletter,
        "LASTREAM_AGENT_GROUP": group,
        "LASTREAM_AGENT_MAX_APPS": "5000",
        "LASTREAM_AGENT_METRICS_PORT": str(port),
        "LASTREAM_LOG_LEVEL": "WARNING",
    }
    log_file = open(home / f"{name}.log", "w")  # noqa: SIM115 - the process writes it until it stops
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("lastream")), "agent", "--no-llm", "--dry-run"]
        + ["--checkpoint", str(home / f"{name}.pt")],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    agent = Agent(process, f"http://127.0.0.1:{port}/metrics", 0.0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # ready once it serves its metrics
        if process.poll() is not None:
            raise RuntimeError(f"agent {name} exited with {process.returncode}; see {home / f'{name}.log'}")
        try:
            urllib.request.urlopen(agent.metrics_url, timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        raise RuntimeError(f"agent {name} did not start in 120 s")
    agent.cpu_at_start = agent.cpu_s()
    return agent


def decisions(clients: KafkaClients, topic: str, since: float) -> list[DecisionRecord]:
    """Every decision record (not outcome) on ``topic`` dated after ``since``."""
    records = []
    ends = clients.end_offsets([topic])
    for msg in clients.read_history(ends):
        try:
            record = parse(DecisionRecord, msg.value())
        except BadMessage:
            continue
        if record.kind != "outcome" and record.at >= since:
            records.append(record)
    return records


def slope(points: list[tuple[float, int]]) -> float:
    if len(points) < 2:
        return 0.0
    return statistics.linear_regression([t for t, _ in points], [lag for _, lag in points]).slope


def run_step(clients: KafkaClients, base: LastreamSettings, rate: int, agents: int, seconds: float) -> dict:
    apps, operators, instances = STEPS[rate]
    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(
        metrics=f"ingest-{tag}.metrics",
        control=f"ingest-{tag}.control",
        acks=f"ingest-{tag}.acks",
        decisions=f"ingest-{tag}.decisions",
        deadletter=f"ingest-{tag}.deadletter",
        metrics_partitions=8,
    )
    clients.ensure_topics(project_topics(topics))
    settings = base.model_copy(update={"topics": topics})
    group = f"ingest-{tag}"
    fleet = Fleet(apps, operators, instances, interval_s=1.0, prefix=f"app{tag}")
    with tempfile.TemporaryDirectory() as home:
        running = [start_agent(settings, group, Path(home), f"agent{i}") for i in range(agents)]
        try:
            log.info("%d report(s)/s: %d apps x %d operators x %d instances, %d agent(s)", rate, *STEPS[rate], agents)
            published: list[int] = []
            started = time.time()

            def publish() -> None:
                with clients.producer(**{"linger.ms": 20, "queue.buffering.max.messages": 1_000_000}) as producer:
                    published.append(fleet.publish(producer, topics.metrics, seconds))

            publisher = threading.Thread(target=publish, daemon=True)
            publisher.start()
            lags: list[tuple[float, int]] = []
            while publisher.is_alive():
                time.sleep(2.0)
                lags.append((time.time() - started, clients.group_lag(group, topics.metrics)))
            publisher.join()
            ended = time.time()
            cpu = [(a.cpu_s() - a.cpu_at_start) / (ended - started) for a in running]
            rss = [a.rss_mb() for a in running]
            per_agent = [a.apps_decided() for a in running]
        finally:
            for agent in running:
                agent.process.terminate()
            for agent in running:
                agent.process.wait(60)
    records = decisions(clients, topics.decisions, started)
    second_half = [r for r in records if r.at >= started + seconds / 2]
    last_windows = {r.app for r in records if r.at >= ended - 2 * WINDOW_S}
    ages = sorted(r.window_age_s for r in records if r.window_age_s is not None)
    quarter = max(1, len(lags) // 4)
    return {
        "planned_per_s": rate,
        "apps": apps,
        "operators": operators,
        "instances": instances,
        "agents": agents,
        "offered_per_s": round(published[0] / seconds) if published else 0,
        "lag_start": round(statistics.fmean(lag for _, lag in lags[:quarter])),
        "lag_end": round(statistics.fmean(lag for _, lag in lags[-quarter:])),
        "lag_trend_per_s": round(slope(lags[len(lags) // 2 :]), 1),
        "agent_cpu_cores": [round(c, 2) for c in cpu],
        "agent_rss_mb": [round(m) for m in rss],
        "decisions_per_s": round(len(second_half) / (seconds / 2), 1),
        "apps_decided_last_two_windows": len(last_windows),
        "apps_decided_per_agent": per_agent,
        "age_p50_s": round(ages[len(ages) // 2], 2) if ages else None,
        "age_max_s": round(ages[-1], 2) if ages else None,
    }


def table(results: list[dict]) -> Table:
    t = Table(title="one agent's ingest through the real broker (learned policy, dry run)")
    columns = {
        "offered /s": lambda r: f"{r['offered_per_s']:,}",
        "apps x ops x inst": lambda r: f"{r['apps']} x {r['operators']} x {r['instances']}",
        "agents": lambda r: str(r["agents"]),
        "lag start/end": lambda r: f"{r['lag_start']:,} / {r['lag_end']:,}",
        "lag trend /s": lambda r: f"{r['lag_trend_per_s']:+,.0f}",
        "CPU cores": lambda r: " + ".join(f"{c:.2f}" for c in r["agent_cpu_cores"]),
        "RSS MB": lambda r: " + ".join(str(m) for m in r["agent_rss_mb"]),
        "decisions /s": lambda r: f"{r['decisions_per_s']:.1f}",
        "apps decided": lambda r: (
            f"{r['apps_decided_last_two_windows']} of {r['apps']}"
            + (f" ({' + '.join(map(str, r['apps_decided_per_agent']))})" if r["agents"] > 1 else "")
        ),
        "age p50 / max s": lambda r: f"{r['age_p50_s']} / {r['age_max_s']}",
    }
    for name in columns:
        t.add_column(name, justify="right")
    for r in results:
        t.add_row(*(f(r) for f in columns.values()))
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="publishing time per step")
    parser.add_argument(
        "--steps",
        default=",".join(map(str, STEPS)),
        help=f"report rates to run, of {', '.join(map(str, STEPS))} ('' for none)",
    )
    parser.add_argument(
        "--pair-steps",
        default="10000,20000",
        help="report rates to run again with two agents in the group ('' for none)",
    )
    parser.add_argument("--out", default="benchmarks/results/ingest.json")
    args = parser.parse_args()
    console = Console(width=180)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console)])
    base = LastreamSettings()
    clients = KafkaClients(base.kafka)
    clients.ensure_reachable()
    steps = [int(s) for s in args.steps.split(",") if s]
    runs = [(rate, 1) for rate in steps] + [(int(rate), 2) for rate in args.pair_steps.split(",") if rate]
    results = []
    for rate, agents in runs:
        results.append(run_step(clients, base, rate, agents, args.seconds))
        log.info("%s", results[-1])
    console.print(table(results))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"seconds": args.seconds, "window_s": WINDOW_S, "steps": results}, indent=2))
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
