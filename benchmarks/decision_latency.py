"""Milliseconds per ``LaStreamAgent.decide`` (LLM excluded) by graph size and candidate count.

    python benchmarks/decision_latency.py [out.json] [--repeats 30]

Graphs are random DAGs built from MetricsReports, like the service builds them. The pool is
the analytic candidates (trimmed to at most 7) topped up with random schemes to exactly the
requested count; the time the top-up itself takes is not counted, everything else in
``decide`` is (analytic generation, encoding, GCN + evaluator, selection).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lastream_stream.policy.agent import LaStreamAgent
from lastream_stream.policy.base import Candidate, DecisionContext
from lastream_stream.policy.candidates import AnalyticGenerator
from lastream_stream.policy.graph import AppGraph, build_graph
from lastream_stream.wire.contracts import MetricsReport

SIZES = (5, 20, 50)
POOL_SIZES = (10, 64)


def random_graph(n_ops: int, seed: int) -> AppGraph:
    rng = random.Random(seed)
    reports = []
    for i in range(n_ops):
        upstreams = [] if i == 0 else sorted({f"op{rng.randrange(i)}" for _ in range(rng.choice((1, 1, 2)))})
        parallelism = rng.randint(1, 8)
        records_in = rng.randint(1_000, 50_000)
        for k in range(parallelism):
            reports.append(
                MetricsReport(
                    app="bench",
                    operator=f"op{i}",
                    instance_id=f"op{i}-{k}",
                    interval_end=1_700_000_000.0,
                    interval_s=10.0,
                    records_in=records_in,
                    records_out=int(records_in * rng.uniform(0.3, 2.0)),
                    useful_time_s=rng.uniform(1.0, 10.0),
                    lag=rng.randint(0, 10_000),
                    latency_p50_ms=rng.uniform(5.0, 500.0),
                    parallelism=parallelism,
                    upstreams=upstreams,
                    input_partitions=64,
                )
            )
    return build_graph(reports)


ANALYTIC = AnalyticGenerator(target_utilisations=(0.9,), max_neighbour_ops=2)


@dataclass
class TopUp:
    """Random schemes that bring the pool (analytic candidates first) to exactly ``size``."""

    size: int
    seed: int = 0
    name: str = "random"

    def propose(self, graph: AppGraph, context: DecisionContext | None = None) -> list[Candidate]:
        rng = random.Random(self.seed)
        taken = {c.key for c in ANALYTIC.propose(graph, context)}
        extra: list[Candidate] = []
        while len(taken) < self.size:
            scheme = {name: rng.randint(1, 16) for name in graph.names}
            candidate = Candidate(scheme, "analytic", "random")
            if candidate.key not in taken:
                taken.add(candidate.key)
                extra.append(candidate)
        return extra


def measure(agent: LaStreamAgent, graph: AppGraph, repeats: int) -> dict[str, float]:
    agent.decide(graph)  # first call pays for lazy initialisation
    totals, scoring, pools = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        decision = agent.decide(graph)
        totals.append((time.perf_counter() - started) * 1000.0 - decision.timings_ms["generate_random_ms"])
        scoring.append(decision.timings_ms["score_ms"])
        pools.append(len(decision.candidates))
    totals.sort()
    return {
        "candidates": statistics.fmean(pools),
        "mean_ms": statistics.fmean(totals),
        "p50_ms": totals[len(totals) // 2],
        "p95_ms": totals[min(len(totals) - 1, int(0.95 * len(totals)))],
        "score_ms": statistics.fmean(scoring),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("benchmarks/results/decision_latency.json"))
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    rows = []
    for n_ops in SIZES:
        graph = random_graph(n_ops, seed=n_ops)
        for pool in POOL_SIZES:
            agent = LaStreamAgent.pretrained(generators=[ANALYTIC, TopUp(pool)])
            rows.append({"operators": n_ops, "requested_candidates": pool, **measure(agent, graph, args.repeats)})

    table = Table(title="LaStreamAgent.decide, LLM excluded (ms)")
    for column in ("operators", "candidates", "mean", "p50", "p95", "scoring"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["operators"]),
            f"{row['candidates']:.0f}",
            f"{row['mean_ms']:.1f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p95_ms']:.1f}",
            f"{row['score_ms']:.1f}",
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"repeats": args.repeats, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
