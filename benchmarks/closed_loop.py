"""The real pipeline from under-provisioned: how long and how many decisions until the
source rate is sustained, and the final total parallelism against DS2's optimum computed
from the measured rates.

Runs the local broker (or LASTREAM_KAFKA_BOOTSTRAP), WordCount at every operator = 1 under
a rate that needs more, and the agent (shipped pretrained model, no LLM) in this process.

    .venv/bin/python benchmarks/closed_loop.py [--rate 12] [--timeout 600] [--out benchmarks/results/closed_loop.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from lastream_stream.controller import ControllerSettings
from lastream_stream.kafka_clients import KafkaClients, project_topics
from lastream_stream.launcher import ensure_broker, start_wordcount
from lastream_stream.policy.ds2 import optimal_parallelism
from lastream_stream.service import AgentService, AgentServiceSettings
from lastream_stream.settings import LastreamSettings, TopicSettings
from lastream_stream.window import MetricsWindow, keeps_up
from wordcount_app.settings import WordCountSettings

log = logging.getLogger("closed_loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=12.0, help="source sentences/s")
    parser.add_argument("--cost-splitter-ms", type=float, default=150.0)
    parser.add_argument("--cost-counter-ms", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/closed_loop.json"))
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(message)s", handlers=[RichHandler(show_path=False)])
    logging.getLogger("lastream.librdkafka").setLevel(logging.ERROR)

    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(metrics=f"cl-{tag}.metrics", control=f"cl-{tag}.control", acks=f"cl-{tag}.acks",
                           decisions=f"cl-{tag}.decisions", deadletter=f"cl-{tag}.deadletter")  # fmt: skip
    settings = ensure_broker(LastreamSettings(topics=topics))
    KafkaClients(settings.kafka).ensure_topics(project_topics(topics))
    wc = WordCountSettings(prefix=f"cl-{tag}", rate=args.rate, cost_splitter_ms=args.cost_splitter_ms,
                           cost_counter_ms=args.cost_counter_ms, cost_sink_ms=2.0, metrics_interval_s=1.0, partitions=4)  # fmt: skip
    pipeline = start_wordcount(settings, wc, {"splitter": 1, "counter": 1, "sink": 1}, Path(f"/tmp/lastream-closed-loop-{tag}"))
    service = AgentService(settings, AgentServiceSettings(
        checkpoint=Path(f"/tmp/lastream-closed-loop-{tag}/agent.pt"), llm=False,
        controller=ControllerSettings(window_s=8.0, warmup_s=5.0, train_steps=5)))  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    started = time.monotonic()
    thread.start()
    lags: list[int] = []
    result: dict = {"sustained": False}
    try:
        while time.monotonic() - started < args.timeout:
            time.sleep(1.0)
            controller = service.controllers.get(wc.app)
            if controller is None or controller.pending is not None:
                continue
            window = MetricsWindow(8.0)
            for report in list(controller.reports):
                window.add(report)
            graph = window.graph(wc.app)
            if graph is None or len(graph.operators) < 4:
                continue
            lags.append(graph.total_lag)
            if controller.commands > 0 and keeps_up(graph, 0.95) and len(lags) > 5 and lags[-1] <= lags[-6]:
                ds2 = optimal_parallelism(graph)
                result = {
                    "sustained": True, "seconds": round(time.monotonic() - started, 1),
                    "decisions": controller.decisions, "commands": controller.commands,
                    "final": graph.parallelism, "ds2_optimum": ds2,
                    "total_parallelism": sum(graph.parallelism.values()), "ds2_total": sum(ds2.values()),
                    "source_rate": graph.operators["source"].observed_output_rate,
                    "splitter_rate": graph.operators["splitter"].observed_input_rate,
                    "restarts_s": [round(s, 1) for s in controller.restarts_s],
                }  # fmt: skip
                break
    finally:
        stop.set()
        thread.join(30)
        pipeline.stop()
    table = Table(title="Closed loop: WordCount from all-1 under-provisioned")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result | {"rate": args.rate, "at": time.time()}, indent=2))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
