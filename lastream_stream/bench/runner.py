"""Episodes: one policy steering one simulated scenario, and what it achieved.

LaStream runs as the service runs it: the simulator's reports go to the service's own
``AppController`` and its commands come back to the simulator (``AsTheService``). The
baselines run as their originals do: every ``decision_interval_s`` the policy sees the
reports of the window that just ended and its scheme is applied (``OnTheGrid``). A scheme
that differs from the running one is a reconfiguration, with the scenario's downtime. The
simulator is sampled once per reporting interval for the ground-truth measures below.

Measures of an episode
----------------------
* ``decisions_to_sustain``: decisions made after the last rate change (a step; the start
  otherwise) before the first window that sustains the rate: the bottleneck processed at
  least 95 % of the source records that arrived, and the backlog, counted in source records
  (``Simulator.source_equivalent_lag``), grew by less than 5 % of them. ``None`` if no
  window did.
* ``parallelism_ratio``: over the last quarter of the run, instances of the scalable (non-source)
  operators divided by the oracle's, averaged over samples. 1.0 is the minimum that keeps up.
* ``reconfigurations``: decisions that changed the running parallelism.
* ``seconds_backlog_over_dstar``: seconds with a backlog above the reward's ``D_star``
  (seconds of input along the slowest path; records in the paper's absolute form).
* ``mean_reward``: La-Stream's reward (``policy.reward``) of the ground truth, averaged over
  samples; ``mean_log_reward`` the mean of its logarithm, which still ranks hopeless runs.
* ``oscillations_per_operator``: direction changes (up then down, or down then up) of the
  scalable operators' parallelism, divided by their number.
* ``decision_ms_mean`` / ``decision_ms_max``: wall-clock time of a decision (the
  controller's whole tick for LaStream, online training included).
* ``commands_by_source``: for LaStream, its commands by which generator proposed the scheme
  (``DecisionRecord.chosen_source``: analytic, capacity, llm, or guarded).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lastream_stream.agent.controller import AppController, ControllerSettings
from lastream_stream.bench.baselines import (
    DS2Policy,
    FlinkAutoscaler,
    FlinkSettings,
    KedaScaler,
    OraclePolicy,
    StaticPolicy,
)
from lastream_stream.policy.base import Decision, DecisionContext, Policy
from lastream_stream.policy.graph import AppGraph, build_graph
from lastream_stream.policy.reward import RewardParams, log_reward
from lastream_stream.sim import Scenario, Simulator, Steps
from lastream_stream.sim.simulator import EPOCH_START
from lastream_stream.wire.contracts import CommandAck, DecisionRecord, MetricsReport, ScalingCommand

log = logging.getLogger(__name__)

POLICY_NAMES = ("static", "oracle", "ds2", "flink", "keda", "lastream", "lastream-online")
# Each learned part of LaStream added in turn (``lastream bench --ablation``), DS2 for reference.
ABLATION = ("ds2", "fluid-only", "fluid+capacity", "lastream", "lastream-online")
# What each rung of the ablation turns off in the shipped agent.
_ABLATED = {"fluid-only": {"use_evaluator": False, "capacity_model": False}, "fluid+capacity": {"use_evaluator": False}}
# The shipped agent with the LLM generator's candidates besides its own (``lastream bench --llm``).
LLM_POLICY = "lastream+llm"
SUSTAIN_FRACTION = 0.95  # processed / arrived for a window to count as keeping up


class LLMUnavailable(ValueError):
    """``lastream+llm`` was asked for, but the LLM endpoint has no key."""


@dataclass(frozen=True)
class BenchSettings:
    seed: int = 0
    n_scenarios: int = 36
    horizon_s: float | None = None  # None: each scenario's own horizon
    decision_interval_s: float = 10.0  # DS2's policy interval
    policies: tuple[str, ...] = POLICY_NAMES
    out_dir: Path = Path("benchmarks/results/bench")
    plot_scenarios: int = 3  # parallelism-over-time plots for the first scenarios
    reward: RewardParams = field(default_factory=RewardParams)
    # LaStream's decision cycle; its window is the baselines' decision interval.
    # Defaults only: a user's LASTREAM_CONTROLLER_* (a dry run, bounds) must not leak into the bench.
    controller: ControllerSettings = field(default_factory=lambda: ControllerSettings.model_construct(window_s=10.0))

    def __post_init__(self) -> None:
        known = dict.fromkeys((*POLICY_NAMES, *ABLATION, LLM_POLICY))
        if unknown := set(self.policies) - set(known):
            raise ValueError(f"unknown policies {sorted(unknown)}; known: {', '.join(known)}")


@dataclass(frozen=True)
class Sample:
    """The simulator's ground truth at the end of one reporting interval."""

    t: float
    parallelism: int  # scalable operators, all instances
    oracle: int  # the oracle's instances of the same operators
    lag: float  # records in all input queues
    backlog: float  # the same in source records
    backlog_s: float  # the reward's backlog: seconds of input along the slowest path
    latency_ms: float
    log_reward: float
    processed_rate: float
    arrived_rate: float


@dataclass
class EpisodeResult:
    scenario: str
    policy: str
    tags: list[str]
    sustainable: bool  # whether any configuration keeps up at the end of the run
    decisions_to_sustain: int | None
    parallelism_ratio: float
    reconfigurations: int
    seconds_backlog_over_dstar: float
    mean_reward: float
    mean_log_reward: float
    oscillations_per_operator: float
    decision_ms_mean: float
    decision_ms_max: float
    sustained_share: float  # windows that sustained the rate, of all windows
    final_lag: float
    mean_latency_ms: float
    commands_by_source: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list, repr=False)
    parallelism_trace: list[tuple[float, dict[str, int]]] = field(default_factory=list, repr=False)
    # At each measured outcome of a learning policy: when, which model decided it, and each model's recent error.
    prediction_errors: list[tuple[float, str | None, dict[str, float]]] = field(default_factory=list, repr=False)

    def measures(self) -> dict[str, object]:
        return {
            k: v for k, v in self.__dict__.items() if k not in ("samples", "parallelism_trace", "prediction_errors")
        }


PolicyFactory = Callable[[Scenario, Simulator], Policy | AppController]


def policy_factory(name: str, settings: BenchSettings) -> PolicyFactory:
    """A function that builds a fresh policy per episode (baselines keep per-run state), or
    the controller that runs one."""
    if name == "static":
        return lambda scenario, sim: StaticPolicy()
    if name == "oracle":
        return lambda scenario, sim: OraclePolicy(sim)
    if name == "ds2":
        return lambda scenario, sim: DS2Policy()
    if name == "flink":
        return lambda scenario, sim: FlinkAutoscaler(FlinkSettings(restart_s=scenario.downtime_s))
    if name == "keda":
        return lambda scenario, sim: KedaScaler()
    if name in ("lastream", *_ABLATED):
        return lastream_factory(settings, learn=False, **_ABLATED.get(name, {}))
    if name == "lastream-online":
        return lastream_factory(settings, learn=True)
    if name == LLM_POLICY:
        return lastream_factory(settings, learn=False, llm=True)
    raise ValueError(f"unknown policy {name!r}")


def lastream_factory(settings: BenchSettings, learn: bool, llm: bool = False, **config: bool) -> PolicyFactory:
    """The La-Stream agent with its pretrained evaluator (untrained if none is shipped),
    plus the LLM generator's candidates with ``llm`` (``LASTREAM_LLM_*`` says which endpoint;
    a ValueError without a key), run by the service's own ``AppController``.

    The model is loaded once; each episode gets its own copy, so an agent that ``learn``s
    online starts every episode from the shipped model. Like a user configuring the service,
    the agent is told the scenario's restart time until the controller has measured one.
    ``config`` switches learned parts off (``AgentConfig.use_evaluator``, ``capacity_model``)."""
    from lastream_stream.policy.agent import LaStreamAgent
    from lastream_stream.policy.llm import LLMGenerator

    template = LaStreamAgent.pretrained()
    # One LLM client shared by all episodes: it holds connections, not decision state.
    generator = LLMGenerator() if llm else None
    if generator is not None and not generator.enabled:
        raise LLMUnavailable(
            f"{LLM_POLICY} needs an API key for {generator.config.base_url}: set ${generator.config.api_key_env} or LASTREAM_LLM_API_KEY"
        )

    def build(scenario: Scenario, sim: Simulator) -> AppController:
        agent = copy.deepcopy(template)
        if generator is not None:
            agent.add_llm(generator)
        agent.config = agent.config.model_copy(update={"restart_s": scenario.downtime_s, **config})
        policy = agent if learn else Frozen(agent)
        return AppController(scenario.name, policy, settings.controller, settings.reward, since=EPOCH_START)

    return build


@dataclass
class Frozen:
    """The shipped agent, its network never trained: what it learns while deciding (the
    capacity curves, part of how it decides) it still learns; outcomes are not fed back."""

    policy: Policy

    @property
    def name(self) -> str:
        return self.policy.name

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        return self.policy.decide(graph, context)


@dataclass
class OnTheGrid:
    """A baseline as its original runs: it sees the last ``window_s`` of reports every
    ``window_s`` and its scheme is applied at once (its own rules decide when to wait)."""

    policy: Policy
    window_s: float
    restart_s: float
    reports: list[MetricsReport] = field(default_factory=list)

    def step(self, sim: Simulator, reports: list[MetricsReport]) -> float | None:
        self.reports += reports
        if sim.now % self.window_s > 1e-9 or sim.now < self.window_s - 1e-9:
            return None
        graph, self.reports = build_graph(self.reports), []
        started = time.perf_counter()
        decision = self.policy.decide(graph, DecisionContext(restart_s=self.restart_s))
        elapsed_ms = 1000.0 * (time.perf_counter() - started)
        sim.apply(decision.chosen)
        return elapsed_ms


@dataclass
class AsTheService:
    """The service's decision cycle with the simulator as the app: every report goes to the
    ``AppController``, which is ticked at every reporting interval; its commands are applied
    to the simulator, which acknowledges them at once, as the supervisor does once the
    workers are started. Everything the controller does (waiting for a stable window and the
    end of a restart, guard rails, stabilisation, outcomes and online learning) happens here
    exactly as in the service."""

    controller: AppController
    sources: Counter[str] = field(default_factory=Counter)  # commands by the provenance of their scheme
    # The outcome records' model and errors, timed from the start of the run.
    prediction_errors: list[tuple[float, str | None, dict[str, float]]] = field(default_factory=list)

    def step(self, sim: Simulator, reports: list[MetricsReport]) -> float | None:
        for report in reports:
            self.controller.on_report(report)
        now = EPOCH_START + sim.now
        decisions = self.controller.decisions
        started = time.perf_counter()
        actions = self.controller.tick(now)
        elapsed_ms = 1000.0 * (time.perf_counter() - started)
        records = [a.message for a in actions if isinstance(a.message, DecisionRecord)]
        self.sources.update(r.chosen_source for r in records if r.kind == "command")
        self.prediction_errors += [
            (sim.now, r.model, r.prediction_errors) for r in records if r.kind == "outcome" and r.prediction_errors
        ]
        for command in (a.message for a in actions if isinstance(a.message, ScalingCommand)):
            sim.apply(command.target)
            ack = CommandAck(
                app=command.app,
                decision_id=command.decision_id,
                generation=command.generation,
                status="applied",
                applied=sim.parallelism,
                acked_at=now,
            )
            self.controller.on_ack(ack, now)
        return elapsed_ms if self.controller.decisions > decisions else None


def phase_start(scenario: Scenario, horizon_s: float) -> float:
    """When the rate last changed within the run: the last step, or the start."""
    if isinstance(scenario.schedule, Steps):
        return max([0.0, *(at for at, _ in scenario.schedule.steps if at < horizon_s)])
    return 0.0


def run_episode(scenario: Scenario, policy_name: str, factory: PolicyFactory, settings: BenchSettings) -> EpisodeResult:
    sim = Simulator(scenario, seed=settings.seed)
    built = factory(scenario, sim)
    window_s = settings.decision_interval_s
    driver = (
        AsTheService(built) if isinstance(built, AppController) else OnTheGrid(built, window_s, scenario.downtime_s)
    )
    horizon_s = settings.horizon_s or scenario.horizon_s
    per_window = round(window_s / scenario.interval_s)
    if per_window < 1 or abs(per_window * scenario.interval_s - window_s) > 1e-9:
        raise ValueError(f"decision interval {window_s} s is not a whole number of {scenario.interval_s} s reports")
    n_windows = round(horizon_s / window_s)
    scalable = [op.name for op in scenario.operators if not op.is_source]

    samples: list[Sample] = []
    sustained: list[bool] = []
    decision_ms: list[float] = []
    trace = [(sim.now, sim.parallelism)]
    for w in range(n_windows):
        backlog_start = sim.source_equivalent_lag()
        window_samples = []
        for _ in range(per_window):
            reports = sim.run(scenario.interval_s)
            window_samples.append(_sample(sim, scalable, settings.reward))
            if w == n_windows - 1 and len(window_samples) == per_window:
                break  # nothing would observe a decision taken at the horizon
            before = sim.reconfigurations
            if (elapsed_ms := driver.step(sim, reports)) is not None:
                decision_ms.append(elapsed_ms)
            if sim.reconfigurations != before:
                trace.append((sim.now, sim.parallelism))
        samples.extend(window_samples)
        sustained.append(_sustained(window_samples, backlog_start, window_s))

    first_phase_window = math.ceil(phase_start(scenario, horizon_s) / window_s - 1e-9)
    reached = next((j for j in range(first_phase_window, n_windows) if sustained[j]), None)
    tail = [s for s in samples if s.t > 0.75 * horizon_s]
    return EpisodeResult(
        scenario=scenario.name,
        policy=policy_name,
        tags=sorted(scenario.tags),
        sustainable=sim.sustainable(),
        decisions_to_sustain=None if reached is None else reached - first_phase_window,
        parallelism_ratio=statistics.fmean(s.parallelism / s.oracle for s in tail),
        reconfigurations=sim.reconfigurations,
        seconds_backlog_over_dstar=scenario.interval_s
        * sum(settings.reward.over_d_star(s.backlog_s, s.lag) for s in samples),
        mean_reward=statistics.fmean(math.exp(s.log_reward) for s in samples),
        mean_log_reward=statistics.fmean(s.log_reward for s in samples),
        oscillations_per_operator=direction_changes(trace, scalable) / max(1, len(scalable)),
        decision_ms_mean=statistics.fmean(decision_ms) if decision_ms else 0.0,
        decision_ms_max=max(decision_ms, default=0.0),
        sustained_share=sum(sustained) / len(sustained),
        final_lag=sim.total_lag(),
        mean_latency_ms=statistics.fmean(s.latency_ms for s in samples),
        commands_by_source=dict(driver.sources) if isinstance(driver, AsTheService) else {},
        prediction_errors=driver.prediction_errors if isinstance(driver, AsTheService) else [],
        samples=samples,
        parallelism_trace=trace,
    )


def _sample(sim: Simulator, scalable: list[str], params: RewardParams) -> Sample:
    parallelism = sim.parallelism
    oracle = sim.oracle()
    measured = sim.measured()
    return Sample(
        t=sim.now,
        parallelism=sum(parallelism[n] for n in scalable),
        oracle=sum(oracle[n] for n in scalable),
        lag=measured.lag,
        backlog=sim.source_equivalent_lag(),
        backlog_s=measured.backlog_s,
        latency_ms=measured.latency_ms,
        log_reward=log_reward(measured, params),
        processed_rate=sim.processed_rate(),
        arrived_rate=sim.arrived_rate(),
    )


def _sustained(window: list[Sample], backlog_start: float, window_s: float) -> bool:
    arrived = statistics.fmean(s.arrived_rate for s in window)
    processed = statistics.fmean(s.processed_rate for s in window)
    growth = window[-1].backlog - backlog_start
    return processed >= SUSTAIN_FRACTION * arrived and growth < (1 - SUSTAIN_FRACTION) * arrived * window_s


def direction_changes(trace: list[tuple[float, dict[str, int]]], operators: list[str]) -> int:
    """How often an operator's parallelism turned around: up then down, or down then up."""
    changes = 0
    for name in operators:
        last_direction = 0
        for (_, before), (_, after) in itertools.pairwise(trace):
            direction = (after[name] > before[name]) - (after[name] < before[name])
            if direction and last_direction and direction != last_direction:
                changes += 1
            last_direction = direction or last_direction
    return changes
