"""The supervisor's verdicts, without processes or Kafka: what a command means for the
desired parallelism, which worker slots to start and stop, how long to wait before
restarting a crashed worker, and what the ack says.

The desired state is a fold of the app's commands in the order they were published: a
command sets the operators it names and leaves the others as they were, and one whose
generation is not above the last accepted one is stale and changes nothing. Live
processing and the rebuild after a restart use the same fold, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from lastream_stream.wire.contracts import AckStatus, CommandAck, ScalingCommand

Slot = tuple[str, int]


class OperatorBounds(Protocol):
    """What bounds one operator's parallelism, wherever its workers run."""

    @property
    def partitions(self) -> int: ...  # the cap: more instances than input partitions would idle

    @property
    def scalable(self) -> bool: ...

    @property
    def fixed_because(self) -> str: ...  # why it is not scalable, for the ack

    @property
    def managed(self) -> bool: ...  # its instances are the supervisor's to keep (not another autoscaler's)


class AppBounds(Protocol):
    """An app as the verdicts see it: an ``AppSpec`` locally, the labelled workloads on Kubernetes."""

    @property
    def app(self) -> str: ...

    @property
    def operators(self) -> Mapping[str, OperatorBounds]: ...


@dataclass(frozen=True)
class DesiredState:
    """Parallelism per operator and the command that set it (generation 0: none yet)."""

    parallelism: dict[str, int]
    generation: int = 0
    decision_id: str | None = None


@dataclass(frozen=True)
class Verdict:
    """What one command does to the desired state.

    ``status`` is the status as far as the command itself goes; an accepted command
    ("applied", or "partial" when it also named unknown operators) becomes "partial" in
    the ack when the workers do not reach ``state`` (see ``ack_for``).
    """

    command: ScalingCommand
    status: AckStatus
    state: DesiredState
    changes: dict[str, tuple[int, int]] = field(default_factory=dict)
    clamped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.status in ("applied", "partial")


def clamp(spec: AppBounds, operator: str, requested: int, current: int) -> tuple[int, str | None]:
    """The parallelism an operator can actually have, and why it differs when it does."""
    worker = spec.operators[operator]
    if not worker.scalable:
        if requested == current:
            return current, None
        return current, f"{operator} is not scalable ({worker.fixed_because}): stays at {current} (asked {requested})"
    # ScalingCommand already guarantees requested >= 1; the partitions are the cap.
    allowed = min(requested, worker.partitions)
    if allowed == requested:
        return allowed, None
    return allowed, f"{operator}: {requested} clamped to {allowed} ({worker.partitions} input partitions)"


def initial_state(spec: AppBounds, initial: Mapping[str, int] | None = None) -> DesiredState:
    """Each operator at ``initial[op]`` (default 1), within its partitions."""
    initial = dict(initial or {})
    unknown = sorted(set(initial) - set(spec.operators))
    if unknown:
        raise ValueError(f"initial parallelism names operator(s) not in app {spec.app!r}: {', '.join(unknown)}")
    parallelism = {}
    for op, worker in spec.operators.items():
        parallelism[op] = min(max(initial.get(op, 1), 1), worker.partitions)
    return DesiredState(parallelism)


def judge(spec: AppBounds, state: DesiredState, command: ScalingCommand) -> Verdict:
    """Apply one command of this app to the desired state. Commands of other apps are the
    caller's business: they never reach here."""
    if command.app != spec.app:
        raise ValueError(f"command for app {command.app!r} given to the supervisor of {spec.app!r}")
    if command.generation <= state.generation:
        note = f"generation {command.generation} is not above the applied generation {state.generation}"
        return Verdict(command, "stale", state, notes=[note])
    # Only what the command changes: the rest of its target is what the agent saw running,
    # which falls short of the desired state while a crashed worker waits to restart.
    unknown = sorted(op for op in command.changed if op not in spec.operators)
    known = {op: command.target[op] for op in command.changed if op in spec.operators}
    notes = [f"unknown operator(s): {', '.join(unknown)}"] if unknown else []
    if unknown and not known:
        return Verdict(command, "rejected", state, notes=notes)
    parallelism = dict(state.parallelism)
    changes: dict[str, tuple[int, int]] = {}
    clamped: dict[str, int] = {}
    for op, requested in known.items():
        current = parallelism[op]
        allowed, why = clamp(spec, op, requested, current)
        if why:
            clamped[op] = requested
            notes.append(why)
        if allowed != current:
            changes[op] = (current, allowed)
        parallelism[op] = allowed
    new_state = DesiredState(parallelism, command.generation, command.decision_id)
    return Verdict(command, "partial" if unknown else "applied", new_state, changes, clamped, notes)


def fold(
    spec: AppBounds, state: DesiredState, commands: Iterable[ScalingCommand]
) -> tuple[DesiredState, list[Verdict]]:
    """Replay commands in publication order: the final state and one verdict per command."""
    verdicts = []
    for command in commands:
        verdict = judge(spec, state, command)
        verdicts.append(verdict)
        state = verdict.state
    return state, verdicts


def plan_slots(desired: Mapping[str, int], occupied: Iterable[Slot]) -> tuple[list[Slot], list[Slot]]:
    """Slots to start (missing below the desired count) and to stop (at or above it, or of
    operators the app no longer has). Slots stop highest first, so the survivors are
    always slots 0..n-1 and a worker's index stays meaningful."""
    occupied = set(occupied)
    start = [(op, slot) for op, n in desired.items() for slot in range(n) if (op, slot) not in occupied]
    stop = [(op, slot) for op, slot in occupied if slot >= desired.get(op, 0)]
    stop.sort(key=lambda s: (-s[1], s[0]))
    return start, stop


def backoff_delay(consecutive_failures: int, initial_s: float, max_s: float) -> float:
    """Wait before restart number ``consecutive_failures`` (1-based) of the same slot."""
    return min(initial_s * 2 ** max(consecutive_failures - 1, 0), max_s)


def ack_for(
    app: str,
    verdict: Verdict,
    running: Mapping[str, int],
    failures: Iterable[str] = (),
    unmanaged: Iterable[str] = (),
) -> CommandAck:
    """The ack of a command, given the parallelism actually running after reconciling;
    ``unmanaged`` operators (another autoscaler's) are reported but not held to the state."""
    notes = list(verdict.notes) + list(failures)
    status = verdict.status
    unmanaged = set(unmanaged)
    short = {
        op: f"{running.get(op, 0)}/{n}"
        for op, n in verdict.state.parallelism.items()
        if running.get(op, 0) != n and op not in unmanaged
    }
    if verdict.accepted and short:
        status = "partial"
        notes.append("not reached (running/desired): " + ", ".join(f"{op} {v}" for op, v in short.items()))
    return CommandAck(
        app=app,
        decision_id=verdict.command.decision_id,
        generation=verdict.command.generation,
        status=status,
        applied=dict(running),
        clamped=verdict.clamped,
        error="; ".join(notes) or None,
    )
