"""WordCount's commands for the ``lastream`` CLI, installed as a plugin (entry points in the
group ``lastream.commands``): ``lastream up``, the whole pipeline around WordCount, and
``lastream wordcount up``, the app alone. The library knows nothing of WordCount; the app
plugs itself in."""

from __future__ import annotations

from pathlib import Path

import click

from lastream_stream.settings import LastreamSettings, lastream_home
from wordcount_app.settings import WordCountSettings


def _parallelism_option(value: str) -> dict[str, int]:
    """'splitter=1,counter=2' -> {'splitter': 1, 'counter': 2}."""
    try:
        return {op.strip(): int(n) for op, n in (item.split("=") for item in value.split(",") if item.strip())}
    except ValueError:
        raise click.BadParameter(f"expected operator=N[,operator=N...], got {value!r}") from None


WORDCOUNT_OPTIONS = [
    click.option(
        "--initial", default="splitter=1,counter=1,sink=1", show_default=True, help="Initial parallelism per operator."
    ),
    click.option("--rate", type=float, default=None, help="Source sentences/s (default LASTREAM_WC_RATE or 10)."),
    click.option("--schedule", default=None, help="Rate schedule: '0:10,60:20' steps or 'sine:10,4,120'."),
    click.option(
        "--logs",
        type=click.Path(file_okay=False),
        default=None,
        help="Directory for process logs (default $LASTREAM_HOME/logs).",
    ),
]


def wordcount_options(f):
    for option in reversed(WORDCOUNT_OPTIONS):
        f = option(f)
    return f


def _wordcount_settings(rate: float | None, schedule: str | None):
    wc = WordCountSettings()
    updates = {k: v for k, v in {"rate": rate, "schedule": schedule}.items() if v is not None}
    return wc.model_copy(update=updates)


def _log_dir(logs: str | None) -> Path:
    return Path(logs) if logs else lastream_home() / "logs"


@click.group()
def wordcount() -> None:
    """The reference WordCount app (source -> splitter -> counter -> sink)."""


@wordcount.command("up")
@wordcount_options
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C).")
@click.pass_obj
def wordcount_up(
    settings: LastreamSettings,
    initial: str,
    rate: float | None,
    schedule: str | None,
    logs: str | None,
    duration: float | None,
) -> None:
    """Start the source and the supervisor (which starts the workers) with a live view.
    Ctrl-C stops every process it started."""
    from wordcount_app import launcher

    launcher.wordcount_up(
        settings, _wordcount_settings(rate, schedule), _parallelism_option(initial), _log_dir(logs), duration
    )


@click.command("up")
@wordcount_options
@click.option(
    "--decisions",
    type=int,
    default=15,
    show_default=True,
    help="Stop after this many agent decisions (one per stable window once settled, about every 12 s).",
)
@click.pass_obj
def up(
    settings: LastreamSettings, initial: str, rate: float | None, schedule: str | None, logs: str | None, decisions: int
) -> None:
    """The whole pipeline: local Kafka (unless LASTREAM_KAFKA_BOOTSTRAP is set), WordCount
    under-provisioned, and the agent with the shipped pretrained model (DeepSeek candidates
    join when DEEPSEEK_API_KEY is set). Shows a live view, stops after --decisions or
    Ctrl-C, then prints a summary: whether the app keeps up, the commands issued after it
    first did, and the measured reward of each outcome learnt."""
    from wordcount_app import launcher

    launcher.up(settings, _wordcount_settings(rate, schedule), _parallelism_option(initial), _log_dir(logs), decisions)
