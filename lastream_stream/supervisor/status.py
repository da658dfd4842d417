"""What a supervisor shows of itself: one immutable snapshot, swapped in by its loop and read
from any thread (its metrics, a test, a live view)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SupervisorStatus:
    app: str
    ready: bool  # caught up with the control topic and reconciled at least once
    generation: int
    decision_id: str | None
    desired: dict[str, int]
    running: dict[str, int]  # instances running (processes alive, or pods ready), per operator
    workers: dict[str, dict[int, int]]  # operator -> slot -> pid: the local backend's processes, else empty
    restarts: dict[str, int]  # crashed workers restarted by the supervisor, per operator
    acks: dict[str, int]  # commands acknowledged, per ack status
    dead_letters: dict[str, int]  # control messages written to the dead-letter topic, per consumer name
    dead_letter_failures: dict[str, int]  # bad control messages the dead-letter topic did not take, per consumer name
