"""Does the learned evaluator beat the fluid model alone on states it never saw?

Held-out decision states are simulated exactly as pretraining's (one-shot and closed-loop,
seeds training never draws; ``tools/training.py``), every candidate's reward measured on its
own copy of the simulator. The shipped agent then decides in each state twice: scoring with
the GCN and evaluator (what ships), and with the fluid model's estimate alone
(``AgentConfig.use_evaluator=False``). Reported per scorer and kind of state: the ranking
quality (Spearman between predicted and measured ln reward) and the regret of the decision
(best measured ln reward minus that of the scheme chosen, margin and all), mean and 90th
percentile. Prints a table and writes JSON.

    .venv/bin/python benchmarks/held_out_regret.py [--states 80] [--out benchmarks/results/held_out_regret.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lastream_stream.policy.agent import LaStreamAgent
from lastream_stream.tools.training import HELD_OUT_SEED, PretrainSettings, collect, spearman

log = logging.getLogger("held_out_regret")


def key(scheme: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(scheme.items()))


def measure(agent: LaStreamAgent, episodes) -> dict[str, float]:
    correlations, regrets = [], []
    for e in episodes:
        measured = dict(zip(map(key, e.schemes), e.log_rewards, strict=True))
        correlations.append(spearman(agent.log_scores(e.graph, e.schemes, e.context), e.log_rewards))
        chosen = agent.decide(e.graph, e.context).chosen
        # A scheme outside the labelled set (a capacity-curve candidate) is judged by the best
        # labelled one it could have been: the regret is then a lower bound.
        regrets.append(max(measured.values()) - measured.get(key(chosen), max(measured.values())))
    return {
        "states": len(episodes),
        "spearman_mean": float(np.mean(correlations)),
        "regret_mean": float(np.mean(regrets)),
        "regret_p90": float(np.quantile(regrets, 0.9)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--states", type=int, default=80, help="held-out decision states, half of them closed-loop")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/held_out_regret.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("lastream_stream.agent.controller").setLevel(logging.WARNING)

    episodes = collect(PretrainSettings(episodes=args.states, seed=HELD_OUT_SEED), progress=True)
    shipped = LaStreamAgent.pretrained()
    fluid = copy.deepcopy(shipped)
    fluid.config = fluid.config.model_copy(update={"use_evaluator": False})
    results = {}
    for name, agent in (("gcn+evaluator", shipped), ("fluid model", fluid)):
        for kind in ("one-shot", "closed-loop", "all"):
            chosen = [e for e in episodes if kind in ("all", e.kind)]
            # Fresh capacity curves per state: the held-out states are of unrelated apps.
            results[f"{name} / {kind}"] = measure(copy.deepcopy(agent), chosen)

    table = Table(title="held-out states: the learned evaluator against the fluid model")
    for column in ("scorer / states", "n", "Spearman", "regret mean", "regret p90"):
        table.add_column(column, justify="left" if column.startswith("scorer") else "right")
    for name, r in results.items():
        table.add_row(
            name, str(r["states"]), f"{r['spearman_mean']:.3f}", f"{r['regret_mean']:.3f}", f"{r['regret_p90']:.3f}"
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
