"""The agent service's settings (``LASTREAM_AGENT_*``), apart from the service so that a
view can read them without loading the model."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lastream_stream.agent.controller import ControllerSettings
from lastream_stream.exposition import MetricsEndpoint
from lastream_stream.settings import lastream_home


class AgentServiceSettings(BaseSettings, MetricsEndpoint):
    """The agent service (`lastream agent`); its decision cycle's settings are `LASTREAM_CONTROLLER_*`."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_AGENT_", extra="ignore")

    checkpoint: Path = Field(
        default_factory=lambda: lastream_home() / "agent" / "checkpoint.pt",
        description="The agent's own model and replay checkpoint; until it exists, the shipped pretrained model is used.",
    )
    checkpoint_every_s: float = Field(
        default=30.0,
        ge=0,
        description="Least seconds between two saves of the checkpoint after outcomes (a save takes about 0.2 s, and "
        "each app has an outcome a window); what is not saved yet is saved on a handover and on stop. 0: after every "
        "outcome.",
    )
    apps: list[str] = Field(
        default_factory=list, description='Apps to scale, e.g. `["wordcount"]`; empty means every app that reports.'
    )
    tick_s: float = Field(default=0.5, gt=0, description="How often each app's decision cycle runs, seconds.")
    llm: bool = Field(
        default=True, description="Add the LLM's candidates when its API key is set (see `LASTREAM_LLM_*`)."
    )
    restart_s: float = Field(
        default=5.0,
        ge=0,
        description="Seconds a rescaled operator pauses (start, rebalance), assumed until one is measured: what a change costs.",
    )
    max_apps: int = Field(
        default=200,
        ge=1,
        description="Most apps the agent scales, and follows on the control topic; messages of more are dead-lettered.",
    )
    group: str = Field(
        default="lastream-agent",
        description="Consumer group of the agents: each app is decided by the one agent assigned its metrics partition.",
    )
    session_timeout_s: float = Field(
        default=10.0,
        ge=1,
        description="Seconds after which the group gives a silent agent's apps to the others (the broker's bounds apply).",
    )
    member: str | None = Field(
        default=None,
        description="Static group member id (`group.instance.id`): an agent restarted under it within the session "
        "timeout gets its apps back without a rebalance; unique per agent.",
    )
    torch_threads: int = Field(
        default=1,
        ge=1,
        description="Threads the model's inference uses. One decides a small graph as fast as two here, at two thirds "
        "of the CPU: more threads spin waiting for each other and take cores from the broker and the workers.",
    )
    controller: ControllerSettings = Field(default_factory=ControllerSettings)
