"""Wire messages between the parts of LaStream: JSON on Kafka, one pydantic model each.

Every message carries ``schema_version`` (absent, it is the model's current version, as the
published schemas say); a consumer that meets a version it does not know sends the message
to the dead-letter topic instead of guessing (see ``deadletter.py``).

Versions: ``ScalingCommand`` is at 2 (``target`` names every operator the issuer scales,
``changed`` the ones it changes); version 1 named only the changes and is still read, as a
command whose every named operator changed. ``DeadLetter`` is at 2 (the payload's size and
SHA-256, and whether it was cut short: always written, so a new version); version 1 lacked
them and is still read. Every other message is at 1. A field added within a version is
optional and left out while it has its default (a report's ``ready``, a control message's
signature), so what consumers from before read is unchanged byte for byte.
Validation bounds are deliberately generous but finite: a report claiming 10^12 records in
one interval is a broken producer, not a busy one, and must not steer scaling decisions.
"""

from __future__ import annotations

import re
import time
import typing
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION = 1  # of every message but ScalingCommand

# Upper bounds that no real operator instance reaches in one reporting interval.
MAX_RECORDS_PER_INTERVAL = 1_000_000_000
MAX_LAG = 10_000_000_000
MAX_LATENCY_MS = 86_400_000.0
MAX_PARALLELISM = 10_000
MAX_CLOCK_SKEW_S = 300.0
MAX_OPERATORS = 1_000  # named in one command or ack
MAX_TEXT = 2_000  # characters of a command's reason or an ack's error
# Below this interval a rate computed from a report is noise, or overflows (1e-300 s did).
MIN_INTERVAL_S = 0.01
# Records per busy second no instance reaches (one record in a picosecond): a busy time of
# almost nothing with records would make the true rate overflow.
MAX_TRUE_RATE = 1e12

# App, operator and instance names: safe as Kafka keys, file names and metric labels.
NAME_CHARS, MAX_NAME = r"[A-Za-z0-9._\-]", 200
NAME_PATTERN = re.compile(rf"^{NAME_CHARS}{{1,{MAX_NAME}}}$")
Name = Field(min_length=1, max_length=MAX_NAME, pattern=rf"^{NAME_CHARS}+$")
OperatorName = Annotated[str, StringConstraints(pattern=NAME_PATTERN.pattern)]


class WireMessage(BaseModel):
    # NaN or Infinity in a timestamp would freeze timers and windows that compare with it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def readable_versions(cls) -> tuple[int, ...]:
        return typing.get_args(cls.model_fields["schema_version"].annotation)

    @classmethod
    def current_version(cls) -> int:
        return cls.model_fields["schema_version"].default


class MetricsReport(WireMessage):
    """What one operator instance did in one reporting interval.

    Rates follow DS2: ``records_in / interval_s`` is the observed input rate, and
    ``records_in / useful_time_s`` the true processing rate (records per second of actual
    work, excluding time spent waiting for input or blocked on output).
    """

    app: str = Name
    operator: str = Name
    instance_id: str = Field(min_length=1, max_length=200)
    interval_end: float = Field(gt=0, description="end of the interval, epoch seconds")
    interval_s: float = Field(ge=MIN_INTERVAL_S, le=3600, description="length of the interval, seconds")
    records_in: int = Field(ge=0, le=MAX_RECORDS_PER_INTERVAL)
    records_out: int = Field(ge=0, le=MAX_RECORDS_PER_INTERVAL)
    useful_time_s: float = Field(ge=0, description="busy seconds in the interval")
    lag: int | None = Field(
        default=None, ge=0, le=MAX_LAG, description="consumer lag of the partitions assigned to this instance, records"
    )
    latency_p50_ms: float | None = Field(default=None, ge=0, le=MAX_LATENCY_MS)
    latency_p99_ms: float | None = Field(default=None, ge=0, le=MAX_LATENCY_MS)
    cpu_percent: float = Field(default=0.0, ge=0, le=100_000)
    memory_bytes: int = Field(default=0, ge=0)
    parallelism: int = Field(ge=1, le=MAX_PARALLELISM, description="current instances of this operator")
    upstreams: list[str] = Field(default_factory=list, description="operators feeding this one")
    input_partitions: int | None = Field(default=None, ge=1, le=MAX_PARALLELISM)
    ready: bool = Field(
        default=True,
        description="false while the instance waits for its partitions or replays its state (its lag is still "
        "the true lag of its assigned partitions); absent: ready",
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude={"ready"} if self.ready else None).encode()

    @property
    def interval_start(self) -> float:
        return self.interval_end - self.interval_s

    @model_validator(mode="after")
    def _consistent(self) -> MetricsReport:
        # A little slack: busy time is measured with a different clock than the interval.
        if self.useful_time_s > self.interval_s * 1.1 + 0.05:
            raise ValueError("useful_time_s exceeds the interval length")
        if max(self.records_in, self.records_out) > MAX_TRUE_RATE * self.useful_time_s > 0:
            raise ValueError(f"useful_time_s too short for its records: above {MAX_TRUE_RATE:g} records/s busy")
        if self.operator in self.upstreams:
            raise ValueError("an operator cannot be its own upstream")
        # A report from the future would never leave a sliding window.
        if self.interval_end > time.time() + MAX_CLOCK_SKEW_S:
            raise ValueError("interval_end is in the future")
        return self


class Signed(WireMessage):
    """A control message of one app, which may carry its issuer's signature (``signing.py``)."""

    app: str = Name
    key_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_NAME, description="the key of LASTREAM_CONTROL_KEYS that signed it"
    )
    signature: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="hex HMAC-SHA256 of the message's canonical JSON: every other field, keys sorted, no whitespace",
    )

    def to_bytes(self) -> bytes:
        # Unsigned, the message is byte for byte what consumers from before signing read.
        unset = {name for name in ("key_id", "signature") if getattr(self, name) is None}
        return self.model_dump_json(exclude=unset).encode()


class ScalingCommand(Signed):
    """The desired parallelism of one app. Keyed by app on the compacted control topic, so
    the latest command per app is its whole desired state."""

    schema_version: Literal[1, 2] = 2
    decision_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=MAX_NAME)
    generation: int = Field(ge=1, description="strictly increasing per app")
    target: dict[OperatorName, int] = Field(
        min_length=1,
        max_length=MAX_OPERATORS,
        description="parallelism of every operator the issuer scales (version 1: only of those that change); "
        "operators it does not name keep theirs",
    )
    changed: list[str] = Field(
        default_factory=list,
        description="the operators of target whose parallelism this command changes (the others are what the "
        "issuer saw running); absent or on version 1: every operator of target",
    )
    reason: str = Field(default="", max_length=MAX_TEXT)
    # The skew the receiver allows around its own clock is its business (`LASTREAM_CONTROL_MAX_SKEW_S`).
    issued_at: float = Field(default_factory=time.time, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _changed_by_default(cls, data: object) -> object:
        # A version-1 command named only the operators it changed; a command that does not say
        # what it changes may change any operator it names.
        named = isinstance(data, dict) and isinstance(data.get("target"), dict)
        if named and (data.get("schema_version") == 1 or "changed" not in data):
            return {**data, "changed": sorted(data["target"])}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ScalingCommand:
        for op, n in self.target.items():
            if not 1 <= n <= MAX_PARALLELISM:
                raise ValueError(f"target parallelism of {op!r} out of range: {n}")
        if unknown := sorted(set(self.changed) - set(self.target)):
            raise ValueError(f"changed names operator(s) without a target: {', '.join(unknown)}")
        return self


AckStatus = Literal["applied", "partial", "rejected", "stale"]


class CommandAck(Signed):
    """What the supervisor actually reached for a command."""

    decision_id: str = Field(min_length=1, max_length=MAX_NAME)
    generation: int = Field(ge=0)
    status: AckStatus
    applied: dict[OperatorName, Annotated[int, Field(ge=0, le=MAX_PARALLELISM)]] = Field(
        default_factory=dict, max_length=MAX_OPERATORS, description="parallelism now running"
    )
    clamped: dict[OperatorName, Annotated[int, Field(ge=1, le=MAX_PARALLELISM)]] = Field(
        default_factory=dict,
        max_length=MAX_OPERATORS,
        description="operators whose target was clamped: requested value",
    )
    error: str | None = Field(default=None, max_length=MAX_TEXT)
    acked_at: float = Field(default_factory=time.time)


class OperatorSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    parallelism: int
    input_rate: float = Field(description="observed records/s in, all instances")
    true_rate_per_instance: float = Field(description="records per useful second, one instance")
    busy_ratio: float
    lag: int
    ds2_parallelism: int | None = Field(
        default=None,
        description="instances DS2 needs at 100% busy, within [1, partitions]; a source as it runs. None in records written before it was recorded",
    )


class ScoredScheme(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: dict[str, int]
    source: str
    score: float | None


DecisionKind = Literal["command", "hold", "recommendation", "outcome"]
# The rules that keep an operator where it runs against a proposed change (see agent/controller.py).
HoldReason = Literal[
    "margin", "stabilisation", "peak_need", "headroom", "draining", "scale_in_together", "bounds", "recovering"
]

# The models a learning policy scores with: as shipped (never trained online), and trained on measured outcomes.
Model = Literal["shipped", "online"]


class DecisionRecord(WireMessage):
    """One decision of the agent, readable by anyone from the decisions topic.

    ``command``: a ScalingCommand was published; ``hold``: the best scheme is the current
    one; ``recommendation``: dry run, nothing was published; ``outcome``: the measured
    reward of an earlier decision arrived."""

    app: str = Name
    decision_id: str
    kind: DecisionKind
    generation: int | None = None
    policy: str
    state: dict[str, OperatorSummary] = Field(default_factory=dict)
    candidates: list[ScoredScheme] = Field(default_factory=list)
    chosen: dict[str, int]
    chosen_source: str | None = Field(
        default=None,
        description="which candidate generator proposed the chosen scheme (analytic, capacity, llm); 'guarded' when the controller's guard rails or stabilisation changed it; 'trim' when the controller gave back what the app no longer needed (notes say on what evidence); None on an outcome",
    )
    predicted_reward: float | None = None
    measured_reward: float | None = None
    restart_s: float | None = Field(
        default=None,
        ge=0,
        description="the app's measured restart time when recorded (median of recent commands); None before the first",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="what to read the decision with: why a change was held (stabilisation, a draining backlog, the evaluator's margin) and what the capacity model found (an ineffective scale-out)",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what is wrong with the app's reporting, what the decision assumed around it and how to fix it: an operator whose instances misstate its parallelism, a declared upstream that never reports, operators left out for a cycle of upstreams, no latency at any sink",
    )
    held_by: list[HoldReason] = Field(
        default_factory=list,
        description="each rule that kept some operator at its parallelism, once: margin (the evaluator's error margin), stabilisation (a reversal too soon), peak_need (a scale-in below the recent peak need), headroom (a scale-in that would leave an operator busier than the controller's scale-in utilisation at the current rate), draining (a scale-in while a backlog drains), scale_in_together (a scale-in waiting for another's), bounds (the configured bounds or partitions), recovering (an instance in the window was not ready: waiting for its partitions or replaying its state; no decision and no outcome on such a window)",
    )
    model: Model | None = Field(
        default=None,
        description="which model scored the candidates: shipped (as pretrained) or online (trained on measured outcomes, deciding for this app once it predicts them clearly better); None for a policy without models",
    )
    prediction_errors: dict[Model, float] = Field(
        default_factory=dict,
        description="each model's mean absolute error of the predicted reward over the app's recent outcomes, each measured before the online model trained on it; empty before the first outcome",
    )
    timings_ms: dict[str, float] = Field(default_factory=dict)
    window_age_s: float | None = Field(
        default=None,
        description="seconds from the end of the newest report in the decided window (timed by its arrival at the broker) to the decision: how stale the decision's view was; None on an outcome",
    )
    at: float = Field(default_factory=time.time)


class DeadLetter(WireMessage):
    """A message some consumer could not use, with the reason: kept whole, or its first bytes
    when it is too large to be a dead letter itself (``truncated``)."""

    schema_version: Literal[1, 2] = 2
    source_topic: str
    partition: int
    offset: int
    key_b64: str | None = None
    payload_b64: str
    payload_size: int | None = Field(default=None, ge=0, description="bytes of the whole payload (absent in version 1)")
    payload_sha256: str | None = Field(
        default=None, description="hex SHA-256 of the whole payload (absent in version 1)"
    )
    truncated: bool = Field(
        default=False, description="the key or payload kept is the first bytes of the original only"
    )
    error: str
    consumer: str
    at: float = Field(default_factory=time.time)


WIRE_MODELS: dict[str, type[WireMessage]] = {
    "metrics_report": MetricsReport,
    "scaling_command": ScalingCommand,
    "command_ack": CommandAck,
    "dead_letter": DeadLetter,
    "decision_record": DecisionRecord,
}
