"""What every scaling policy shares: the context it may use and the decision it returns.

The learned agent and the baselines (DS2, Flink's autoscaler, KEDA, static, oracle) all
implement :class:`Policy`, so the service and the benchmarks treat them alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from lastream_stream.policy.capacity import OperatorCapacity
from lastream_stream.policy.graph import AppGraph
from lastream_stream.wire.contracts import MAX_PARALLELISM, HoldReason, Model


class CheckpointMismatch(ValueError):
    """A saved policy this code cannot use: written by another version, or for another shape."""


CandidateSource = Literal["analytic", "capacity", "llm"]


@dataclass(frozen=True)
class Candidate:
    scheme: dict[str, int]
    source: CandidateSource
    note: str = ""

    @property
    def key(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.scheme.items()))


class CandidateGenerator(Protocol):
    name: str

    def propose(self, graph: AppGraph, context: DecisionContext | None = None) -> list[Candidate]: ...


@dataclass(frozen=True)
class PastDecision:
    scheme: dict[str, int]
    reward: float


@dataclass(frozen=True)
class DecisionContext:
    # Most recent last; shown to the LLM so it can learn from what was measured.
    history: Sequence[PastDecision] = ()
    # Cap for operators whose reports carry no partition count.
    max_parallelism: int = MAX_PARALLELISM
    # This app's latency target, ms, when it has its own; the reward's default otherwise.
    latency_target_ms: float | None = None
    # How long a reconfigured operator pauses, seconds, when the caller knows it (configured
    # or measured); the agent assumes its ``AgentConfig.restart_s`` otherwise.
    restart_s: float | None = None
    # Each operator's learnt capacity curve (``policy/capacity.py``), when the caller keeps them.
    capacity: Mapping[str, OperatorCapacity] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredCandidate:
    candidate: Candidate
    score: float | None  # predicted reward; None for a policy that does not score


@dataclass
class Decision:
    policy: str
    app: str
    chosen: dict[str, int]
    candidates: list[ScoredCandidate]
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The state and context the decision was made in: needed to learn from its reward later.
    graph: AppGraph | None = None
    context: DecisionContext | None = None
    # What to read the decision with (why a change was held, an ineffective scale-out), for the record and the view.
    notes: list[str] = field(default_factory=list)
    # Which rules kept an operator where it runs against a proposed change, for the record and its metrics.
    held_by: list[HoldReason] = field(default_factory=list)
    # Which of a learning policy's models scored the candidates, and each one's recent error on the app.
    model: Model | None = None
    prediction_errors: dict[Model, float] = field(default_factory=dict)

    @property
    def chosen_candidate(self) -> ScoredCandidate | None:
        """The candidate the chosen scheme came from; None when the caller changed the
        choice to a scheme nobody proposed (the controller's guard rails)."""
        return next((c for c in self.candidates if c.candidate.scheme == self.chosen), None)

    @classmethod
    def single(
        cls,
        policy: str,
        graph: AppGraph,
        scheme: dict[str, int],
        note: str = "",
        source: CandidateSource = "analytic",
        timings_ms: dict[str, float] | None = None,
    ) -> Decision:
        """A decision with one unscored candidate: how a rule-based baseline reports."""
        candidate = Candidate(scheme=dict(scheme), source=source, note=note or policy)
        return cls(
            policy=policy,
            app=graph.app,
            chosen=dict(scheme),
            candidates=[ScoredCandidate(candidate, None)],
            timings_ms=dict(timings_ms or {}),
            graph=graph,
        )


class Policy(Protocol):
    name: str

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision: ...


@runtime_checkable
class LearningPolicy(Protocol):
    horizon_s: float  # what an outcome's reward is averaged over

    def observe(self, decision: Decision, measured_reward: float) -> None: ...

    def train(self, steps: int) -> float: ...

    def prediction_errors(self, app: str) -> dict[Model, float]: ...
