"""Every setting in one markdown table, rendered from the settings classes' fields.

The README's configuration table is this module's output, between the markers ``START`` and
``END`` (``lastream settings --write README.md``); a test fails when the two differ. An app
adds its settings classes through the entry-point group ``lastream.settings``, as WordCount
does, so the library never imports it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path

from pydantic import SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from lastream_stream.agent.controller import ControllerSettings
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.kafka.reporter import WorkerSettings
from lastream_stream.keda.settings import KedaSettings
from lastream_stream.kube.settings import KubeSettings
from lastream_stream.policy.llm import LLMConfig
from lastream_stream.settings import (
    BrokerSettings,
    ControlAuthSettings,
    HomeSettings,
    KafkaSettings,
    LastreamSettings,
    TopicSettings,
    lastream_home,
)
from lastream_stream.supervisor.config import SupervisorSettings

START = "<!-- settings:start -->"
END = "<!-- settings:end -->"
ENTRY_POINT_GROUP = "lastream.settings"

# The library's own settings classes, in the order a reader meets them.
LIBRARY_SETTINGS: tuple[type[BaseSettings], ...] = (
    HomeSettings,
    LastreamSettings,
    KafkaSettings,
    TopicSettings,
    BrokerSettings,
    ControlAuthSettings,
    AgentServiceSettings,
    ControllerSettings,
    LLMConfig,
    SupervisorSettings,
    WorkerSettings,
    KubeSettings,
    KedaSettings,
)


def settings_classes() -> list[type[BaseSettings]]:
    """The library's settings classes, then those installed apps register."""
    plugins = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda entry: entry.name)
    return [*LIBRARY_SETTINGS, *(entry.load() for entry in plugins)]


def is_nested(field: FieldInfo) -> bool:
    """A field holding a whole settings class (``LastreamSettings.kafka``): its variables are that class's rows."""
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings)


def default_text(field: FieldInfo) -> str:
    """The default as a user would type it in the variable; paths under ``$LASTREAM_HOME`` relative to it."""
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, SecretStr | SecretBytes):
        return "(secret)"
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, dict | list):
        return f"`{json.dumps(value)}` (JSON)"
    elif isinstance(value, Path):
        home = lastream_home()
        text = f"$LASTREAM_HOME/{value.relative_to(home)}" if value.is_relative_to(home) else str(value)
        text = text.removesuffix("/.")
    else:
        text = str(value)
    return f"`{text}`"


def summary(cls: type[BaseSettings]) -> str:
    """The first paragraph of the class's docstring: the group's heading."""
    # cls.__doc__, not inspect.getdoc: a class without a docstring must not inherit BaseSettings' one.
    if not cls.__doc__ or not cls.__doc__.strip():
        raise ValueError(f"{cls.__module__}.{cls.__name__} has no docstring to head its settings with")
    return " ".join(cls.__doc__.strip().split("\n\n")[0].split())


def rows(cls: type[BaseSettings]) -> list[tuple[str, str, str]]:
    """(variable, default, meaning) per field; raises ValueError naming a field without a description."""
    prefix = cls.model_config.get("env_prefix", "")
    renamed_from = getattr(cls, "renamed_from", None)
    found = []
    for name, field in cls.model_fields.items():
        if is_nested(field):
            continue
        if not field.description:
            raise ValueError(
                f"{cls.__module__}.{cls.__name__}.{name} has no description: give it Field(description=...)"
            )
        meaning = " ".join(field.description.split())
        if renamed_from and name not in getattr(cls, "added_since_rename", ()):
            meaning += f" Was `{renamed_from}{name.upper()}`."
        found.append((f"{prefix}{name}".upper(), default_text(field), meaning))
    return found


def table(classes: Iterable[type[BaseSettings]]) -> str:
    """One markdown table, a bold heading row per class."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for cls in classes:
        heading = summary(cls)
        if renamed_from := getattr(cls, "renamed_from", None):
            heading += (
                f" Those with an old name were `{renamed_from}*`: an old name still set is ignored, with a warning."
            )
        lines.append(f"| **{cls.__name__}**: {cell(heading)} | | |")
        lines.extend(
            f"| `{variable}` | {cell(default)} | {cell(meaning)} |" for variable, default, meaning in rows(cls)
        )
    return "\n".join(lines) + "\n"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def _bounds(text: str) -> tuple[int, int]:
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {START} and {END} are missing or out of order")
    return start + len(START), end


def region(text: str) -> str:
    """What stands between the markers, without the newline after the start marker."""
    start, end = _bounds(text)
    return text[start:end].removeprefix("\n")


def replace_region(text: str, new: str) -> str:
    start, end = _bounds(text)
    return f"{text[:start]}\n{new}{text[end:]}"
