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
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lastream_stream.agent.service import AgentService, build_agent
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.kafka.broker import LocalBroker
from lastream_stream.kafka.clients import KafkaClients, project_topics
from lastream_stream.kafka.control import control_signer, latest_commands
from lastream_stream.policy.ds2 import optimal_parallelism
from lastream_stream.policy.graph import AppGraph
from lastream_stream.policy.window import keeps_up
from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor.config import SupervisorSettings
from lastream_stream.supervisor.workers import Worker, spawn, stop_workers
from lastream_stream.tools.dashboard import AppMonitor
from lastream_stream.wire.contracts import ScalingCommand
from wordcount_app import topics as wordcount_topics
from wordcount_app.settings import UPSTREAMS, WordCountSettings
from wordcount_app.topology import app_spec, worker_env

log = logging.getLogger(__name__)

SOURCE_COMMAND = [sys.executable, "-m", "wordcount_app.source"]


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
        if self.settings.log_file is not None:
            # Never the file of `up` itself: each process rotates its own, with the same bounds.
            # What a child writes outside logging (a crash's traceback) follows its rotated part.
            env["LASTREAM_LOG_FILE"] = str(log_path)
        process = spawn(name, 0, command, env, log_path)  # the single instance of each part
        log.info("started %s (pid %d, log %s)", name, process.pid, log_path)
        self.processes.append(process)
        return process

    def stop_source(self) -> None:
        """The source stopped (its pending sentences flushed); the rest runs on."""
        source = next(p for p in self.processes if p.operator == "source")
        stop_workers([source], 10.0)
        self.processes.remove(source)

    def set_rate(self, rate: float) -> None:
        """A step in the app's input: the source restarted at ``rate`` sentences/s."""
        self.stop_source()
        self.wc = self.wc.model_copy(update={"rate": rate})
        self.spawn("source", SOURCE_COMMAND, {})

    def stop(self, timeout_s: float = 40.0) -> None:
        for process in reversed(self.processes):  # one by one: the source stops before the supervisor
            stop_workers([process], timeout_s)
            log.info("stopped %s", process.operator)


class KeepsUp:
    """Whether an app keeps up, judged on each fresh graph (say once a second) of a sliding
    window of its reports: every operator takes in at least ``fraction`` of what its
    upstreams emit (``window.keeps_up``) and the total lag is not growing, i.e. not above
    what it was ``lag_span_s`` earlier by more than the remaining ``1 - fraction`` of what
    the operators took in meanwhile (a healthy app's lag moves by a few records).

    Also remembers when it first kept up, and how many commands the agent had issued then.
    """

    def __init__(self, operators: Iterable[str], fraction: float = 0.95, lag_span_s: float = 10.0) -> None:
        self.operators = set(operators)
        self.fraction = fraction
        self.lag_span_s = lag_span_s
        self.lags: deque[tuple[float, int]] = deque()  # (time, total lag), the oldest at least lag_span_s old
        self.now = False
        self.first_at: float | None = None
        self.commands_then: int | None = None

    def update(self, graph: AppGraph | None, at: float, commands: int = 0) -> bool:
        if graph is None or not self.operators <= set(graph.operators):
            self.now = False  # an operator not reporting yet (or any more) is not keeping up
            return False
        self.lags.append((at, graph.total_lag))
        while len(self.lags) > 1 and at - self.lags[1][0] >= self.lag_span_s:
            self.lags.popleft()
        since, lag_then = self.lags[0]
        taken_in = sum(op.observed_input_rate for op in graph.operators.values()) * (at - since)
        lag_steady = at - since >= self.lag_span_s and graph.total_lag <= lag_then + (1 - self.fraction) * taken_in
        self.now = lag_steady and keeps_up(graph, self.fraction)
        if self.now and self.first_at is None:
            self.first_at, self.commands_then = at, commands
        return self.now


def start_wordcount(
    settings: LastreamSettings, wc: WordCountSettings, initial: dict[str, int], log_dir: Path
) -> Pipeline:
    """Topics, a fresh desired state (a command one generation past any earlier run's), the
    supervisor and the source."""
    clients = KafkaClients(settings.kafka)
    clients.ensure_topics(project_topics(settings.topics))
    wordcount_topics.ensure(settings, wc)
    spec = app_spec(settings, wc)
    target = {op: initial.get(op, 1) for op in spec.operators}
    previous = latest_commands(clients, settings).get(wc.app)
    command = ScalingCommand(
        app=wc.app,
        generation=(previous.generation if previous else 0) + 1,
        target=target,
        reason="initial configuration of `up`",
    )
    with clients.producer() as producer:
        signed = control_signer(settings.control_auth).sign(command)
        producer.produce(settings.topics.control, key=wc.app.encode(), value=signed.to_bytes())
    pipeline = Pipeline(settings, wc, log_dir)
    pipeline.spawn(
        "supervisor",
        [sys.executable, "-m", "lastream_stream.supervisor", "--app", wc.app],
        {"LASTREAM_SUPERVISOR_INITIAL": json.dumps(target)},
    )
    pipeline.spawn("source", SOURCE_COMMAND, {})
    return pipeline


def ensure_broker(settings: LastreamSettings) -> LastreamSettings:
    """The configured cluster when LASTREAM_KAFKA_BOOTSTRAP is set, else the local broker."""
    if os.environ.get("LASTREAM_KAFKA_BOOTSTRAP"):
        return settings
    status = LocalBroker(settings.broker).start()
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"bootstrap": status.bootstrap})})


def broker_left_running(settings: LastreamSettings) -> str | None:
    """What to tell the user about the local broker, which outlives the run so the next one
    starts in seconds: it holds the topics and the app's desired state."""
    if os.environ.get("LASTREAM_KAFKA_BOOTSTRAP"):
        return None
    status = LocalBroker(settings.broker).status()
    if not status.running:
        return None
    return (
        f"The local Kafka broker (pid {status.pid}, {status.bootstrap}) is left running for the next run; "
        "stop it with `.venv/bin/lastream kafka stop` (or `make kafka-stop`)."
    )


def wordcount_up(
    settings: LastreamSettings,
    wc: WordCountSettings,
    initial: dict[str, int],
    log_dir: Path,
    duration_s: float | None = None,
) -> None:
    """Run WordCount with a live view until Ctrl-C (or ``duration_s``)."""
    settings = ensure_broker(settings)
    pipeline = start_wordcount(settings, wc, initial, log_dir)
    announce_metrics(Console())
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
    if note := broker_left_running(settings):
        Console().print(note)


def up(
    settings: LastreamSettings,
    wc: WordCountSettings,
    initial: dict[str, int],
    log_dir: Path,
    max_decisions: int,
    service: AgentServiceSettings | None = None,
) -> dict:
    """The main job: broker, WordCount under-provisioned, the agent, a live view, a summary."""
    service = service or AgentServiceSettings()
    policy = build_agent(service)  # a checkpoint it cannot use stops it before anything starts
    settings = ensure_broker(settings)
    console = Console()
    agent = AgentService(settings, service, agent=policy)
    monitor = AppMonitor(settings, wc.app, decisions_kept=10)
    tracker = KeepsUp(UPSTREAMS)
    stop = threading.Event()
    agent_thread = threading.Thread(target=agent.run, args=(stop, max_decisions), name="agent", daemon=True)
    started = time.time()
    # Serving before anything starts: a port in use stops `up` with nothing to clean up.
    with agent.serve_metrics() as agent_url:
        pipeline = start_wordcount(settings, wc, initial, log_dir)
        announce_metrics(console, agent_url)
        try:
            monitor.start()
            agent_thread.start()
            with Live(monitor.render(), refresh_per_second=1, console=console) as live:
                while agent_thread.is_alive():
                    agent_thread.join(1.0)
                    controller = agent.controllers.get(wc.app)
                    tracker.update(monitor.graph(), time.time(), controller.commands if controller else 0)
                    live.update(Group(status_line(tracker, controller, started), monitor.render()))
        except KeyboardInterrupt:
            log.info("Ctrl-C: stopping the pipeline")
        finally:
            stop.set()
            if agent_thread.is_alive():
                agent_thread.join(30)
            monitor.stop()
            pipeline.stop()
    graph = monitor.window.graph(wc.app)  # the follow thread has stopped: no lock needed
    summary = summarise(agent, wc.app, graph, tracker, started)
    console.print(summary_table(summary))
    if note := broker_left_running(settings):
        console.print(note)
    return summary


def announce_metrics(console: Console, agent_url: str | None = None) -> None:
    """Where Prometheus can scrape the pipeline; the supervisor serves from its own process."""
    urls = {"agent": agent_url, "supervisor": SupervisorSettings().metrics_url}
    served = ", ".join(f"{name} {url}" for name, url in urls.items() if url)
    console.print(f"Prometheus metrics: {served or 'off'}")


def status_line(tracker: KeepsUp, controller, started: float) -> Text:
    commands = controller.commands if controller else 0
    if tracker.first_at is None:
        return Text(f"not keeping up yet ({time.time() - started:.0f} s, {commands} command(s))", style="bold yellow")
    after = commands - (tracker.commands_then or 0)
    state = "keeps up" if tracker.now else "fell behind"
    return Text(
        f"{state}; first kept up after {tracker.first_at - started:.0f} s and {tracker.commands_then} command(s), "
        f"{after} command(s) since",
        style="bold green" if tracker.now else "bold red",
    )


def summarise(
    agent: AgentService, app: str, graph: AppGraph | None, tracker: KeepsUp | None = None, started: float | None = None
) -> dict:
    controller = agent.controllers.get(app)
    rewards = controller.window_rewards if controller else []
    commands = controller.commands if controller else 0
    kept_up = tracker is not None and tracker.first_at is not None
    return {
        "keeps_up_at_end": tracker.now if tracker else None,  # >= 95% processed, lag not growing
        "seconds_to_keep_up": round(tracker.first_at - started, 1) if kept_up and started is not None else None,
        "decisions": controller.decisions if controller else 0,
        "commands": commands,
        "commands_after_keeping_up": commands - tracker.commands_then if kept_up else None,
        "outcomes_learnt": controller.outcomes_measured if controller else 0,
        "outcome_rewards": list(controller.rewards) if controller else [],
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
        table.add_row(key.replace("_", " "), _cell(value))
    if summary.get("keeps_up_at_end") is not None:
        table.caption = (
            "the app keeps up: >= 95% of the source processed, lag not growing"
            if summary["keeps_up_at_end"]
            else "the app does NOT keep up at the end (< 95% of the source processed, or lag growing)"
        )
    return table


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    return str(value)
