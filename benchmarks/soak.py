"""Soak: the agent's memory over a long run of many apps whose workers keep restarting.

    python benchmarks/soak.py [out.json] [--minutes 30] [--apps 300] [--instances 8]

The service's own per-app state (``AgentService.controller``, capped at
``LASTREAM_AGENT_MAX_APPS``) is driven as the service drives it, without Kafka: every
instance reports every (simulated) second, each app's cycle ticks, commands are
acknowledged a few seconds later or never (the ack timeout), and every instance restarts
under a new id every few minutes. A WordCount sink's latest counts take words never seen
before all along. The resident set size is sampled every 10 s of real time; it must stay
flat once the first windows are full. Simulated time runs as fast as the CPU allows.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from lastream_stream.agent.controller import ControllerSettings
from lastream_stream.agent.service import AgentService
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.logs import setup_logging
from lastream_stream.policy.base import Decision
from lastream_stream.policy.ds2 import optimal_parallelism
from lastream_stream.settings import LastreamSettings
from lastream_stream.wire.contracts import CommandAck, MetricsReport, ScalingCommand
from wordcount_app.settings import WordCountSettings
from wordcount_app.topk import LatestCounts

SAMPLE_S = 10.0
RESTART_EVERY_S = 300  # simulated seconds between two restarts of an instance (a new id)
ACK_AFTER_S = 3  # simulated seconds from a command to its ack
UNACKED = 0.1  # commands whose ack never comes
CAPACITY = 40.0  # records a worker instance takes per second
PAST_S = 30 * 86400  # more simulated time than any run covers


class DS2:
    """DS2's optimum every window: a cheap policy that changes the parallelism as the rate swings."""

    name = "ds2"

    def decide(self, graph, context=None):
        return Decision.single(self.name, graph, optimal_parallelism(graph))


def report(app: int, operator: str, instance_id: str, now: float, records: float, useful_s: float, **fields):
    return MetricsReport(
        app=f"app{app}",
        operator=operator,
        instance_id=instance_id,
        interval_end=now,
        interval_s=1.0,
        records_in=int(records),
        records_out=int(records),
        useful_time_s=useful_s,
        **fields,
    )


def reports(app: int, now: float, t0: float, instances: int, parallelism: int) -> list[MetricsReport]:
    """A source at a rate that swings over 10 minutes, and a worker operator of ``parallelism``
    instances (at most ``instances`` report) taking ``CAPACITY`` records per busy second each."""
    rate = 100 + 80 * math.sin(2 * math.pi * (now - t0) / 600 + app)
    epoch = int((now - t0 + app) // RESTART_EVERY_S)  # a restart gives every instance a new id
    source = report(app, "source", f"src-{epoch}", now, rate, 0.1, parallelism=1, upstreams=[])
    reporting = min(parallelism, instances)
    processed = min(rate / reporting, CAPACITY)
    work = [
        report(
            app,
            "work",
            f"w{k}-{epoch}",
            now,
            processed,
            processed / CAPACITY,
            lag=0,
            latency_p50_ms=20.0,
            parallelism=parallelism,
            upstreams=["source"],
            input_partitions=instances,
        )
        for k in range(reporting)
    ]
    return [source, *work]


def soak(minutes: float, n_apps: int, instances: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    checkpoint = Path(tempfile.mkdtemp(prefix="lastream-soak-")) / "checkpoint.pt"
    service = AgentService(
        LastreamSettings(),
        AgentServiceSettings(checkpoint=checkpoint, llm=False, metrics_enabled=False, controller=ControllerSettings()),
        agent=DS2(),
    )
    sink = LatestCounts(WordCountSettings().sink_max_words)
    parallelism = dict.fromkeys(range(n_apps), 1)
    acks: list[tuple[float, ScalingCommand]] = []
    process = psutil.Process()
    started = next_sample = time.monotonic()
    # Reports may not be dated ahead of the real clock: simulated time starts far enough back.
    t0 = now = service.started_at = time.time() - PAST_S
    words, samples = 0, []
    while time.monotonic() - started < minutes * 60:
        now += 1.0
        for app in range(n_apps):
            controller = service.controller(f"app{app}")
            if controller is None:
                continue  # beyond the agent's cap on apps
            for report in reports(app, now, t0, instances, parallelism[app]):
                controller.on_report(report, received_at=now)
            for action in controller.tick(now):
                if isinstance(action.message, ScalingCommand) and rng.random() > UNACKED:
                    acks.append((now + ACK_AFTER_S, action.message))
        due = [command for at, command in acks if at <= now]
        acks = [(at, command) for at, command in acks if at > now]
        for command in due:
            parallelism[int(command.app.removeprefix("app"))] = command.target.get("work", 1)
            applied = {"decision_id": command.decision_id, "generation": command.generation, "applied": command.target}
            service.controllers[command.app].on_ack(CommandAck(app=command.app, status="applied", **applied), now)
        for _ in range(100):
            words += 1
            sink.update(f"word{words}", rng.randint(1, 1000))
        if time.monotonic() >= next_sample:
            next_sample += SAMPLE_S
            samples.append(
                {
                    "elapsed_s": round(time.monotonic() - started, 1),
                    "simulated_s": round(now - t0),
                    "rss_mb": round(process.memory_info().rss / 2**20, 1),
                    "apps": len(service.controllers),
                    "reports_kept": sum(len(c.reports) for c in service.controllers.values()),
                    "commands": sum(c.commands for c in service.controllers.values()),
                    "sink_words": len(sink),
                }
            )
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).parent / "results" / "soak.json")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--apps", type=int, default=300, help="more than LASTREAM_AGENT_MAX_APPS (200): the cap is hit")
    parser.add_argument("--instances", type=int, default=8, help="most instances of an app's worker operator")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    setup_logging("WARNING")
    samples = soak(args.minutes, args.apps, args.instances, args.seed)
    table = Table(title=f"soak: {args.apps} apps, RSS every {SAMPLE_S:.0f} s")
    for column in samples[0]:
        table.add_column(column, justify="right")
    for sample in samples:
        table.add_row(*(str(v) for v in sample.values()))
    Console().print(table)
    settled = samples[len(samples) // 4 :]  # after the first windows filled
    growth = settled[-1]["rss_mb"] - settled[0]["rss_mb"]
    Console().print(f"RSS growth after the first quarter: {growth:+.1f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "samples": samples, "growth_mb": growth}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
