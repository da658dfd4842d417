"""What a supervisor needs to know about an app: how to start one worker of each operator.

A worker is an OS process started from ``command``; the supervisor sets in its environment
``LASTREAM_WORKER_OPERATOR``, ``LASTREAM_WORKER_INDEX`` (0-based slot) and
``LASTREAM_WORKER_STATE`` (a JSON file the supervisor keeps current with the operator's
parallelism, so running workers report the right figure after a rescale). Of its own
environment a worker gets only what a program needs to run, the cluster's connection
and topics, ``env`` and the variables ``pass_env`` names (``workers.worker_env``).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

# The names scaling commands can carry; operator names also become file names in the run dir.
from lastream_stream.wire.contracts import NAME_PATTERN


class WorkerSpec(BaseModel):
    # A misspelt optional key (``scaleable``) must not silently fall back to its default.
    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(min_length=1)
    partitions: int = Field(ge=1, description="partition count of the input topic: the parallelism cap")
    scalable: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    # Workers get no other variable of the supervisor's environment unless named here.
    pass_env: list[str] = Field(default_factory=list)

    @property
    def fixed_because(self) -> str:
        return "scalable: false in the app's spec"

    @property
    def managed(self) -> bool:
        return True  # the supervisor runs every operator's workers, scalable or not


class AppSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app: str
    operators: dict[str, WorkerSpec] = Field(min_length=1)

    @field_validator("app")
    @classmethod
    def _app_name(cls, app: str) -> str:
        if not NAME_PATTERN.match(app):
            raise ValueError(f"app name {app!r} must match {NAME_PATTERN.pattern}")
        return app

    @field_validator("operators")
    @classmethod
    def _operator_names(cls, operators: dict[str, WorkerSpec]) -> dict[str, WorkerSpec]:
        bad = [op for op in operators if not NAME_PATTERN.match(op) or op.startswith(".")]
        if bad:
            raise ValueError(f"operator name(s) {bad} must match {NAME_PATTERN.pattern} and not start with a dot")
        return operators

    @classmethod
    def from_yaml(cls, path: Path) -> AppSpec:
        return cls.model_validate(yaml.safe_load(path.read_text()))
