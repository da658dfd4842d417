"""``lastream supervisor`` and ``python -m lastream_stream.supervisor``: one click command.

An app's spec comes from ``--spec`` or from the app itself: an installed app registers a
function ``settings -> AppSpec`` under the entry-point group ``lastream.app_specs``
(WordCount does), so the supervisor never imports an app."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import click
import yaml
from pydantic import ValidationError

from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor.config import SupervisorSettings
from lastream_stream.supervisor.service import run
from lastream_stream.supervisor.spec import AppSpec


@click.command("supervisor")
@click.option(
    "--app",
    "app_name",
    default=None,
    help="The app whose workers to supervise; with --spec, the spec file names it (optional, checked if given).",
)
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="AppSpec YAML (app, operators: command, partitions, scalable, env). Optional for an app that installs a built-in spec (wordcount does).",
)
@click.option(
    "--stop-workers-on-exit/--keep-workers-on-exit",
    default=None,
    help="On Ctrl-C/SIGTERM stop every worker (default: LASTREAM_SUPERVISOR_STOP_WORKERS_ON_EXIT or yes).",
)
@click.pass_context
def supervisor_command(
    ctx: click.Context, app_name: str | None, spec_file: str | None, stop_workers_on_exit: bool | None
) -> None:
    """Start and stop the app's worker processes as the scaling commands on the control topic say."""
    settings = ctx.obj if isinstance(ctx.obj, LastreamSettings) else LastreamSettings()
    built_in = {e.name: e for e in entry_points(group="lastream.app_specs")}
    if spec_file:
        try:
            spec = AppSpec.from_yaml(Path(spec_file))
        except (yaml.YAMLError, ValidationError) as exc:
            raise click.BadParameter(f"{spec_file}: {exc}", param_hint="--spec") from exc
        if app_name is not None and spec.app != app_name:
            raise click.UsageError(f"the spec describes app {spec.app!r}, not {app_name!r}")
    elif app_name in built_in:
        spec = built_in[app_name].load()(settings)
    else:
        known = ", ".join(sorted(built_in)) or "none installed"
        wanted = f"--spec is required for app {app_name!r}" if app_name else "give --spec FILE or --app NAME"
        raise click.UsageError(f"{wanted} (built-in specs: {known})")
    config = SupervisorSettings()
    if stop_workers_on_exit is not None:
        config = config.model_copy(update={"stop_workers_on_exit": stop_workers_on_exit})
    run(settings, spec, config=config)
