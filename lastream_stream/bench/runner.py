"""Episodes: one policy steering one simulated scenario, and what it achieved.

Every ``decision_interval_s`` the policy sees ``build_graph`` of the reports of the window
that just ended and returns a scheme; a scheme that differs from the running one is applied
(a reconfiguration, with the scenario's downtime). Between decisions the simulator is
sampled once per reporting interval for the ground-truth measures below.

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
* ``seconds_lag_over_dstar``: seconds with total lag above ``D_star`` records.
* ``mean_reward``: La-Stream's reward (``policy.reward``) averaged over samples.
* ``oscillations_per_operator``: direction changes (up then down, or down then up) of the
  scalable operators' parallelism, divided by their number.
* ``decision_ms_mean`` / ``decision_ms_max``: wall-clock time of ``decide``.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lastream_stream.bench.baselines import DS2Policy, FlinkAutoscaler, FlinkSettings, KedaScaler, OraclePolicy, StaticPolicy
from lastream_stream.controller import ControllerSettings, LearningPolicy
from lastream_stream.policy.base import Decision, DecisionContext, PastDecision, Policy
from lastream_stream.policy.graph import AppGraph, build_graph
from lastream_stream.policy.outcomes import Outcomes
from lastream_stream.policy.reward import RewardParams, log_reward, reward
from lastream_stream.sim import Scenario, Simulator, Steps

log = logging.getLogger(__name__)

POLICY_NAMES = ("static", "oracle", "ds2", "flink", "keda", "lastream", "lastream-online")
SUSTAIN_FRACTION = 0.95  # processed / arrived for a window to count as keeping up
HISTORY_SHOWN = 8  # past decisions handed to a policy in its context


class PolicyUnavailable(RuntimeError):
    """A policy that cannot be built here (e.g. the La-Stream model is not there yet)."""


@dataclass(frozen=True)
class BenchSettings:
    seed: int = 0
    n_scenarios: int = 36
    horizon_s: float | None = None  # None: each scenario's own horizon
    decision_interval_s: float = 10.0  # DS2's policy interval
    policies: tuple[str, ...] = POLICY_NAMES
    out_dir: Path = Path("benchmarks/results/bench")
    plot_scenarios: int = 3  # parallelism-over-time plots for the first scenarios
    llm: bool = False  # add DeepSeek candidates to the La-Stream policy (needs DEEPSEEK_API_KEY)
    reward: RewardParams = field(default_factory=RewardParams)

    def __post_init__(self) -> None:
        if unknown := set(self.policies) - set(POLICY_NAMES):
            raise ValueError(f"unknown policies {sorted(unknown)}; known: {', '.join(POLICY_NAMES)}")


@dataclass(frozen=True)
class Sample:
    """The simulator's ground truth at the end of one reporting interval."""

    t: float
    parallelism: int  # scalable operators, all instances
    oracle: int  # the oracle's instances of the same operators
    lag: float  # records in all input queues
    backlog: float  # the same in source records
    latency_ms: float
    reward: float
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
    seconds_lag_over_dstar: float
    mean_reward: float
    oscillations_per_operator: float
    decision_ms_mean: float
    decision_ms_max: float
    sustained_share: float  # windows that sustained the rate, of all windows
    final_lag: float
    mean_latency_ms: float
    samples: list[Sample] = field(default_factory=list, repr=False)
    parallelism_trace: list[tuple[float, dict[str, int]]] = field(default_factory=list, repr=False)

    def measures(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k not in ("samples", "parallelism_trace")}


PolicyFactory = Callable[[Scenario, Simulator], Policy]


def policy_factory(name: str, settings: BenchSettings) -> PolicyFactory:
    """A function that builds a fresh policy per episode: baselines keep per-run state."""
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
    if name == "lastream":
        return lastream_factory(settings, learn=False)
    if name == "lastream-online":
        return lastream_factory(settings, learn=True)
    raise ValueError(f"unknown policy {name!r}")


def lastream_factory(settings: BenchSettings, learn: bool) -> PolicyFactory:
    """The La-Stream agent with its pretrained evaluator (untrained if none is shipped),
    plus DeepSeek candidates when ``settings.llm`` is set and a key is there.

    The model is loaded once; each episode gets its own copy, so an agent that ``learn``s
    online starts every episode from the shipped model. The scenario's restart time
    reaches it through the decision context, as it reaches every policy."""
    try:
        from lastream_stream.policy.agent import LaStreamAgent
        from lastream_stream.policy.llm import LLMGenerator
    except ImportError as exc:
        raise PolicyUnavailable(f"the La-Stream agent is not importable: {exc}") from exc

    template = LaStreamAgent.pretrained()
    # One LLM client shared by all episodes: it holds connections, not decision state.
    extra = []
    if settings.llm:
        llm = LLMGenerator()
        if llm.enabled:
            extra.append(llm)
        else:
            log.warning("--llm: $%s is not set, the LLM generator is skipped", llm.config.api_key_env)

    def build(scenario: Scenario, sim: Simulator) -> Policy:
        agent = copy.deepcopy(template)
        agent.generators = [*agent.generators, *extra]
        return AsTheServiceRuns(agent, settings.decision_interval_s, learn=learn, reward_params=settings.reward)

    return build


@dataclass
class AsTheServiceRuns:
    """A policy timed as the agent service's controller times it: after a reconfiguration it
    waits out the warm-up and the restart, then a full window, before deciding again, so a
    window disturbed by the restart is never decided on. On the bench's fixed decision grid
    that means skipping the windows that end before max(warm-up, restart) + window has
    passed. (The baselines keep their originals' own warm-ups: DS2's two intervals, Flink's
    stabilisation, KEDA's.)

    With ``learn``, it also learns as the controller does (``policy/outcomes.py``): every
    window it decides on counts towards the outcomes of the decisions whose scheme runs, a
    change drops the incomplete ones, and each complete outcome is observed and followed by
    ``controller.train_steps`` training steps."""

    policy: Policy
    decision_interval_s: float
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    learn: bool = False
    reward_params: RewardParams = field(default_factory=RewardParams)
    _skip: int = field(default=0, init=False)
    _last_parallelism: dict[str, int] | None = field(default=None, init=False)
    _learner: LearningPolicy | None = field(default=None, init=False)
    _outcomes: Outcomes | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.learn:
            if not isinstance(self.policy, LearningPolicy):
                raise TypeError(f"{self.policy.name} does not learn")
            self._learner = self.policy
            self._outcomes = Outcomes(self.decision_interval_s, self.controller.outcome_s, self.policy.horizon_s)

    @property
    def name(self) -> str:
        return self.policy.name

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        current = graph.parallelism
        if self._last_parallelism is not None and current != self._last_parallelism:
            self._skip = self._settle_windows(context)
        self._last_parallelism = current
        if self._skip > 0:
            self._skip -= 1
            return Decision.single(self.name, graph, current, note="warm-up")
        if self._outcomes is None:
            return self.policy.decide(graph, context)
        self._learn(self._outcomes.window(log_reward(graph.latency_ms, graph.total_lag, current, self.reward_params), current))
        decision = self.policy.decide(graph, context)
        if decision.chosen == current:
            self._outcomes.start(decision)
        else:
            self._outcomes.replaced()
            self._outcomes.start(decision, unobserved_s=self._settle_windows(context) * self.decision_interval_s)
        return decision

    def _settle_windows(self, context: DecisionContext | None) -> int:
        """Windows of the grid skipped after a change: those ending before the warm-up and the
        restart are both over, plus a full window."""
        restart_s = context.restart_s if context is not None and context.restart_s is not None else 0.0
        settle_s = max(self.controller.warmup_s, restart_s) + self.controller.window_s
        return math.ceil(settle_s / self.decision_interval_s - 1e-9) - 1

    def _learn(self, closed: list[tuple[Decision, float]]) -> None:
        for decision, measured_log_reward in closed:
            self._learner.observe(decision, math.exp(measured_log_reward))
            self._learner.train(self.controller.train_steps)


def phase_start(scenario: Scenario, horizon_s: float) -> float:
    """When the rate last changed within the run: the last step, or the start."""
    if isinstance(scenario.schedule, Steps):
        return max([0.0, *(at for at, _ in scenario.schedule.steps if at < horizon_s)])
    return 0.0


def run_episode(scenario: Scenario, policy_name: str, factory: PolicyFactory, settings: BenchSettings) -> EpisodeResult:
    sim = Simulator(scenario, seed=settings.seed)
    policy = factory(scenario, sim)
    window_s = settings.decision_interval_s
    horizon_s = settings.horizon_s or scenario.horizon_s
    per_window = round(window_s / scenario.interval_s)
    if per_window < 1 or abs(per_window * scenario.interval_s - window_s) > 1e-9:
        raise ValueError(f"decision interval {window_s} s is not a whole number of {scenario.interval_s} s reports")
    n_windows = round(horizon_s / window_s)
    scalable = [op.name for op in scenario.operators if not op.is_source]

    samples: list[Sample] = []
    sustained: list[bool] = []
    decision_ms: list[float] = []
    history: list[PastDecision] = []
    trace = [(sim.now, sim.parallelism)]
    pending_scheme: dict[str, int] | None = None
    for w in range(n_windows):
        backlog_start = sim.source_equivalent_lag()
        reports = []
        window_samples = []
        for _ in range(per_window):
            reports.extend(sim.run(scenario.interval_s))
            window_samples.append(_sample(sim, scalable, settings.reward))
        samples.extend(window_samples)
        sustained.append(_sustained(window_samples, backlog_start, window_s))
        if pending_scheme is not None:
            # What the last decision led to, for a policy that learns from its history.
            history.append(PastDecision(pending_scheme, statistics.fmean(s.reward for s in window_samples)))
        if w == n_windows - 1:
            break  # nothing would observe a decision taken at the horizon

        # Every policy is told the restart time, as Flink's autoscaler is configured with it.
        context = DecisionContext(history=tuple(history[-HISTORY_SHOWN:]), restart_s=scenario.downtime_s)
        started = time.perf_counter()
        decision = policy.decide(build_graph(reports), context)
        decision_ms.append(1000.0 * (time.perf_counter() - started))
        before = sim.reconfigurations
        sim.apply(decision.chosen)
        pending_scheme = sim.parallelism
        if sim.reconfigurations != before:
            trace.append((sim.now, sim.parallelism))

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
        seconds_lag_over_dstar=scenario.interval_s * sum(s.lag > settings.reward.d_star for s in samples),
        mean_reward=statistics.fmean(s.reward for s in samples),
        oscillations_per_operator=direction_changes(trace, scalable) / max(1, len(scalable)),
        decision_ms_mean=statistics.fmean(decision_ms) if decision_ms else 0.0,
        decision_ms_max=max(decision_ms, default=0.0),
        sustained_share=sum(sustained) / len(sustained),
        final_lag=sim.total_lag(),
        mean_latency_ms=statistics.fmean(s.latency_ms for s in samples),
        samples=samples,
        parallelism_trace=trace,
    )


def _sample(sim: Simulator, scalable: list[str], params: RewardParams) -> Sample:
    parallelism = sim.parallelism
    oracle = sim.oracle()
    lag = sim.total_lag()
    latency = sim.latency_ms()
    return Sample(
        t=sim.now,
        parallelism=sum(parallelism[n] for n in scalable),
        oracle=sum(oracle[n] for n in scalable),
        lag=lag,
        backlog=sim.source_equivalent_lag(),
        latency_ms=latency,
        reward=reward(latency, lag, parallelism, params),
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
        for (_, before), (_, after) in zip(trace, trace[1:]):
            direction = (after[name] > before[name]) - (after[name] < before[name])
            if direction and last_direction and direction != last_direction:
                changes += 1
            last_direction = direction or last_direction
    return changes
