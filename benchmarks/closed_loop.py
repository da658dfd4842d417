"""The real pipeline from under-provisioned: does the agent settle, and does it stay put?

WordCount at its defaults (10 sentences/s; splitter 150 ms/sentence, counter 20 ms/word,
sink 1 ms: DS2 needs about splitter 2, counter 2, sink 1), every operator starting at 1,
and the agent as ``lastream up`` runs it (shipped pretrained model, default controller
settings, no LLM), with a checkpoint of its own under /tmp. Two phases, measured alike:

  settle  from all-at-1: seconds, decisions and commands until the app keeps up (>= 95% of
          the source processed and lag not growing: ``launcher.KeepsUp``); then a hold of
          --hold seconds at the same rate: commands issued, outcomes learnt, seconds not
          keeping up, CPU cores used by the pipeline (the agent, source, supervisor and
          workers; not the broker) and the load average (everything the machine runs);
  step    the source restarted at --step-factor times the rate, then the same measures.

The local broker (or LASTREAM_KAFKA_BOOTSTRAP) is used; results go to --out as JSON.

    .venv/bin/python benchmarks/closed_loop.py [--hold 600] [--step-factor 2] [--timeout 600]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path

import psutil
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from lastream_stream.agent.service import AgentService
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.kafka.clients import KafkaClients, project_topics
from lastream_stream.policy.ds2 import optimal_parallelism
from lastream_stream.settings import LastreamSettings, TopicSettings
from lastream_stream.tools.dashboard import AppMonitor
from wordcount_app.launcher import KeepsUp, Pipeline, ensure_broker, start_wordcount
from wordcount_app.settings import UPSTREAMS, WordCountSettings

log = logging.getLogger("closed_loop")


def counts(service: AgentService, app: str) -> dict:
    controller = service.controllers.get(app)
    if controller is None:
        return {"decisions": 0, "commands": 0, "outcomes": 0, "rewards": []}
    return {
        "decisions": controller.decisions,
        "commands": controller.commands,
        "outcomes": controller.outcomes_measured,
        "rewards": list(controller.rewards),
    }


def cpu_s(pipeline: Pipeline) -> float:
    """CPU seconds used so far by this process (the agent and the view), the source, the
    supervisor and its workers: the load of the pipeline apart from the broker and from
    anything else the machine runs (which the load average includes)."""
    processes = [psutil.Process()]
    for part in pipeline.processes:
        processes += [part.process, *part.process.children(recursive=True)]
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(
    service: AgentService, monitor: AppMonitor, pipeline: Pipeline, app: str, timeout_s: float, hold_s: float
) -> dict:
    """From now: until the app keeps up (or ``timeout_s``), then ``hold_s`` at the same rate."""
    begin = time.time()
    before = counts(service, app)
    tracker = KeepsUp(UPSTREAMS)
    load = [os.getloadavg()[0]]

    def check() -> bool:
        time.sleep(1.0)
        load.append(os.getloadavg()[0])
        # Only reports of this phase: a window straddling a rate step says nothing about either rate.
        return tracker.update(monitor.graph(since=begin), time.time(), counts(service, app)["commands"])

    while not check():
        if time.time() - begin > timeout_s:
            log.warning("the app did not keep up within %.0f s", timeout_s)
            return {
                "kept_up": False,
                "seconds": None,
                **_since(before, counts(service, app)),
                "load_avg_max": round(max(load), 2),
            }
    kept = counts(service, app)
    log.info("keeps up after %.0f s; holding for %.0f s", tracker.first_at - begin, hold_s)
    behind_s = 0
    hold_start, cpu_start = time.time(), cpu_s(pipeline)
    while time.time() < hold_start + hold_s:
        behind_s += not check()
    cpu_cores = (cpu_s(pipeline) - cpu_start) / (time.time() - hold_start)
    after = counts(service, app)
    graph = monitor.graph(since=begin)
    return {
        "kept_up": True,
        "seconds": round(tracker.first_at - begin, 1),
        **_since(before, kept),
        "hold_s": hold_s,
        "hold_commands": after["commands"] - kept["commands"],
        "hold_decisions": after["decisions"] - kept["decisions"],
        "hold_outcomes_learnt": after["outcomes"] - kept["outcomes"],
        "hold_outcome_rewards": [round(r, 3) for r in after["rewards"][kept["outcomes"] :]],
        "hold_seconds_behind": behind_s,
        "keeps_up_at_end": tracker.now,
        "parallelism": graph.parallelism if graph else {},
        "ds2_optimum": optimal_parallelism(graph) if graph else {},
        "hold_cpu_cores": round(cpu_cores, 2),
        "load_avg_max": round(max(load), 2),
        "load_avg_end": round(load[-1], 2),
    }


def _since(before: dict, now: dict) -> dict:
    return {"decisions": now["decisions"] - before["decisions"], "commands": now["commands"] - before["commands"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rate", type=float, default=None, help="source sentences/s (default: WordCount's, LASTREAM_WC_RATE or 10)"
    )
    parser.add_argument("--hold", type=float, default=600.0, help="seconds at a constant rate once the app keeps up")
    parser.add_argument(
        "--step-factor", type=float, default=2.0, help="the rate step after the first hold (0: no step)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="give up a phase after this many seconds without keeping up"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/closed_loop.json"))
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(message)s", handlers=[RichHandler(show_path=False)])
    logging.getLogger("lastream.librdkafka").setLevel(logging.ERROR)

    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(
        metrics=f"cl-{tag}.metrics",
        control=f"cl-{tag}.control",
        acks=f"cl-{tag}.acks",
        decisions=f"cl-{tag}.decisions",
        deadletter=f"cl-{tag}.deadletter",
    )
    settings = ensure_broker(LastreamSettings(topics=topics))
    KafkaClients(settings.kafka).ensure_topics(project_topics(topics))
    wc = WordCountSettings(prefix=f"cl-{tag}")
    if args.rate is not None:
        wc = wc.model_copy(update={"rate": args.rate})
    run_dir = Path(f"/tmp/lastream-closed-loop-{tag}")
    service = AgentService(settings, AgentServiceSettings(checkpoint=run_dir / "agent.pt", llm=False))
    monitor = AppMonitor(settings, wc.app).start()
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    pipeline = start_wordcount(settings, wc, {"splitter": 1, "counter": 1, "sink": 1}, run_dir / "logs")
    thread.start()
    phases: dict[str, dict] = {}
    try:
        phases["settle"] = measure(service, monitor, pipeline, wc.app, args.timeout, args.hold)
        if args.step_factor > 0 and phases["settle"]["kept_up"]:
            log.info("rate step: %.1f -> %.1f sentences/s", wc.rate, wc.rate * args.step_factor)
            pipeline.set_rate(wc.rate * args.step_factor)
            phases["step"] = measure(service, monitor, pipeline, wc.app, args.timeout, args.hold)
    finally:
        stop.set()
        thread.join(30)
        monitor.stop()
        pipeline.stop()
    controller = service.controllers.get(wc.app)
    result = {
        "rate": wc.rate,
        "step_factor": args.step_factor,
        "hold_s": args.hold,
        "costs_ms": {op: wc.cost_s(op) * 1000 for op in ("splitter", "counter", "sink")},
        "controller": service.service.controller.model_dump(
            include={"window_s", "warmup_s", "outcome_s", "train_steps"}
        ),
        "phases": phases,
        "restarts_s": [round(s, 1) for s in controller.restarts_s] if controller else [],
        "at": time.time(),
    }
    table = Table(title=f"Closed loop: WordCount at {wc.rate:g} sentences/s from all-at-1, then x{args.step_factor:g}")
    table.add_column("measure")
    for name in phases:
        table.add_column(name, justify="right")
    for key in dict.fromkeys(k for phase in phases.values() for k in phase):
        table.add_row(key.replace("_", " "), *(str(phase.get(key, "")) for phase in phases.values()))
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
