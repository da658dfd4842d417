"""Your own topology in the bench: scenarios from a JSON file (``lastream bench --scenario-file``).

The file holds a list of scenarios::

    [{"name": "orders", "source_rate": 4000, "schedule": [[0, 1.0], [150, 2.0]], "restart_s": 5,
      "operators": [
        {"name": "source", "source": true, "parallelism": 2},
        {"name": "parse", "upstreams": ["source"], "true_rate": 900, "selectivity": 0.9, "partitions": 16, "parallelism": 4},
        {"name": "score", "upstreams": ["parse"], "capacity": {"1": 500, "2": 950, "4": 1700}, "partitions": 16}]}]

Scenario fields: ``source_rate`` (records/s at the sources, split evenly between them unless
a source gives ``share``), ``schedule`` (optional ``[at_s, factor]`` steps; a factor at 0
applies from the start), ``restart_s`` (the pause of a reconfigured operator, default 5),
``horizon_s`` (default 300), ``host_cores`` (optional: every non-source instance shares that
many cores), ``tags`` (optional). Operator fields: ``name``, ``source`` or ``upstreams``,
``true_rate`` (one instance's records/s of busy time) or ``capacity`` (measured total
records/s at some parallelisms, interpolated), ``selectivity`` (default 1), ``partitions``
(the parallelism cap), ``parallelism`` (initial, default 1), ``share`` (sources only). A
source without a ``true_rate`` can emit twice the peak rate. Unknown keys are an error.

``load(path)`` and ``parse(data)`` raise ``ScenarioFileError`` naming the scenario (index
and name) and the field of every problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from lastream_stream.sim.model import Constant, RateSchedule, Scenario, SimOperator, Steps
from lastream_stream.wire.contracts import MAX_PARALLELISM

SOURCE_HEADROOM = 2.0  # a source without a true_rate can emit this times its peak share

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


class ScenarioFileError(ValueError):
    """A scenario file that cannot be run, with where and why."""


class OperatorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1)
    source: bool = False
    upstreams: list[str] = Field(default_factory=list)
    true_rate: Positive | None = None  # one instance's records/s of busy time
    capacity: dict[Annotated[int, Field(ge=1)], Positive] | None = Field(default=None, min_length=1)
    selectivity: NonNegative = 1.0
    partitions: int | None = Field(default=None, ge=1, le=MAX_PARALLELISM)
    parallelism: int = Field(default=1, ge=1, le=MAX_PARALLELISM)
    share: Positive | None = None

    @model_validator(mode="after")
    def _consistent(self) -> OperatorSpec:
        if self.source and self.upstreams:
            raise ValueError("upstreams: a source reads from no other operator")
        if not self.source and not self.upstreams:
            raise ValueError('upstreams: required unless the operator is a source ("source": true)')
        if self.true_rate is not None and self.capacity is not None:
            raise ValueError("give true_rate or capacity, not both")
        if not self.source and self.true_rate is None and self.capacity is None:
            raise ValueError("true_rate or capacity: one is required")
        if self.share is not None and not self.source:
            raise ValueError("share: only a source has a share of the source rate")
        return self


class ScenarioSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1)
    source_rate: Positive
    schedule: list[tuple[NonNegative, NonNegative]] | None = None  # [at_s, factor] steps
    restart_s: NonNegative = 5.0
    horizon_s: Positive = 300.0
    host_cores: Positive | None = None
    tags: list[str] = Field(default_factory=list)
    operators: list[OperatorSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _graph(self) -> ScenarioSpec:
        names = [op.name for op in self.operators]
        for j, op in enumerate(self.operators):
            if names.count(op.name) > 1:
                raise ValueError(f"operators[{j}].name: {op.name!r} is given twice")
            if unknown := [u for u in op.upstreams if u not in names]:
                raise ValueError(
                    f"operators[{j}] ({op.name}).upstreams: unknown operator {unknown[0]!r}; known: {', '.join(names)}"
                )
        if not any(op.source for op in self.operators):
            raise ValueError('operators: at least one needs "source": true')
        at = [at_s for at_s, _ in self.schedule or []]
        if len(set(at)) < len(at):
            raise ValueError("schedule: two steps at the same at_s")
        return self


_FILE = TypeAdapter(list[ScenarioSpec])


def load(path: Path) -> list[Scenario]:
    """The scenarios in the JSON file at ``path``."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ScenarioFileError(f"{path}: not JSON: {exc}") from None
    return parse(data, source=str(path))


def parse(data: object, source: str = "scenario file") -> list[Scenario]:
    """Scenarios from the file's parsed JSON: validated, then built."""
    try:
        specs = _FILE.validate_python(data)
    except ValidationError as exc:
        problems = [f"{_where(data, error['loc'])}: {_message(error)}" for error in exc.errors()]
        raise ScenarioFileError(f"{source}: invalid scenario file\n  " + "\n  ".join(problems)) from None
    scenarios = []
    for index, spec in enumerate(specs):
        try:
            scenarios.append(_scenario(spec, source))
        except ValueError as exc:  # what only the simulator's model checks: a cycle, a cap below the parallelism
            raise ScenarioFileError(f"{source}: scenario {index} ({spec.name}): {exc}") from None
    if len({s.name for s in scenarios}) < len(scenarios):
        raise ScenarioFileError(f"{source}: two scenarios share a name")
    return scenarios


def _scenario(spec: ScenarioSpec, source: str) -> Scenario:
    schedule: RateSchedule = (
        Steps(spec.source_rate, tuple(sorted(spec.schedule))) if spec.schedule else Constant(spec.source_rate)
    )
    sources = [op for op in spec.operators if op.source]
    total_share = sum(op.share or 1.0 for op in sources)
    peak = schedule.peak()
    operators = tuple(_operator(op, peak * (op.share or 1.0) / total_share) for op in spec.operators)
    return Scenario(
        name=spec.name,
        operators=operators,
        schedule=schedule,
        downtime_s=spec.restart_s,
        horizon_s=spec.horizon_s,
        host_cores=spec.host_cores,
        tags=frozenset(spec.tags),
        description=f"from {source}",
    )


def _operator(spec: OperatorSpec, peak_share: float) -> SimOperator:
    rate: dict[str, object] = {}
    if spec.capacity is not None:
        rate["capacity_table"] = spec.capacity
    elif spec.true_rate is not None:
        rate["true_rate"] = spec.true_rate
    else:  # a source left to us: never the bottleneck
        rate["true_rate"] = SOURCE_HEADROOM * peak_share / spec.parallelism
    return SimOperator(
        spec.name,
        tuple(spec.upstreams),
        selectivity=spec.selectivity,
        partitions=spec.partitions,
        parallelism=spec.parallelism,
        share=spec.share or 1.0,
        **rate,
    )


def _where(data: object, loc: tuple[int | str, ...]) -> str:
    """A pydantic error location in the file's words: 'scenario 0 (orders): operators[2] (score).true_rate'."""
    if not loc:
        return "the file"
    index, *rest = loc
    node = _child(data, index)
    where = f"scenario {index}{_named(node)}"
    field = ""
    for key in rest:
        node = _child(node, key)
        if isinstance(key, int):
            field += f"[{key}]{_named(node)}"
        else:
            field += f".{key}" if field else str(key)
    return f"{where}: {field}" if field else where


def _child(node: object, key: int | str) -> object:
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    if isinstance(node, dict):
        return node.get(key)
    return None


def _named(node: object) -> str:
    name = node.get("name") if isinstance(node, dict) else None
    return f" ({name})" if isinstance(name, str) else ""


def _message(error: dict) -> str:
    # Our own checks arrive as "Value error, <what we said>".
    return error["msg"].removeprefix("Value error, ")
