"""Does the agent get better on the job? Long runs on the simulator through the service's own
controller, on apps where the shipped model's prior is wrong, with online learning as the
service runs it by default (``lastream-online``) and the shipped model alone (``lastream``),
DS2 and the Flink-style autoscaler for reference.

Per scenario and policy:

  reward            mean measured reward (0-1] over the run
  instances x opt   mean instances over the oracle's in the last quarter
  backlog s         seconds of backlog over the reward's D* over the run
  reconf            reconfigurations
  shipped err       the shipped model's mean absolute error of the predicted reward of the
                    outcomes of the first and of the last quarter (each value: the running
                    mean over the app's last 20 outcomes, as the agent exports it)
  online err        the online model's, measured on the same outcomes before it trained on them
  online decides    share of the last quarter's outcomes whose decision the online model made

    .venv/bin/python benchmarks/online_learning.py [--hours 2] [--out benchmarks/results/online_learning.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from lastream_stream.bench import BenchSettings
from lastream_stream.bench.runner import EpisodeResult, policy_factory, run_episode
from lastream_stream.sim import Scenario
from lastream_stream.sim.scenarios import (
    contended_app,
    nexmark_join,
    nexmark_map,
    with_sine,
    with_slow_restart,
    with_sublinear,
    wordcount,
)

log = logging.getLogger("online_learning")
POLICIES = ("lastream-online", "lastream", "ds2", "flink")


def scenarios(hours: float) -> list[Scenario]:
    """Apps whose prior is wrong: a crowded host, sublinear scaling, 60 s restarts; and a
    daily-like sine on WordCount."""
    chosen = [
        with_sine(wordcount(), 0.3, 1200.0),
        with_sublinear(nexmark_map(), 0.6),
        contended_app(1, 2000.0, 2.0, 0.5),
        with_slow_restart(nexmark_join(), 60.0),
    ]
    return [dataclasses.replace(s, horizon_s=3600.0 * hours) for s in chosen]


def quarter_errors(result: EpisodeResult) -> dict[str, float | None]:
    errors = result.prediction_errors
    if not errors:
        return {}
    horizon = max(t for t, _, _ in errors)
    first = [e for t, _, e in errors if t <= horizon / 4]
    last = [(model, e) for t, model, e in errors if t >= 3 * horizon / 4]

    def mean(rows: list[dict[str, float]], model: str) -> float | None:
        return statistics.fmean(r[model] for r in rows) if rows else None

    return {
        "shipped_first": mean(first, "shipped"),
        "shipped_last": mean([e for _, e in last], "shipped"),
        "online_first": mean(first, "online"),
        "online_last": mean([e for _, e in last], "online"),
        "online_decides_last": sum(model == "online" for model, _ in last) / len(last) if last else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours per scenario")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/online_learning.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])
    logging.getLogger("lastream_stream").setLevel(logging.WARNING)  # the controllers' every decision
    settings = BenchSettings()
    rows = []
    for scenario in scenarios(args.hours):
        for name in POLICIES:
            started = time.perf_counter()
            result = run_episode(scenario, name, policy_factory(name, settings), settings)
            tail = [s for s in result.samples if s.t >= 0.75 * scenario.horizon_s]
            rows.append(
                {
                    "scenario": scenario.name,
                    "policy": name,
                    "mean_reward": result.mean_reward,
                    "instances_over_oracle_last_quarter": statistics.fmean(s.parallelism / s.oracle for s in tail),
                    "seconds_backlog_over_dstar": result.seconds_backlog_over_dstar,
                    "reconfigurations": result.reconfigurations,
                    **quarter_errors(result),
                }
            )
            log.info("%s / %s: %.0f s", scenario.name, name, time.perf_counter() - started)

    table = Table(title=f"Online learning, {args.hours:g} simulated hours per app")
    for column in (
        "scenario",
        "policy",
        "reward",
        "instances x opt",
        "backlog s",
        "reconf",
        "shipped err",
        "online err",
        "online decides",
    ):
        table.add_column(column, justify="left" if column in ("scenario", "policy") else "right")

    def pair(row: dict, model: str) -> str:
        first, last = row.get(f"{model}_first"), row.get(f"{model}_last")
        return f"{first:.3f} -> {last:.3f}" if first is not None and last is not None else ""

    for row in rows:
        decides = row.get("online_decides_last")
        table.add_row(
            row["scenario"],
            row["policy"],
            f"{row['mean_reward']:.3f}",
            f"{row['instances_over_oracle_last_quarter']:.2f}",
            f"{row['seconds_backlog_over_dstar']:.0f}",
            str(row["reconfigurations"]),
            pair(row, "shipped"),
            pair(row, "online"),
            f"{decides:.0%}" if decides is not None else "",
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"hours": args.hours, "rows": rows}, indent=2) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
