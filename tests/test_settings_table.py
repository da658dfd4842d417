"""The README's settings table is generated from the settings classes, all of them, and every
field explains itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

import lastream_stream
import wordcount_app
from lastream_stream.agent.controller import ControllerSettings
from lastream_stream.settings import lastream_home
from lastream_stream.supervisor.config import SupervisorSettings
from lastream_stream.tools import settings_table
from lastream_stream.tools.cli import main

README = Path(__file__).parents[1] / "README.md"


def declared_settings_classes() -> set[str]:
    """Every class of the project that derives from BaseSettings, by reading the source."""
    found = set()
    for package in (lastream_stream, wordcount_app):
        root = Path(package.__file__).parent
        for path in root.rglob("*.py"):
            module = ".".join((package.__name__, *path.relative_to(root).with_suffix("").parts))
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                    isinstance(base, ast.Name) and base.id == "BaseSettings" for base in node.bases
                ):
                    found.add(f"{module}.{node.name}")
    return found


def test_the_readme_table_is_the_generated_one():
    generated = settings_table.table(settings_table.settings_classes())
    assert settings_table.region(README.read_text()) == generated, (
        "README.md's settings table is out of date: run `lastream settings --write README.md`"
    )


def test_every_settings_class_is_in_the_table():
    listed = {f"{cls.__module__}.{cls.__name__}" for cls in settings_table.settings_classes()}
    assert declared_settings_classes() == listed
    assert "wordcount_app.settings.WordCountSettings" in listed  # through its entry point


def test_every_settings_field_has_a_description():
    """rows() refuses a field without one; here every class's rows are made, and each
    carries a meaning and a default."""
    for cls in settings_table.settings_classes():
        rows = settings_table.rows(cls)
        assert rows, f"{cls.__name__} documents no variable"
        assert all(meaning and default for _, default, meaning in rows), cls.__name__


def test_a_field_without_a_description_is_refused():
    class Undocumented(BaseSettings):
        """Settings with a gap."""

        model_config = SettingsConfigDict(env_prefix="LASTREAM_TEST_")

        knob: int = 3

    with pytest.raises(ValueError, match=r"Undocumented\.knob has no description"):
        settings_table.table([Undocumented])


def test_a_new_field_appears_in_the_table_as_a_user_would_type_it():
    class Throwaway(BaseSettings):
        """Settings made for this test."""

        model_config = SettingsConfigDict(env_prefix="LASTREAM_TEST_")

        new_knob: float = Field(default=2.5, description="A knob | with a pipe.")
        spool: Path = Field(default_factory=lambda: lastream_home() / "spool", description="Where spools go.")
        token: SecretStr = Field(default=SecretStr("hunter2"), description="A token.")
        limits: dict[str, int] = Field(default_factory=lambda: {"a": 1}, description="Limits per operator.")
        enabled: bool = Field(default=False, description="On or off.")

    rendered = settings_table.table([Throwaway])
    assert "| **Throwaway**: Settings made for this test. | | |" in rendered
    assert "| `LASTREAM_TEST_NEW_KNOB` | `2.5` | A knob \\| with a pipe. |" in rendered
    assert "| `LASTREAM_TEST_SPOOL` | `$LASTREAM_HOME/spool` | Where spools go. |" in rendered
    assert "| `LASTREAM_TEST_TOKEN` | (secret) | A token. |" in rendered
    assert '| `LASTREAM_TEST_LIMITS` | `{"a": 1}` (JSON) | Limits per operator. |' in rendered
    assert "| `LASTREAM_TEST_ENABLED` | `false` | On or off. |" in rendered
    assert "hunter2" not in rendered


def test_old_names_and_nested_classes():
    rendered = settings_table.table(settings_table.settings_classes())
    assert "| `LASTREAM_CONTROLLER_WINDOW_S` | `10` |" in rendered
    assert "Was `LASTREAM_AGENT_WINDOW_S`." in rendered
    # LastreamSettings.kafka is KafkaSettings: its variables are KafkaSettings' rows, not a JSON blob.
    assert "`LASTREAM_KAFKA`" not in rendered and "`LASTREAM_AGENT_CONTROLLER`" not in rendered
    assert "| `LASTREAM_HOME` | `~/.cache/lastream` |" in rendered


def test_the_command_prints_the_table_and_rewrites_only_between_the_markers(tmp_path):
    generated = settings_table.table(settings_table.settings_classes())
    printed = CliRunner().invoke(main, ["settings"])
    assert printed.exit_code == 0 and printed.stdout == generated

    doc = tmp_path / "doc.md"
    doc.write_text(
        f"# Doc\n\nprose before\n\n{settings_table.START}\nstale table\n{settings_table.END}\n\nprose after\n"
    )
    written = CliRunner().invoke(main, ["settings", "--write", str(doc)])
    assert written.exit_code == 0, written.output
    assert doc.read_text() == (
        f"# Doc\n\nprose before\n\n{settings_table.START}\n{generated}{settings_table.END}\n\nprose after\n"
    )

    unmarked = tmp_path / "unmarked.md"
    unmarked.write_text("no markers here\n")
    refused = CliRunner().invoke(main, ["settings", "--write", str(unmarked)])
    assert refused.exit_code == 1 and "markers" in refused.output
    assert unmarked.read_text() == "no markers here\n"


def test_an_old_name_still_set_is_named_in_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("LASTREAM_AGENT_WINDOW_S", "3")
    assert ControllerSettings().window_s == 10.0
    assert "LASTREAM_AGENT_WINDOW_S ignored" in caplog.text


def test_default_paths_follow_lastream_home(monkeypatch, tmp_path):
    monkeypatch.setenv("LASTREAM_HOME", "")  # empty is unset
    assert lastream_home() == Path.home() / ".cache" / "lastream"
    monkeypatch.setenv("LASTREAM_HOME", str(tmp_path))
    assert SupervisorSettings().home == tmp_path / "supervisor"
    assert "| `LASTREAM_SUPERVISOR_HOME` | `$LASTREAM_HOME/supervisor` |" in settings_table.table([SupervisorSettings])
