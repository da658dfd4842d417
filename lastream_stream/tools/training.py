"""Pretraining the GCN and evaluator on simulated decisions (``lastream train --sim``).

One *episode* is one decision state and what every candidate would earn in it. Every
candidate scheme - the agent's own analytic ones plus random perturbations, so the
evaluator also learns what bad schemes earn - is applied to its own copy of the simulator,
and the La-Stream reward is averaged over the agent's horizon from that moment on: the
restart and the backlog it leaves are part of what a scheme earns, which is what keeps the
agent from reconfiguring for a marginal gain. The GCN and the evaluator are trained together
on (graph, candidate, reward) in mini-batches.

The states come from two kinds of run:

* *one-shot*: the app is run for a while with some parallelism (under- or over-provisioned,
  at some constant source rate), and decided on once;
* *closed-loop*: the app, its source rate constant, stepping or swinging, is steered for
  minutes by the shipped ``AppController`` (``bench.runner.AsTheService``, as the bench runs
  it) around an exploring fluid-model agent, and some of the states it decided in are kept:
  states during a drain, after a restart, after a reversal, held by stabilisation - the
  states the service actually meets, which one-shot states alone do not cover.

The scenarios are the simulator's (WordCount, Nexmark-like, random DAGs) with random source
rates, sublinear scaling, binding partition caps and slow restarts mixed in, half of them
slowed down to the speed of real apps. Held-out checks use seeds the training never drew.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import Progress

from lastream_stream.agent.controller import AppController
from lastream_stream.bench.runner import AsTheService, BenchSettings
from lastream_stream.policy.agent import DEFAULT_MARGIN, STATE_KINDS, AgentConfig, Example, LaStreamAgent, state_kind
from lastream_stream.policy.base import Decision, DecisionContext, Policy
from lastream_stream.policy.candidates import AnalyticGenerator, clamp_scheme
from lastream_stream.policy.ds2 import optimal_parallelism
from lastream_stream.policy.graph import AppGraph, build_graph
from lastream_stream.policy.reward import RewardParams, horizon_log_reward, log_reward
from lastream_stream.policy.window import recent
from lastream_stream.sim import Constant, Scenario, Simulator, Sine, Steps, scenarios
from lastream_stream.sim.simulator import EPOCH_START
from lastream_stream.wire.contracts import MetricsReport

log = logging.getLogger(__name__)

HELD_OUT_SEED = 1_000_003  # seeds from here on are never drawn for training
FULL_SPEED_SHARE = 0.5  # the other episodes run their scenario slowed down, by up to 1 / MIN_SPEED
MIN_SPEED = 0.003
MARGIN_QUANTILE = 0.8
MIN_MARGIN = 0.005  # ln reward
MAX_LOAD = 5.5  # source rate over its base rate: sources have sixfold headroom


@dataclass(frozen=True)
class PretrainSettings:
    episodes: int = 200
    perturbations: int = 8  # random schemes per episode, besides the analytic candidates
    state_s: float = 30.0  # how long the app runs before the decision
    graph_window_s: float = 10.0  # reports the decision sees: the last this many seconds
    simulate_s: float = 120.0  # of the agent's horizon, simulated after applying a scheme
    train_steps: int = 16_000
    validation_share: float = 0.1
    rehearsal: int = 1000  # pretraining examples shipped in the replay buffer
    seed: int = 0
    agent: AgentConfig = field(default_factory=AgentConfig)
    closed_loop_share: float = 0.5  # of the states, those taken from closed-loop runs
    trajectory_s: float = 300.0  # how long a closed-loop run lasts
    states_per_trajectory: int = 4  # decision states kept from each closed-loop run
    # How often the closed-loop runs' agent picks a random candidate: its mistakes, and the
    # controller's answers to them, are states a careful agent must still decide well in.
    explore_epsilon: float = 0.2

    def jobs(self) -> list[str]:
        """The kind of each run, one-shot or closed-loop, mixed in a fixed order: the first
        runs are held out for validation, and must hold both kinds."""
        n_loops = round(self.episodes * self.closed_loop_share / self.states_per_trajectory)
        kinds = ["closed-loop"] * n_loops + ["one-shot"] * (self.episodes - n_loops * self.states_per_trajectory)
        np.random.default_rng(self.seed).shuffle(kinds)
        return kinds


@dataclass
class Episode:
    scenario: str
    sim: Simulator  # the state the decision was made in
    graph: AppGraph
    # What the decision is told besides the graph: at least the app's restart time, as the
    # bench tells every policy (an agent in service is configured with it).
    context: DecisionContext
    schemes: list[dict[str, int]]
    log_rewards: list[float]
    kind: str = "one-shot"  # or "closed-loop"


def training_scenario(rng: np.random.Generator, seed: int, rate_changes: bool = False) -> Scenario:
    """A scenario of a random family and condition, at a random source rate: constant, or
    with ``rate_changes`` a third each constant, stepping once and swinging."""
    family = rng.integers(6)
    if family == 0:
        base = scenarios.wordcount(seed)
    elif family == 1:
        base = scenarios.nexmark_map(seed)
    elif family == 2:
        base = scenarios.nexmark_join(seed)
    elif family == 3:
        base = scenarios.nexmark_window(seed)
    else:
        base = scenarios.random_dag(int(rng.integers(3, 21)), seed)
    condition = rng.integers(6)
    if condition == 0:
        base = scenarios.with_sublinear(base, float(rng.uniform(0.7, 0.95)))
    elif condition == 1:
        base = scenarios.with_binding_cap(base)
    elif condition == 2:
        base = scenarios.with_slow_restart(base, float(rng.uniform(8.0, 50.0)))
    # The scenarios run at thousands of records/s; real apps (the WordCount demo: a few to tens of
    # records/s, 30-400 ms per record) can be hundreds of times slower, where latency rather than
    # backlog dominates the reward. Trained only at full speed, the model held over-provisioned
    # slow apps at their size.
    speed = 1.0 if rng.random() < FULL_SPEED_SHARE else float(10 ** rng.uniform(math.log10(MIN_SPEED), 0.0))
    load = float(rng.uniform(0.4, 3.5))
    scenario = rescaled(base, speed=speed, load=load)
    if not rate_changes or (change := rng.integers(3)) == 0:
        return scenario
    rate = scenario.schedule.rate_at(0.0)
    if change == 1:
        factor = float(rng.uniform(0.4, min(2.5, MAX_LOAD / load)))
        return dataclasses.replace(scenario, schedule=Steps(rate, ((float(rng.uniform(60.0, 200.0)), factor),)))
    amplitude = float(rng.uniform(0.2, min(0.5, MAX_LOAD / load - 1.0)))
    return dataclasses.replace(scenario, schedule=Sine(rate, amplitude, float(rng.uniform(120.0, 600.0))))


def rescaled(base: Scenario, speed: float, load: float) -> Scenario:
    """``base`` with every true rate times ``speed``, at a constant source rate of ``load`` times
    its (equally sped-up) base rate. Sources have sixfold headroom, so ``load`` stays below 6."""
    operators = tuple(dataclasses.replace(op, true_rate=op.true_rate * speed) for op in base.operators)
    rate = base.schedule.rate_at(0.0) * speed * load
    return dataclasses.replace(base, operators=operators, schedule=Constant(rate))


def decision_state(
    scenario: Scenario, rng: np.random.Generator, settings: PretrainSettings, seed: int
) -> tuple[Simulator, AppGraph]:
    """Start the app mis-provisioned, run it, and build the graph the decision would see."""
    sim = provisioned(scenario, rng, seed)
    return sim, window_graph(sim.run(settings.state_s), settings.graph_window_s)


def provisioned(scenario: Scenario, rng: np.random.Generator, seed: int) -> Simulator:
    """The app at somewhere between a third and three times what it needs."""
    oracle = Simulator(scenario, seed).oracle()
    overall = rng.uniform(0.35, 3.0)
    ops = []
    for op in scenario.operators:
        if op.is_source:
            ops.append(op)
            continue
        p = round(oracle[op.name] * overall * rng.uniform(0.75, 1.33))
        ops.append(dataclasses.replace(op, parallelism=min(max(p, 1), op.max_parallelism)))
    return Simulator(dataclasses.replace(scenario, operators=tuple(ops)), seed)


def window_graph(reports: list[MetricsReport], window_s: float) -> AppGraph:
    """The graph of the last ``window_s`` seconds of reports, as the service would build it."""
    return build_graph(recent(reports, window_s))


def perturbed_schemes(graph: AppGraph, sim: Simulator, rng: np.random.Generator, n: int) -> list[dict[str, int]]:
    """Schemes around the sensible ones: the evaluator must also know what a bad scheme earns.
    The simulator's oracle is one of the anchors - fine for a training candidate, whose
    label comes from measurement anyway."""
    anchors = [sim.oracle(), graph.parallelism, optimal_parallelism(graph)]
    scalable = [name for name, op in graph.operators.items() if not op.is_source]
    schemes = []
    for k in range(n):
        scheme = dict(anchors[k % len(anchors)])
        if k % 2 == 0:
            factor = rng.uniform(0.6, 1.6)
            for name in scalable:
                scheme[name] = round(scheme[name] * factor * rng.uniform(0.85, 1.18))
        else:
            for name in rng.choice(scalable, size=int(rng.integers(1, len(scalable) + 1)), replace=False):
                scheme[name] += int(rng.choice([-2, -1, 1, 2]))
        schemes.append(scheme)
    return schemes


def measure(sim: Simulator, scheme: dict[str, int], settings: PretrainSettings, params: RewardParams) -> float:
    """What ``scheme`` applied to a copy of ``sim`` earns: ln of the mean La-Stream reward over
    the agent's ``horizon_s`` from the moment it is applied, so the restart and the drain of
    the backlog it causes count against it - a reconfiguration pays for its own disruption.
    The first ``simulate_s`` are simulated; the rest of the horizon is taken to go on as the
    last interval did (by then a sound scheme has settled). In logs, because a hopeless
    scheme's reward underflows to 0 and would tie with every other hopeless one."""
    sim = copy.deepcopy(sim)
    sim.apply(scheme)
    interval = sim.scenario.interval_s
    samples = []
    for _ in range(max(1, round(min(settings.simulate_s, settings.agent.horizon_s) / interval))):
        sim.run(interval)
        samples.append(log_reward(sim.measured(), params))
    return horizon_log_reward(samples, interval, settings.agent.horizon_s)


def collect_job(index: int, kind: str, settings: PretrainSettings) -> list[Episode]:
    """The episodes of run ``index``: the same index, kind and seed give the same episodes in any process."""
    rng = np.random.default_rng([settings.seed, index])
    seed = settings.seed * 100_003 + index
    if kind == "closed-loop":
        return closed_loop_episodes(training_scenario(rng, seed, rate_changes=True), rng, settings, seed)
    return [episode(training_scenario(rng, seed), rng, settings, seed)]


def episode(scenario: Scenario, rng: np.random.Generator, settings: PretrainSettings, seed: int) -> Episode:
    """A one-shot decision state of ``scenario`` and the measured reward of every candidate in it."""
    sim, graph = decision_state(scenario, rng, settings, seed)
    return labelled(sim, graph, DecisionContext(restart_s=scenario.downtime_s), rng, settings)


def labelled(
    sim: Simulator,
    graph: AppGraph,
    context: DecisionContext,
    rng: np.random.Generator,
    settings: PretrainSettings,
    kind: str = "one-shot",
) -> Episode:
    """The decision state ``sim`` is in, seen as ``graph``, with the measured reward of every candidate."""
    analytic = AnalyticGenerator(target_utilisations=tuple(settings.agent.headroom_utilisations))
    proposed = [clamp_scheme(graph, c.scheme) for c in analytic.propose(graph, context)]
    perturbed = [clamp_scheme(graph, s) for s in perturbed_schemes(graph, sim, rng, settings.perturbations)]
    schemes = list({tuple(s.values()): s for s in proposed + perturbed}.values())
    log_rewards = [measure(sim, s, settings, settings.agent.reward) for s in schemes]
    return Episode(sim.scenario.name, sim, graph, context, schemes, log_rewards, kind)


@dataclass
class Recorder:
    """A closed-loop run's policy: decides as ``policy`` does, and keeps a copy of the
    simulator, the graph and the context of every state it was asked to decide in."""

    policy: Policy
    sim: Simulator
    restart_s: float  # what the bench tells a policy until the controller has measured a restart
    states: list[tuple[Simulator, AppGraph, DecisionContext]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.policy.name

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        decision = self.policy.decide(graph, context)
        seen = decision.context or context or DecisionContext()
        if seen.restart_s is None:
            seen = dataclasses.replace(seen, restart_s=self.restart_s)
        # The agent's capacity curves go on learning after this state: keep them as they were.
        self.states.append((copy.deepcopy(self.sim), graph, copy.deepcopy(seen)))
        return decision


def closed_loop_episodes(
    scenario: Scenario, rng: np.random.Generator, settings: PretrainSettings, seed: int
) -> list[Episode]:
    """Run ``scenario`` from a mis-provisioned start for ``trajectory_s`` under the shipped
    controller and an exploring fluid-model agent; label ``states_per_trajectory`` of the
    states it decided in."""
    sim = provisioned(scenario, rng, seed)
    explorer = LaStreamAgent(
        settings.agent.model_copy(
            update={
                "seed": seed,
                "use_evaluator": False,
                "explore_epsilon": settings.explore_epsilon,
                "restart_s": scenario.downtime_s,
            }
        )
    )
    recorder = Recorder(explorer, sim, scenario.downtime_s)
    driver = AsTheService(
        AppController(scenario.name, recorder, BenchSettings().controller, settings.agent.reward, since=EPOCH_START)
    )
    for _ in range(round(settings.trajectory_s / scenario.interval_s)):
        driver.step(sim, sim.run(scenario.interval_s))
    kept = sorted(
        rng.choice(len(recorder.states), size=min(settings.states_per_trajectory, len(recorder.states)), replace=False)
    )
    return [labelled(*recorder.states[k], rng, settings, kind="closed-loop") for k in kept]


def collect(settings: PretrainSettings, progress: bool = False, workers: int | None = None) -> list[Episode]:
    """``settings.episodes`` episodes (or a few fewer, when a closed-loop run decided less
    often than asked), in run order, simulated on ``workers`` processes (all cores by default)."""
    workers = workers or os.cpu_count() or 1
    kinds = settings.jobs()
    episodes: list[Episode] = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("simulating decisions", total=settings.episodes)
        with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
            indices = range(len(kinds))
            simulated = (
                pool.map(collect_job, indices, kinds, [settings] * len(kinds))
                if pool
                else (collect_job(i, k, settings) for i, k in zip(indices, kinds, strict=True))
            )
            for done, run_episodes in enumerate(simulated, start=1):
                episodes += run_episodes
                bar.update(task, completed=len(episodes))
                if progress and done % 50 == 0 and not bar.console.is_terminal:  # a log file sees no bar
                    log.info("simulated %d of %d decision states", len(episodes), settings.episodes)
    return episodes


def examples_of(agent: LaStreamAgent, episodes: list[Episode]) -> list[Example]:
    return [
        agent.example(e.graph, s, r, e.context, state_id=k, required=e.sim.oracle())
        for k, e in enumerate(episodes)
        for s, r in zip(e.schemes, e.log_rewards, strict=True)
    ]


def spearman(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """Spearman's rank correlation, ties given their average rank; 0 when either side is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=float)), _ranks(np.asarray(b, dtype=float))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def ranking_quality(agent: LaStreamAgent, episodes: list[Episode]) -> float:
    """Mean over episodes of the Spearman correlation between predicted and measured reward."""
    return statistics.fmean(spearman(agent.log_scores(e.graph, e.schemes, e.context), e.log_rewards) for e in episodes)


def overstated_gains(agent: LaStreamAgent, episodes: list[Episode]) -> dict[str, list[float]]:
    """Per state where the agent's best-scored scheme is a change: by how much its predicted
    gain in ln reward over keeping the running scheme exceeded the measured one, by kind of
    state (``agent.state_kind``)."""
    errors: dict[str, list[float]] = {kind: [] for kind in STATE_KINDS}
    for e in episodes:
        current = clamp_scheme(e.graph, e.graph.parallelism)
        if current not in e.schemes:
            continue
        predicted = agent.log_scores(e.graph, e.schemes, e.context)
        best, keep = int(np.argmax(predicted)), e.schemes.index(current)
        if best != keep:
            errors[state_kind(e.graph)].append(
                (predicted[best] - predicted[keep]) - (e.log_rewards[best] - e.log_rewards[keep])
            )
    return errors


def switch_margins(agent: LaStreamAgent, episodes: list[Episode]) -> dict[str, float]:
    """The gain a change must be predicted to have, per kind of state: the 80th percentile
    of how much the evaluator overstated gains on held-out states of that kind, so that four
    wrong changes in five are not made. Never below a hair, so that float noise alone never
    triggers a restart; with no held-out evidence, the agent's default."""
    return {
        kind: max(MIN_MARGIN, float(np.quantile(errors, MARGIN_QUANTILE))) if errors else DEFAULT_MARGIN
        for kind, errors in overstated_gains(agent, episodes).items()
    }


def train_on(
    episodes: list[Episode], settings: PretrainSettings, progress: bool = False
) -> tuple[LaStreamAgent, dict[str, float]]:
    """A fresh agent trained on the episodes, a share of them held back to report ranking quality."""
    agent = LaStreamAgent(settings.agent.model_copy(update={"seed": settings.seed}))
    n_validation = int(len(episodes) * settings.validation_share)
    validation, train = episodes[:n_validation], episodes[n_validation:]
    examples = examples_of(agent, train)
    loss = 0.0
    with Progress(disable=not progress) as bar:
        task = bar.add_task("training GCN + evaluator", total=settings.train_steps)
        for done in range(0, settings.train_steps, 100):
            steps = min(100, settings.train_steps - done)
            loss = agent.fit(examples, steps)
            bar.update(task, advance=steps, description=f"training GCN + evaluator (loss {loss:.3f})")
            if progress and (done + steps) % 2000 == 0 and not bar.console.is_terminal:
                log.info("trained %d of %d steps, loss %.3f", done + steps, settings.train_steps, loss)
    # Online training then mixes real outcomes with these, rather than fitting its first few
    # outcomes alone and forgetting everything else.
    kept = np.random.default_rng(settings.seed).choice(
        len(examples), size=min(settings.rehearsal, len(examples)), replace=False
    )
    agent.replay.extend(examples[i] for i in sorted(kept))
    summary = {
        "episodes": len(episodes),
        "examples": len(examples),
        "final_loss": loss,
        "train_spearman": ranking_quality(agent, train[:100]),
    }
    if validation:
        summary["validation_spearman"] = ranking_quality(agent, validation)
        for kind in ("one-shot", "closed-loop"):
            if of_kind := [e for e in validation if e.kind == kind]:
                summary[f"validation_spearman_{kind}"] = ranking_quality(agent, of_kind)
        agent.calibrated_margins = switch_margins(agent, validation)
        summary |= {f"switch_margin_{kind}": margin for kind, margin in agent.calibrated_margins.items()}
    log.info("pretraining done: %s", summary)
    return agent, summary


def pretrain(
    settings: PretrainSettings | None = None, progress: bool = False, workers: int | None = None
) -> tuple[LaStreamAgent, dict[str, float]]:
    settings = settings or PretrainSettings()
    return train_on(collect(settings, progress, workers), settings, progress)


def run(episodes: int, out: Path, seed: int = 0, progress: bool = True) -> dict[str, float]:
    """Entry point of ``lastream train --sim``: pretrain on ``episodes`` simulated decisions
    and write the checkpoint, with ``rehearsal`` of its examples as the replay buffer, to ``out``."""
    agent, summary = pretrain(PretrainSettings(episodes=episodes, seed=seed), progress=progress)
    agent.save(out)
    log.info("checkpoint written to %s", out)
    return summary
