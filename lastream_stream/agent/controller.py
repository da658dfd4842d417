"""The agent's decision cycle for one app, as a pure state machine.

The service feeds it reports, acks and the clock, and carries out the actions it returns
(publish a command, publish a decision record). Keeping the cycle free of I/O lets the
tests, the bench and pretraining (``bench.runner.AsTheService``, with the simulator as
the app) drive the very cycle the service runs.

    observing --(stable window, cooldown over, best != current)--> awaiting_ack
    awaiting_ack --(ack applied)--> observing (warm-up, then the scheme's outcome is measured)
    awaiting_ack --(ack partial/rejected or timeout)--> observing (no outcome recorded)
    observing --(the timed-out command's ack, applied)--> observing (warm-up; no outcome)

Only a command the controller knows it issued is awaited (``on_command``), and the ack
timeout counts on the controller's own clock from when it began to wait, never from the
command's ``issued_at``: a command anyone else wrote cannot stop the cycle.

Stability is a property of the cycle, not only of the policy's scores:

* an operator's change is not reversed within ``stabilisation_s`` (Flink's scale-down
  interval): no scale-in soon after a scale-out, and no scale-out soon after a scale-in
  unless the operator now falls behind (DS2 needs more instances than it runs);
* a scale-in goes no lower than the most instances the operator needed (DS2 at 100% busy)
  at any decision of the last ``stabilisation_s`` (Kubernetes' scale-down stabilisation
  window): a rate that dips and comes back does not cost two restarts;
* nor below the instances that keep it under ``scale_in_utilisation`` busy at the current
  rate (the Flink autoscaler's target utilisation): a scale-out that drained a backlog is
  kept while the rate needs it, and a policy that misjudges the rate cannot undo it;
* nothing is scaled in while the app still has a backlog to drain (Flink's backlog rule):
  the capacity that drains it would go;
* what the app no longer needs is given back (``trim``): when the policy holds, an
  operator that ran at one parallelism for ``scale_in_delay_s`` while every decision found
  fewer instances enough at ``scale_in_utilisation`` is trimmed to the most they needed,
  which the policy's error margin alone never allows for an app of 3 instances or more;
* all are recorded in the decision record ("held: ...", "trimmed ...") and the last change,
  recent needs and running parallelism of each operator are part of the controller's saved
  state (``StabilityState``), so a restarted agent does not forget what it just did.

"Stable" means every operator's expected instances (the parallelism the supervisor last
acknowledged, else the median its reports claim; or the instances that report when more
do) have all reported for a full window that started after the warm-up
and after the restart (below) ended, so a rebalance in progress is never read as slowness:
an instance can report while it waits for its partitions. A window in which any instance
said it was not ready (waiting for partitions, replaying its state: it processes nothing and
its window looks calm) is neither decided on nor counted in any outcome, only recorded as a
hold by ``recovering`` (``not_ready``, in ``tick``). An app whose expected instances
never all report is decided on after ``restart_timeout_s`` anyway, and what is wrong with
its reporting (``policy/diagnose.py``) is logged once and recorded with every decision.
Reports are timed on the agent's clock when the service says when they arrived
(``ProducerClocks``); beyond ``max_operators`` / ``max_instances`` they are refused.

Each decision's outcome is measured as pretraining labels it (``policy/outcomes.py``): over
``outcome_s`` of windows of its scheme, the rest of the learner's horizon taken to go on as
the last window did. A hold is a decision too; one replaced sooner is judged on the windows
it ran for.

The controller also measures what a change costs: the restart time, from a command's issue
until every instance of every changed operator processed input again (to within one
reporting interval). The median of the last few is the ``restart_s`` its policy is told;
before the first, the policy assumes its configured one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import statistics
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lastream_stream.policy.base import Decision, DecisionContext, LearningPolicy, PastDecision, Policy
from lastream_stream.policy.diagnose import diagnose
from lastream_stream.policy.ds2 import DS2Settings, ds2_plan, falling_behind, required_instances
from lastream_stream.policy.graph import AppGraph, build_graph, covers, expected_parallelism
from lastream_stream.policy.measure import observed
from lastream_stream.policy.outcomes import Outcomes
from lastream_stream.policy.reward import RewardParams, log_reward
from lastream_stream.policy.window import ProducerClocks, recent
from lastream_stream.wire.contracts import (
    MAX_PARALLELISM,
    CommandAck,
    DecisionKind,
    DecisionRecord,
    HoldReason,
    MetricsReport,
    OperatorSummary,
    ScalingCommand,
    ScoredScheme,
)

log = logging.getLogger(__name__)

RESTARTS_KEPT = 5  # the policy is told the median of the last few measured restarts
HISTORY_KEPT = 8  # past decisions of this app, with their rewards, in the policy's context
# Recent rewards, for views and summaries (the last window's, a short run's outcomes); how many
# there were is counted apart. Kept per app for months: 1000 of each cost 12 MB for 200 apps.
RECENT_KEPT = 100
# The ack of another agent's command may be read before the command itself; the app's next
# ack needs a command in between, so a few recent ones are plenty (the control history too).
ACKS_KEPT = 10


class ControllerSettings(BaseSettings):
    """Guard rails and timing of the decision cycle (``LASTREAM_CONTROLLER_*``)."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_CONTROLLER_", extra="ignore")
    # These settings were LASTREAM_AGENT_* before the agent's and the controller's settings got a prefix each;
    # an old name still set is ignored with a warning.
    renamed_from: ClassVar[str] = "LASTREAM_AGENT_"
    # Settings added since: they never had an old name.
    added_since_rename: ClassVar[frozenset[str]] = frozenset({"scale_in_delay_s", "scale_in_utilisation"})

    window_s: float = Field(
        default=10.0, gt=0, description="Length of the window of reports a decision is made on, seconds."
    )
    warmup_s: float = Field(default=6.0, ge=0, description="Reports this long after a rescale are ignored, seconds.")
    cooldown_s: float = Field(default=0.0, ge=0, description="Least time between two commands, seconds.")
    ack_timeout_s: float = Field(
        default=90.0, gt=0, description="Seconds to wait for a command's ack before observing again without it."
    )
    restart_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Decide again after this long even if a new instance never got input, seconds.",
    )
    # A guard against a wild proposal, not a pace: a step that DS2 needs should go in one restart.
    max_step: int = Field(default=64, ge=1, description="Largest change of one operator's parallelism per command.")
    stabilisation_s: float = Field(
        default=120.0,
        ge=0,
        description="No reversal of an operator's last change within this long, unless it falls behind; no scale-in below its peak need over this long. Seconds.",
    )
    drain_backlog_s: float = Field(
        default=5.0, ge=0, description="No scale-in while the app's backlog exceeds this many seconds of input."
    )
    scale_in_delay_s: float = Field(
        default=240.0,
        ge=0,
        description="Trim an operator the policy keeps once it has run this long unchanged and over-provisioned at every "
        "decision (fewer instances would have stayed under `LASTREAM_CONTROLLER_SCALE_IN_UTILISATION` busy at the highest load of that "
        "time), with no backlog: the Flink autoscaler's scale-down interval, KEDA's cooldown. Seconds; 0: never.",
    )
    scale_in_utilisation: float = Field(
        default=0.7,
        gt=0,
        le=1,
        description="How busy an operator may be after a scale-in: at the current rate for any scale-in, at the highest load "
        "of the scale-in delay for a trim. The headroom it keeps (the Flink autoscaler's target utilisation).",
    )
    latency_target_ms: dict[str, float] = Field(
        default_factory=dict,
        description='Latency target of the reward per app, ms, e.g. `{"wordcount": 500}`; the reward\'s default for the others.',
    )
    min_parallelism: dict[str, int] = Field(
        default_factory=dict, description='Least parallelism per operator, e.g. `{"counter": 2}`; 1 for the others.'
    )
    max_parallelism: dict[str, int] = Field(
        default_factory=dict,
        description="Most parallelism per operator; the others are capped by their partitions only.",
    )
    dry_run: bool = Field(default=False, description="Publish recommendations to the decisions topic, never commands.")
    # The online model decides for an app only once it predicts the app's outcomes clearly
    # better than the shipped one (policy/agent.py): trained on the outcomes of the schemes it
    # runs, and only those, it was once measured to mark down the schemes it does not run.
    train_steps: int = Field(
        default=2,
        ge=0,
        description="Mini-batch updates of the online model on the replay buffer after a measured outcome, at most "
        "once per app every `LASTREAM_CONTROLLER_OUTCOME_S` (about 9 ms each on one core); 0: outcomes are recorded "
        "and saved, nothing is trained online.",
    )
    # As long as pretraining simulates a scheme before holding its last interval (simulate_s).
    outcome_s: float = Field(
        default=120.0,
        gt=0,
        description="Seconds of windows a decision is judged on; one replaced sooner, on those it ran for.",
    )
    max_operators: int = Field(
        default=1000, ge=1, description="Most operators of one app in a window; reports of more are refused."
    )
    max_instances: int = Field(
        default=1000, ge=1, description="Most instances of one operator in a window; reports of more are refused."
    )
    max_reports: int = Field(
        default=100_000,
        ge=1,
        description="Most reports of one app kept for its window; beyond, the oldest are dropped (logged).",
    )

    def model_post_init(self, context: object) -> None:
        if renamed := [
            f"{self.renamed_from}{name.upper()}"
            for name in type(self).model_fields
            if name not in self.added_since_rename and f"{self.renamed_from}{name.upper()}" in os.environ
        ]:
            log.warning("%s ignored: the decision cycle's settings are LASTREAM_CONTROLLER_* now", ", ".join(renamed))


def guard(
    current: dict[str, int], proposed: dict[str, int], graph: AppGraph, settings: ControllerSettings
) -> dict[str, int]:
    """The proposed scheme within the guard rails: bounded step, per-operator bounds, partitions;
    an upstream that never reports stays as it is (nothing of it is LaStream's to scale)."""
    guarded = {}
    for name, target in proposed.items():
        now = current.get(name, target)
        if name in graph.unreported:
            guarded[name] = now
            continue
        step = max(-settings.max_step, min(settings.max_step, target - now))
        low = settings.min_parallelism.get(name, 1)
        high = settings.max_parallelism.get(name, MAX_PARALLELISM)
        partitions = graph.operators[name].partitions if name in graph.operators else None
        if partitions is not None:
            high = min(high, partitions)
        guarded[name] = max(low, min(high, now + step))
    return guarded


@dataclass
class StabilityState:
    """What stabilisation is counted from, per operator: its last change (+1 out or -1 in,
    and when it was applied) and the instances it needed (DS2, at 100% busy) at each recent
    decision, epoch seconds."""

    last_change: dict[str, tuple[int, float]] = field(default_factory=dict)
    needs: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    # The instances that would have kept it at most `scale_in_utilisation` busy, at each recent decision.
    sized: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    # The parallelism each operator ran at, and since the first decision that saw it so:
    # a change made elsewhere (by hand, another tool) counts as a change too.
    running: dict[str, tuple[int, float]] = field(default_factory=dict)

    def applied(self, before: dict[str, int], after: dict[str, int], at: float) -> None:
        for name, n in after.items():
            if name in before and n != before[name]:
                self.last_change[name] = (1 if n > before[name] else -1, at)

    def needed(self, required: dict[str, int], at: float, keep_s: float) -> None:
        _record(self.needs, required, at, keep_s)

    def sized_for(self, instances: dict[str, int], at: float, keep_s: float) -> None:
        _record(self.sized, instances, at, keep_s)

    def saw(self, parallelism: dict[str, int], at: float) -> None:
        for name, n in parallelism.items():
            if self.running.get(name, (None, 0.0))[0] != n:
                self.running[name] = (n, at)

    def peak_need(self, name: str) -> tuple[int, float] | None:
        """The most instances ``name`` needed within the kept interval, and when."""
        return max(((k, t) for t, k in self.needs.get(name, [])), default=None)

    def to_json(self) -> dict[str, dict[str, list[list[float]]]]:
        return {
            "last_change": {name: [direction, at] for name, (direction, at) in self.last_change.items()},
            "needs": {name: [[t, k] for t, k in needs] for name, needs in self.needs.items()},
            "sized": {name: [[t, k] for t, k in sized] for name, sized in self.sized.items()},
            "running": {name: [n, since] for name, (n, since) in self.running.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, dict[str, list]]) -> StabilityState:
        def series(key: str) -> dict[str, list[tuple[float, int]]]:
            return {name: [(float(t), int(k)) for t, k in kept] for name, kept in data.get(key, {}).items()}

        return cls(
            {name: (int(direction), float(at)) for name, (direction, at) in data.get("last_change", {}).items()},
            series("needs"),
            series("sized"),
            {name: (int(n), float(since)) for name, (n, since) in data.get("running", {}).items()},
        )


def _record(series: dict[str, list[tuple[float, int]]], values: dict[str, int], at: float, keep_s: float) -> None:
    for name, n in values.items():
        series[name] = [(t, k) for t, k in series.get(name, []) if at - t < keep_s] + [(at, n)]


RATE_SHIFT = 0.2  # a source rate this much higher or lower in a window's second half than its first


def rate_shift(reports: list[MetricsReport], middle: float) -> float | None:
    """How much the sources' total rate moved from the first half of a window to the second
    (relative to the larger), when it moved more than ``RATE_SHIFT`` and more than counting
    noise (three standard deviations of a Poisson count) explains; None otherwise. Such a
    window averages two rates and would size the app for neither. Each source instance's
    rate is its records over the seconds it reported in that half; only instances that
    reported in both halves count."""
    halves: tuple[dict[str, list[MetricsReport]], dict[str, list[MetricsReport]]] = ({}, {})
    for r in reports:
        if not r.upstreams:
            halves[r.interval_end > middle].setdefault(f"{r.operator}/{r.instance_id}", []).append(r)
    both = halves[0].keys() & halves[1].keys()
    records = [sum(r.records_out for i in both for r in half[i]) for half in halves]
    if not both or not all(records):
        return None
    first, second = (
        sum(sum(r.records_out for r in half[i]) / sum(r.interval_s for r in half[i]) for i in both) for half in halves
    )
    shift = (second - first) / max(first, second)
    # A rate counted from n records is off by about 1 / sqrt(n) of itself.
    noise = 3 * (1 / records[0] + 1 / records[1]) ** 0.5
    return shift if abs(shift) > max(RATE_SHIFT, noise) else None


def not_ready(reports: list[MetricsReport]) -> list[str]:
    """The instances that said, in any of ``reports``, that they are not ready."""
    return sorted({f"{r.operator}/{r.instance_id}" for r in reports if not r.ready})


@dataclass(frozen=True)
class Held:
    """One operator kept where it runs against a proposed change: by which rule, and the note saying so."""

    reason: HoldReason
    note: str


def bounded(current: dict[str, int], proposed: dict[str, int], guarded: dict[str, int]) -> list[Held]:
    """The proposed changes the guard rails undid entirely (a change they only shortened still goes)."""
    return [
        Held("bounds", f"held {name} at {current[name]} (proposed {target}): outside its bounds or partitions")
        for name, target in proposed.items()
        if name in current and target != current[name] and guarded[name] == current[name]
    ]


def stabilise(
    current: dict[str, int],
    proposed: dict[str, int],
    graph: AppGraph,
    state: StabilityState,
    now: float,
    settings: ControllerSettings,
) -> tuple[dict[str, int], list[Held]]:
    """``proposed`` without the changes stability rules out, and what held each one.
    Records what each operator needs now, which later scale-ins must respect."""
    plan = ds2_plan(graph)
    measured = observed(graph, plan)
    behind = falling_behind(graph, plan)
    state.needed(measured.required, now, settings.stabilisation_s)
    sized = ds2_plan(graph, DS2Settings(target_utilisation=settings.scale_in_utilisation)).parallelism
    # Kept a little past the delay, so that the evidence of a full delay is there at its end.
    state.sized_for(sized, now, settings.scale_in_delay_s + settings.window_s)
    state.saw(current, now)
    stable, held, held_in = dict(proposed), [], False
    for name, target in proposed.items():
        now_at = current.get(name, target)
        direction = (target > now_at) - (target < now_at)
        if direction == 0:
            continue
        last_direction, at = state.last_change.get(name, (0, float("-inf")))
        peak, peak_at = state.peak_need(name) or (target, now)
        if direction < 0 and measured.backlogged(settings.drain_backlog_s):
            held.append(
                Held(
                    "draining",
                    f"held {name} at {now_at}: no scale-in while a backlog of {measured.backlog_s:.1f} s of input drains",
                )
            )
        elif (
            direction == -last_direction
            and now - at < settings.stabilisation_s
            and not (direction > 0 and name in behind)
        ):
            held.append(
                Held(
                    "stabilisation",
                    f"held {name} at {now_at}: reversal {now - at:.0f} s after its last change, within stabilisation ({settings.stabilisation_s:.0f} s)",
                )
            )
        elif direction < 0 and target < peak:
            # A rate that dipped may come back; and one scale-in once it has not is one restart, not two.
            held.append(
                Held(
                    "peak_need",
                    f"held {name} at {now_at} (proposed {target}): it needed {peak} instances {now - peak_at:.0f} s ago",
                )
            )
        elif direction < 0 and target < sized[name]:
            # The trim's headroom holds for every scale-in: a right scale-out is not undone
            # once the backlog it drained is gone, nor by a policy that misjudges the rate.
            held.append(
                Held(
                    "headroom",
                    f"held {name} at {now_at} (proposed {target}): {sized[name]} keep it under "
                    f"{settings.scale_in_utilisation:.0%} busy at this rate",
                )
            )
        else:
            continue
        stable[name] = now_at
        held_in |= direction < 0
    # Scale-ins wait for each other, so that they cost one restart between them, not one each.
    if held_in and all(stable[name] <= current.get(name, stable[name]) for name in stable):
        waiting = [name for name in stable if stable[name] < current.get(name, stable[name])]
        held += [
            Held(
                "scale_in_together",
                f"held {name} at {current[name]} (proposed {stable[name]}): scales in with the others",
            )
            for name in waiting
        ]
        stable.update({name: current[name] for name in waiting})
    return stable, held


def trim(
    current: dict[str, int], graph: AppGraph, state: StabilityState, now: float, settings: ControllerSettings
) -> tuple[dict[str, int], list[str]]:
    """The running scheme with every operator trimmed that has run over-provisioned for the
    whole ``scale_in_delay_s`` (and the stabilisation interval, if longer): at the same
    parallelism at every decision of that time, by whoever set it, and at each of them
    fewer instances would have stayed under ``scale_in_utilisation`` busy; trimmed to the
    most that any of them needed, never below the stabilisation interval's peak need, never
    while a backlog drains, and within the guard rails. What the policy's error margin
    cannot see: a trim's saving accrues for as long as the app runs, its restart costs once.
    A trim that proves too small falls behind, which the policy answers at once (no margin,
    no stabilisation)."""
    delay = settings.scale_in_delay_s
    if delay <= 0 or observed(graph).backlogged(settings.drain_backlog_s):
        return current, []
    unchanged_s = max(delay, settings.stabilisation_s)
    trimmed, notes = dict(current), []
    for name, n in current.items():
        op = graph.operators.get(name)
        running, since = state.running.get(name, (None, now))
        if op is None or op.is_source or name in graph.unreported or running != n or now - since < unchanged_s:
            continue
        sized = [(t, k) for t, k in state.sized.get(name, []) if now - t <= delay]
        if not sized or now - sized[0][0] < delay - settings.window_s:  # evidence over the whole delay
            continue
        enough = max(k for _, k in sized)
        peak = (state.peak_need(name) or (1, now))[0]
        target = guard({name: n}, {name: max(enough, peak)}, graph, settings)[name]
        if target < n:
            trimmed[name] = target
            notes.append(
                f"trimmed {name} {n} -> {target}: for {delay:.0f} s at {n}, {enough} kept it under "
                f"{settings.scale_in_utilisation:.0%} busy at every decision, with no backlog"
            )
    return trimmed, notes


class Phase(Enum):
    OBSERVING = "observing"
    AWAITING_ACK = "awaiting_ack"


@dataclass
class Publish:
    """An action for the service: send ``message`` (a command or a decision record)."""

    message: ScalingCommand | DecisionRecord


@dataclass
class PauseTimer:
    """Times a reconfiguration pause: from a command until every new instance processes
    input (a crashed worker's restart is the supervisor's business, not this). Created when
    the command is published, so that reports of instances that start before the ack
    arrives count too."""

    issued_at: float
    before: dict[str, int]  # parallelism of the changed operators when the command was issued
    expected: dict[str, int]  # changed operator: instances it runs once the command is applied
    first_input: dict[tuple[str, str], float] = field(
        default_factory=dict
    )  # (operator, instance): end of its first interval with input

    def seen(self, report: MetricsReport) -> float | None:
        """The restart time, seconds, once this report completes the picture; None before."""
        expected = self.expected.get(report.operator)
        # Only intervals wholly after the command with input. A scale-out is over once its new
        # instances process, which the count below waits for whatever the reports say their
        # parallelism is; a scale-in shows only in that figure (the remaining instances go on).
        if expected is None or report.records_in == 0 or report.interval_start < self.issued_at:
            return None
        if expected < self.before[report.operator] and report.parallelism != expected:
            return None
        self.first_input.setdefault((report.operator, report.instance_id), report.interval_end)
        processing = Counter(operator for operator, _ in self.first_input)
        if any(processing[operator] < n for operator, n in self.expected.items()):
            return None
        return max(0.0, max(self.first_input.values()) - self.issued_at)

    def applied(self, reached: dict[str, int]) -> bool:
        """The ack's parallelism: what to wait for. False when nothing changed after all
        (the supervisor clamped the change away), which leaves nothing to measure."""
        self.expected = {name: n for name, n in reached.items() if name in self.before and n != self.before[name]}
        self.first_input = {key: end for key, end in self.first_input.items() if key[0] in self.expected}
        return bool(self.expected)


@dataclass(frozen=True)
class TimedOut:
    """A command whose ack did not come in time: its id, and the parallelism it was issued on."""

    decision_id: str
    before: dict[str, int]


@dataclass
class AppController:
    app: str
    policy: Policy
    settings: ControllerSettings
    reward_params: RewardParams = field(default_factory=RewardParams)
    generation: int = 0  # of the last command seen on the control topic
    phase: Phase = Phase.OBSERVING
    reports: list[MetricsReport] = field(default_factory=list)
    since: float = 0.0  # reports before this are not part of the current window
    last_command_at: float = float("-inf")
    pending: ScalingCommand | None = None  # published, not acknowledged yet
    awaiting_since: float = 0.0  # when the controller began to await `pending`, on its own clock
    pending_decision: Decision | None = None
    timed_out: TimedOut | None = None  # the last command whose ack did not come in time
    decisions: int = 0
    commands: int = 0  # published by this controller (the generation also counts other runs')
    rewards: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_KEPT))  # measured outcomes of decisions
    outcomes_measured: int = 0  # every one since the start; `rewards` keeps the recent ones
    trained_at: float = float("-inf")  # when the online model last trained on this app's outcomes
    window_rewards: deque[float] = field(
        default_factory=lambda: deque(maxlen=RECENT_KEPT)
    )  # every stable window's own reward
    first_window_reward: float | None = None
    acked: deque[str] = field(default_factory=lambda: deque(maxlen=ACKS_KEPT))  # recent acknowledged decision ids
    history: deque[PastDecision] = field(default_factory=lambda: deque(maxlen=HISTORY_KEPT))
    pause: PauseTimer | None = None  # the reconfiguration pause being measured
    skipped_shift: bool = False  # the last stable window was skipped for a rate shift
    restarts_s: deque[float] = field(default_factory=lambda: deque(maxlen=RESTARTS_KEPT))
    stability: StabilityState = field(default_factory=StabilityState)
    replaced_outcomes: list[tuple[Decision, float]] = field(
        default_factory=list
    )  # judged when replaced, recorded at the next tick
    warned: set[str] = field(default_factory=set)  # problems of the app's reporting logged and not gone since
    operators_seen: set[str] = field(default_factory=set)  # every operator that ever reported
    running: dict[str, int] = field(default_factory=dict)  # parallelism the supervisor last acknowledged
    producers: dict[str, set[str]] = field(default_factory=dict)  # each operator's instances in the window
    window_age_s: float | None = None  # of the window last decided on: from its newest report's end to the decision
    clocks: ProducerClocks = field(init=False)
    outcomes: Outcomes = field(init=False)

    def __post_init__(self) -> None:
        self.clocks = ProducerClocks(self.app)
        horizon_s = self.policy.horizon_s if isinstance(self.policy, LearningPolicy) else self.settings.outcome_s
        self.outcomes = Outcomes(self.settings.window_s, self.settings.outcome_s, horizon_s)

    @property
    def app_reward_params(self) -> RewardParams:
        return self.reward_params.for_app(self.settings.latency_target_ms.get(self.app))

    @property
    def restart_s(self) -> float | None:
        """What a change costs this app, as measured; None before the first measurement."""
        return statistics.median(self.restarts_s) if self.restarts_s else None

    # -- inputs ------------------------------------------------------------------------

    def on_report(self, report: MetricsReport, received_at: float | None = None) -> str | None:
        """Take a report, timed by the agent's clock when ``received_at`` says when it
        arrived; the reason when it is refused (beyond the caps on operators and instances)."""
        if received_at is not None:
            report = self.clocks.retime(report, received_at)
        if (refused := self._beyond_caps(report)) is not None:
            return refused
        # Before the warm-up filter: warm-up reports are what show the restart ending.
        if self.pause is not None and (seconds := self.pause.seen(report)) is not None:
            self.restarts_s.append(seconds)
            self.pause = None
            log.info("%s: the new instances processed input %.1f s after the command", self.app, seconds)
            if self.phase is Phase.OBSERVING:
                self._open_window(max(self.since, report.interval_end))
        if report.interval_start >= self.since:
            self.reports.append(report)
            if len(self.reports) > self.settings.max_reports:
                log.warning(
                    "%s: more reports in the window than the %d allowed (LASTREAM_CONTROLLER_MAX_REPORTS); dropping the oldest",
                    self.app,
                    self.settings.max_reports,
                )
                del self.reports[0]
        return None

    def _beyond_caps(self, report: MetricsReport) -> str | None:
        instances = self.producers.get(report.operator)
        if instances is None:
            if len(self.producers) >= self.settings.max_operators:
                return f"{self.app} has {len(self.producers)} operators in the window, the most allowed (LASTREAM_CONTROLLER_MAX_OPERATORS)"
            instances = self.producers[report.operator] = set()
        if report.instance_id not in instances:
            if len(instances) >= self.settings.max_instances:
                return f"{report.operator} has {len(instances)} instances in the window, the most allowed (LASTREAM_CONTROLLER_MAX_INSTANCES)"
            instances.add(report.instance_id)
        return None

    def on_command(self, command: ScalingCommand, now: float, signed: bool = False) -> None:
        """A command seen on the control topic (ours or anyone's): the generation to beat.

        Awaited, instead of re-issued, only when nobody acknowledged it yet and ``signed``: a
        LaStream component issued it (the service says so of a signed command it replays at
        start-up, this agent's own before a restart). Any other command may come from anyone
        (an unauthenticated control plane, an operator by hand): its ack may never come, so
        it is taken as a change of the app, a warm-up, and the cycle goes on. Our own command
        read back has the generation we gave it: nothing new."""
        if command.generation <= self.generation:
            return
        self.generation = command.generation
        # Dated by its issuer's clock: one ahead of ours must not hold the cooldown.
        self.last_command_at = min(command.issued_at, now)
        if self.pending is not None:
            # Someone else's command supersedes ours: what runs next is not our decision.
            self.pending_decision = None
            self.pause = None
        # Replayed history interleaves the control and acks topics: the ack may come first.
        if signed and command.decision_id not in self.acked:
            self._await(command, now)
        else:
            self.pending = None
            self.phase = Phase.OBSERVING
            self._open_window(now + self.settings.warmup_s)

    def on_publish_failed(self, decision_id: str, now: float) -> None:
        """Our command never reached the broker: no ack will come, nothing changes; observe again."""
        if self.pending is not None and self.pending.decision_id == decision_id:
            self.pause = None
            self._observe_again(now)

    def on_ack(self, ack: CommandAck, now: float) -> None:
        self.acked.append(ack.decision_id)
        if ack.status in ("applied", "partial"):
            self.running.update(ack.applied)
        pending = self.pending
        if self.timed_out is not None and ack.decision_id == self.timed_out.decision_id:
            self._late_ack(ack, now)
        if pending is None or ack.decision_id != pending.decision_id:
            return
        self.pending = None
        self.phase = Phase.OBSERVING
        self._open_window(now + self.settings.warmup_s)
        if ack.status in ("applied", "partial"):
            self.replaced_outcomes += self.outcomes.replaced()
        if self.pause is not None and (ack.status != "applied" or not self.pause.applied(ack.applied)):
            self.pause = None
        if (
            ack.status in ("applied", "partial")
            and self.pending_decision is not None
            and self.pending_decision.graph is not None
        ):
            self.stability.applied(self.pending_decision.graph.parallelism, ack.applied, now)
        if ack.status == "applied":
            log.info("%s: generation %d applied: %s", self.app, ack.generation, ack.applied)
            if self.pending_decision is not None:
                self.outcomes.start(self.pending_decision, unobserved_s=self.since - pending.issued_at)
        else:
            log.warning(
                "%s: generation %d %s (%s); not counted as an outcome", self.app, ack.generation, ack.status, ack.error
            )
        self.pending_decision = None

    def _late_ack(self, ack: CommandAck, now: float) -> None:
        """The ack of a command the controller stopped waiting for: what it applied is a
        change all the same, so stabilisation counts from it and the next window starts
        after its warm-up. No outcome: nobody watched its windows as its own."""
        timed_out, self.timed_out = self.timed_out, None
        if ack.status not in ("applied", "partial") or timed_out is None:
            return
        log.warning(
            "%s: generation %d %s after the ack timeout; warming up again", self.app, ack.generation, ack.status
        )
        self.stability.applied(timed_out.before, ack.applied, now)
        self.replaced_outcomes += self.outcomes.replaced()
        if self.phase is Phase.OBSERVING:
            self._open_window(now + self.settings.warmup_s)

    # -- the cycle ---------------------------------------------------------------------

    def tick(self, now: float) -> list[Publish]:
        # Awaiting an ack, or a restart, no window is decided on, but reports still come.
        self._keep_last_window(now)
        if self.phase is Phase.AWAITING_ACK:
            if self.pending is not None and now - self.awaiting_since > self.settings.ack_timeout_s:
                log.warning(
                    "%s: no ack for generation %d after %.0f s; observing again",
                    self.app,
                    self.pending.generation,
                    now - self.awaiting_since,
                )
                issued_on = self.pending_decision.graph if self.pending_decision is not None else None
                self.timed_out = TimedOut(self.pending.decision_id, dict(issued_on.parallelism) if issued_on else {})
                self._observe_again(now)
            return []
        replaced, self.replaced_outcomes = self.replaced_outcomes, []
        actions = [
            Publish(self._outcome(decision, decision.graph, r, now))
            for decision, r in replaced
            if decision.graph is not None
        ]
        if self.pause is not None:
            if now - self.pause.issued_at < self.settings.restart_timeout_s:
                return actions
            log.info(
                "%s: a new instance got no input for %.0f s; restart not measured, deciding again",
                self.app,
                now - self.pause.issued_at,
            )
            self.pause = None
        graph = self.stable_graph(now)
        if graph is None:
            return actions
        window_reports = list(self.reports)
        self.window_age_s = now - max(r.interval_end for r in window_reports)
        # This window is counted now, once: the next must not overlap it, even if deciding fails.
        self._open_window(now)
        if recovering := not_ready(window_reports):
            return [*actions, self._hold_recovering(graph, recovering)]
        shift = rate_shift(window_reports, now - self.settings.window_s / 2)
        if shift is not None and not self.skipped_shift:
            # Once only: a rate that keeps moving (a steep ramp) must not stall every decision.
            self.skipped_shift = True
            log.info(
                "%s: the source rate moved %+.0f%% within the window; deciding on the next, all at the new rate",
                self.app,
                100 * shift,
            )
            return actions
        self.skipped_shift = False
        window_log_reward = log_reward(observed(graph), self.app_reward_params)
        self.window_rewards.append(math.exp(window_log_reward))
        if self.first_window_reward is None:
            self.first_window_reward = self.window_rewards[-1]
        closed = self.outcomes.window(window_log_reward, graph.parallelism)
        actions += [Publish(self._outcome(decision, graph, r, now)) for decision, r in closed]
        if now - self.last_command_at < self.settings.cooldown_s:
            return actions
        return actions + self._decide(graph, now)

    def stable_graph(self, now: float) -> AppGraph | None:
        """The graph of the last ``window_s`` once every expected instance covered all of it."""
        self._keep_last_window(now)
        if not self.reports or now - self.since < self.settings.window_s:
            return None
        covered: dict[str, dict[str, float]] = {}  # operator: instance: seconds reported
        claims: dict[str, list[int]] = {}  # operator: the parallelism each report says
        for r in self.reports:
            seconds = covered.setdefault(r.operator, {})
            seconds[r.instance_id] = seconds.get(r.instance_id, 0.0) + r.interval_s
            claims.setdefault(r.operator, []).append(r.parallelism)
        self.producers = {op: set(seconds) for op, seconds in covered.items()}
        self.clocks.keep((op, instance) for op, seconds in covered.items() for instance in seconds)
        # Expected instances that never report (a wrong parallelism) must not stall the app for good.
        waited_out = now - self.since >= self.settings.restart_timeout_s
        self.operators_seen.update(covered)
        declared = {u for r in self.reports for u in r.upstreams}
        if declared & self.operators_seen - covered.keys() and not waited_out:
            return None  # an upstream that reported before is late (a restart): not an external source yet
        for operator, seconds in covered.items():
            full = sum(covers(s, self.settings.window_s) for s in seconds.values())
            # An instance that reports but has not covered the window starts or rebalances; only
            # one that keeps restarting is waited out, twice as long.
            if full < len(seconds) and now - self.since < 2 * self.settings.restart_timeout_s:
                return None
            if full < expected_parallelism(claims[operator], self.running.get(operator)) and not waited_out:
                return None
        try:
            return build_graph(self.reports, self.running)
        except ValueError as exc:  # e.g. every operator in a cycle: valid messages, unusable graph
            log.error("%s: cannot build the operator graph (%s); waiting for a new window", self.app, exc)
            self._open_window(now)
            return None

    def _hold_recovering(self, graph: AppGraph, recovering: list[str]) -> Publish:
        """A window with an instance not ready: its rates and lag say nothing of the scheme
        (a worker replaying its changelog processes nothing), so it is neither decided on
        nor counted in any outcome; the record says why."""
        self.decisions += 1
        note = f"held: {', '.join(recovering)} not ready (waiting for partitions or replaying state)"
        log.info("%s: holding %s: %s", self.app, graph.parallelism, note)
        decision = Decision(
            self.policy.name, self.app, dict(graph.parallelism), [], graph=graph, notes=[note], held_by=["recovering"]
        )
        return Publish(self._record(decision, graph, uuid.uuid4().hex, "hold", decision.chosen, None))

    def _decide(self, graph: AppGraph, now: float) -> list[Publish]:
        context = DecisionContext(
            history=tuple(self.history),
            restart_s=self.restart_s,
            latency_target_ms=self.settings.latency_target_ms.get(self.app),
        )
        proposed = self.policy.decide(graph, context)
        current = graph.parallelism
        guarded = guard(current, proposed.chosen, graph, self.settings)
        target, stable_held = stabilise(current, guarded, graph, self.stability, now, self.settings)
        held = bounded(current, proposed.chosen, guarded) + stable_held
        trimmed, trim_notes = (
            trim(current, graph, self.stability, now, self.settings) if target == current and not held else ({}, [])
        )
        if trim_notes:
            target = trimmed
        # What will run is what the outcome is learnt for.
        decision = dataclasses.replace(
            proposed,
            chosen=target,
            notes=[*proposed.notes, *(h.note for h in held), *trim_notes],
            # A trim goes ahead of whatever held the policy's own choice.
            held_by=[] if trim_notes else list(dict.fromkeys([*proposed.held_by, *(h.reason for h in held)])),
        )
        # The prediction and provenance of what runs, when the policy scored that scheme.
        chosen = decision.chosen_candidate
        predicted, source = (chosen.score, chosen.candidate.source) if chosen is not None else (None, "guarded")
        if trim_notes:
            source = "trim"
        self.decisions += 1
        decision_id = uuid.uuid4().hex
        if target == current:
            kind: DecisionKind = "hold"
            self.outcomes.start(decision)
            if decision.notes:
                log.info("%s: holding %s: %s", self.app, current, "; ".join(decision.notes))
        elif self.settings.dry_run:
            kind = "recommendation"
        else:
            kind = "command"
            self.generation += 1
            changes = {name: n for name, n in target.items() if n != current.get(name)}
            # The whole desired state, but for sources left as they run: the app may run
            # them outside its supervisor, which would refuse a target for them.
            scaled = {name: n for name, n in target.items() if name in changes or not graph.operators[name].is_source}
            # A scale-in's restart shows only in the parallelism the instances report: unmeasurable when that is wrong.
            timed = {
                name: n
                for name, n in changes.items()
                if n > current[name] or graph.operators[name].reported_parallelism == current[name]
            }
            self._await(
                ScalingCommand(
                    app=self.app,
                    decision_id=decision_id,
                    generation=self.generation,
                    target=scaled,
                    changed=sorted(changes),
                    issued_at=now,
                    reason=f"{source} scheme, predicted reward {predicted:.3g}"
                    if predicted is not None
                    else f"{source} scheme",
                ),
                now,
            )
            self.commands += 1
            self.pending_decision = decision
            self.pause = PauseTimer(now, {name: current[name] for name in timed}, timed) if timed else None
            self.last_command_at = now
            log.info("%s: generation %d -> %s (%s)", self.app, self.generation, changes, self.pending.reason)
        record = Publish(self._record(decision, graph, decision_id, kind, target, predicted, source=source))
        return [Publish(self.pending), record] if self.pending is not None and kind == "command" else [record]

    def _outcome(self, decision: Decision, graph: AppGraph, measured_log_reward: float, now: float) -> DecisionRecord:
        measured = math.exp(measured_log_reward)
        self.rewards.append(measured)
        self.outcomes_measured += 1
        self.history.append(PastDecision(dict(decision.chosen), measured))
        if isinstance(self.policy, LearningPolicy):
            self.policy.observe(decision, measured)
            # One outcome starts every window and each spans outcome_s: training on every one
            # would cost a thousand-app agent two cores for examples that mostly repeat.
            if now - self.trained_at >= self.settings.outcome_s:
                self.trained_at = now
                self.policy.train(self.settings.train_steps)
            decision = dataclasses.replace(decision, prediction_errors=self.policy.prediction_errors(self.app))
        log.info("%s: measured reward %.3g for %s", self.app, measured, decision.chosen)
        return self._record(decision, graph, uuid.uuid4().hex, "outcome", decision.chosen, None, measured)

    def _record(
        self,
        decision: Decision,
        graph: AppGraph,
        decision_id: str,
        kind: DecisionKind,
        chosen: dict[str, int],
        predicted: float | None,
        measured: float | None = None,
        source: str | None = None,
    ) -> DecisionRecord:
        problems = diagnose(graph)
        if kind != "outcome":  # an outcome's graph is an older window's
            for problem in problems:
                if problem.key not in self.warned:
                    log.warning("%s: %s", self.app, problem.text)
            self.warned = {problem.key for problem in problems}  # one fixed and back is logged again
        needs = required_instances(graph, ds2_plan(graph))
        return DecisionRecord(
            app=self.app,
            decision_id=decision_id,
            kind=kind,
            generation=self.generation if kind == "command" else None,
            policy=decision.policy,
            state={
                name: OperatorSummary(
                    parallelism=op.parallelism,
                    input_rate=op.observed_input_rate,
                    true_rate_per_instance=op.true_input_rate,
                    busy_ratio=op.busy_ratio,
                    lag=op.lag,
                    ds2_parallelism=needs[name],
                )
                for name, op in graph.operators.items()
            },
            candidates=[
                ScoredScheme(scheme=c.candidate.scheme, source=c.candidate.source, score=c.score)
                for c in decision.candidates
            ],
            chosen=chosen,
            chosen_source=source,
            predicted_reward=predicted,
            measured_reward=measured,
            restart_s=self.restart_s,
            notes=decision.notes,
            warnings=[problem.text for problem in problems],
            held_by=decision.held_by,
            model=decision.model,
            prediction_errors=decision.prediction_errors,
            timings_ms=decision.timings_ms,
            window_age_s=None if kind == "outcome" else self.window_age_s,
        )

    def _await(self, command: ScalingCommand, now: float) -> None:
        self.pending = command
        self.awaiting_since = now
        self.phase = Phase.AWAITING_ACK

    def _keep_last_window(self, now: float) -> None:
        """Only the last window counts: older reports (and instances that have since gone) drop out."""
        self.reports = recent(self.reports, self.settings.window_s, end=now, slack_s=1.0)

    def _observe_again(self, now: float) -> None:
        self.pending = self.pending_decision = None
        self.phase = Phase.OBSERVING
        self._open_window(now)

    def _open_window(self, since: float) -> None:
        self.since = since
        self.reports = [r for r in self.reports if r.interval_start >= since]
