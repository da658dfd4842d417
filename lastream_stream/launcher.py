"""``lastream wordcount up`` and ``lastream up``: the whole pipeline on one machine.

Each part runs as the process it would be in production (the source and the supervisor,
which starts the workers); ``up`` adds the agent, in this process so it can stop after a
given number of decisions and summarise them. Ctrl-C stops everything started here.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from lastream_stream.broker import LocalBroker
from lastream_stream.contracts import ScalingCommand
from lastream_stream.control import latest_commands
from lastream_stream.dashboard import AppMonitor
from lastream_stream.kafka_clients import KafkaClients, project_topics
from lastream_stream.policy.ds2 import optimal_parallelism
from lastream_stream.service import AgentService, AgentServiceSettings, build_agent
from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor.workers import Worker, spawn, stop_workers
from wordcount_app import topics as wordcount_topics
from wordcount_app.settings import WordCountSettings
from wordcount_app.topology import app_spec, worker_env

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """The processes started for one WordCount run, stopped in reverse order."""

    settings: LastreamSettings
    wc: WordCountSettings
    log_dir: Path
    processes: list[Worker] = field(default_factory=list)

    def spawn(self, name: str, command: list[str], extra_env: dict[str, str]) -> Worker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = os.environ | worker_env(self.settings, self.wc) | extra_env
        log_path = self.log_dir / f"{name}.log"
        process = spawn(name, 0, command, env, log_path)  # the single instance of each part
        log.info("started %s (pid %d, log %s)", name, process.pid, log_path)
        self.processes.append(process)
        return process

    def stop(self, timeout_s: float = 40.0) -> None:
        for process in reversed(self.processes):  # one by one: the source stops before the supervisor
            stop_workers([process], timeout_s)
            log.info("stopped %s", process.operator)


def start_wordcount(settings: LastreamSettings, wc: WordCountSettings, initial: dict[str, int], log_dir: Path) -> Pipeline:
    """Topics, a fresh desired state (a command one generation past any earlier run's), the
    supervisor and the source."""
    clients = KafkaClients(settings.kafka)
    clients.ensure_topics(project_topics(settings.topics))
    wordcount_topics.ensure(settings, wc)
    spec = app_spec(settings, wc)
    target = {op: initial.get(op, 1) for op in spec.operators}
    previous = latest_commands(clients, settings.topics.control).get(wc.app)
    command = ScalingCommand(app=wc.app, generation=(previous.generation if previous else 0) + 1, target=target, reason="initial configuration of `up`")
    with clients.producer() as producer:
        producer.produce(settings.topics.control, key=wc.app.encode(), value=command.to_bytes())
    pipeline = Pipeline(settings, wc, log_dir)
    pipeline.spawn("supervisor", [sys.executable, "-m", "lastream_stream.supervisor", "--app", wc.app],
                   {"LASTREAM_SUPERVISOR_INITIAL": json.dumps(target)})  # fmt: skip
    pipeline.spawn("source", [sys.executable, "-m", "wordcount_app.source"], {})
    return pipeline


def ensure_broker(settings: LastreamSettings) -> LastreamSettings:
    """The configured cluster when LASTREAM_KAFKA_BOOTSTRAP is set, else the local broker."""
    if os.environ.get("LASTREAM_KAFKA_BOOTSTRAP"):
        return settings
    status = LocalBroker(settings.broker).start()
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"bootstrap": status.bootstrap})})


def wordcount_up(settings: LastreamSettings, wc: WordCountSettings, initial: dict[str, int], log_dir: Path,
                 duration_s: float | None = None) -> None:  # fmt: skip
    """Run WordCount with a live view until Ctrl-C (or ``duration_s``)."""
    settings = ensure_broker(settings)
    pipeline = start_wordcount(settings, wc, initial, log_dir)
    monitor = AppMonitor(settings, wc.app)
    deadline = time.monotonic() + duration_s if duration_s else None
    try:
        monitor.start()
        with Live(monitor.render(), refresh_per_second=1, console=Console()) as live:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(wc.metrics_interval_s)
                live.update(monitor.render())
    except KeyboardInterrupt:
        log.info("Ctrl-C: stopping the pipeline")
    finally:
        monitor.stop()
        pipeline.stop()


def up(settings: LastreamSettings, wc: WordCountSettings, initial: dict[str, int], log_dir: Path, max_decisions: int,
       service: AgentServiceSettings | None = None) -> dict:  # fmt: skip
    """The main job: broker, WordCount under-provisioned, the agent, a live view, a summary."""
    service = service or AgentServiceSettings()
    policy = build_agent(service)  # a checkpoint it cannot use stops it before anything starts
    settings = ensure_broker(settings)
    console = Console()
    agent = AgentService(settings, service, agent=policy)
    monitor = AppMonitor(settings, wc.app, decisions_kept=10)
    stop = threading.Event()
    agent_thread = threading.Thread(target=agent.run, args=(stop, max_decisions), name="agent", daemon=True)
    pipeline = start_wordcount(settings, wc, initial, log_dir)
    try:
        monitor.start()
        agent_thread.start()
        with Live(monitor.render(), refresh_per_second=1, console=console) as live:
            while agent_thread.is_alive():
                agent_thread.join(1.0)
                live.update(monitor.render())
    except KeyboardInterrupt:
        log.info("Ctrl-C: stopping the pipeline")
    finally:
        stop.set()
        if agent_thread.is_alive():
            agent_thread.join(30)
        monitor.stop()
        pipeline.stop()
    graph = monitor.window.graph(wc.app)  # the follow thread has stopped: no lock needed
    summary = summarise(agent, wc.app, graph)
    console.print(summary_table(summary))
    return summary


def summarise(agent: AgentService, app: str, graph) -> dict:
    controller = agent.controllers.get(app)
    rewards = controller.window_rewards if controller else []
    return {
        "decisions": controller.decisions if controller else 0,
        "commands": controller.commands if controller else 0,
        "outcomes_learnt": len(controller.rewards) if controller else 0,
        "reward_first_window": controller.first_window_reward if controller else None,
        "reward_last_window": rewards[-1] if rewards else None,
        "final_parallelism": graph.parallelism if graph else {},
        "ds2_optimum": optimal_parallelism(graph) if graph else {},
    }


def summary_table(summary: dict) -> Table:
    table = Table(title="LaStream run summary")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), f"{value:.3f}" if isinstance(value, float) else str(value))
    return table
