"""Seconds per window of an app with many operators: ``AppController.stable_graph`` (the
window's readiness check and ``build_graph``) and the reports' intake, by operator count.

    python benchmarks/graph_scale.py [out.json] [--repeats 5]

Each operator runs 4 instances that report every second for a 10 s window (40 reports per
operator); operators form a random DAG. The agent ticks every 0.5 s by default: one
window's graph must take well under that.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lastream_stream.agent.controller import AppController, ControllerSettings
from lastream_stream.wire.contracts import MetricsReport

SIZES = (100, 500, 1000, 1500)
INSTANCES = 4
WINDOW_S = 10
T0 = 1_700_000_000.0


class Hold:
    name = "hold"


def reports(n_ops: int, seed: int) -> list[MetricsReport]:
    rng = random.Random(seed)
    upstreams = [[] if i == 0 else [f"op{rng.randrange(i)}"] for i in range(n_ops)]
    return [
        MetricsReport(
            app="bench",
            operator=f"op{i}",
            instance_id=f"op{i}-{k}",
            interval_end=T0 + t,
            interval_s=1.0,
            records_in=100,
            records_out=100,
            useful_time_s=0.5,
            lag=0,
            parallelism=INSTANCES,
            upstreams=upstreams[i],
            input_partitions=64,
        )
        for t in range(1, WINDOW_S + 1)
        for i in range(n_ops)
        for k in range(INSTANCES)
    ]


def measure(n_ops: int, repeats: int) -> dict[str, float]:
    window = reports(n_ops, seed=n_ops)
    intake, graph = [], []
    for _ in range(repeats):
        controller = AppController("bench", Hold(), ControllerSettings(window_s=WINDOW_S), since=T0)
        started = time.perf_counter()
        for report in window:
            controller.on_report(report, received_at=report.interval_end)
        intake.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert controller.stable_graph(T0 + WINDOW_S) is not None
        graph.append(time.perf_counter() - started)
    return {
        "operators": n_ops,
        "reports": len(window),
        "intake_s": statistics.median(intake),
        "stable_graph_s": statistics.median(graph),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).parent / "results" / "graph_scale.json")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = [measure(n, args.repeats) for n in SIZES]
    table = Table(title=f"one window, {INSTANCES} instances per operator, median of {args.repeats}")
    for column in ("operators", "reports", "intake (s)", "stable_graph (s)"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["operators"]), str(row["reports"]), f"{row['intake_s']:.3f}", f"{row['stable_graph_s']:.3f}"
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"instances_per_operator": INSTANCES, "window_s": WINDOW_S, "rows": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
