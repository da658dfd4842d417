"""The ``lastream`` command. Each subcommand parses options, then calls a ``run``-style
function that tests import directly; no logic lives here beyond wiring."""

from __future__ import annotations

import logging
import sys
import threading
import time
from importlib.metadata import entry_points

import click

from lastream_stream.exposition import MetricsPortInUse
from lastream_stream.kafka.broker import LocalBroker, MissingTool
from lastream_stream.kafka.clients import BrokerUnreachable, KafkaClients, TopicMisconfigured, project_topics
from lastream_stream.kube.command import kube_executor_command
from lastream_stream.logs import console, setup_logging
from lastream_stream.policy.base import CheckpointMismatch
from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor.command import supervisor_command
from lastream_stream.supervisor.service import stop_on_signals
from lastream_stream.supervisor.workers import RunDirLocked

log = logging.getLogger("lastream")


class FriendlyErrors(click.Group):
    """Known operational failures print one line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (
            MissingTool,
            BrokerUnreachable,
            CheckpointMismatch,
            MetricsPortInUse,
            RunDirLocked,
            TopicMisconfigured,
        ) as exc:
            console.print(f"[red]error:[/] {exc}")
            sys.exit(2)


@click.group(cls=FriendlyErrors)
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (default: LASTREAM_LOG_LEVEL or INFO).")
@click.pass_context
def main(ctx: click.Context, log_level: str | None) -> None:
    """LaStream: a Kafka-native autoscaler for stream-processing operators.

    Configuration comes from LASTREAM_* environment variables, e.g.
    LASTREAM_KAFKA_BOOTSTRAP=127.0.0.1:9092.
    """
    settings = LastreamSettings()
    setup_logging(log_level or settings.log_level, settings.log_file, settings.log_max_bytes, settings.log_backups)
    ctx.obj = settings


@main.group()
def kafka() -> None:
    """Run a local single-node Apache Kafka broker (KRaft) for development and tests."""


@kafka.command("start")
@click.pass_obj
def kafka_start(settings: LastreamSettings) -> None:
    """Start the broker (fetching its jars with Maven the first time) and wait until it answers."""
    status = LocalBroker(settings.broker).start()
    console.print(f"Kafka running: pid {status.pid}, bootstrap {status.bootstrap}, log {status.log_file}")


@kafka.command("stop")
@click.pass_obj
def kafka_stop(settings: LastreamSettings) -> None:
    """Stop the broker cleanly (SIGTERM, then SIGKILL after 30 s)."""
    was_running = LocalBroker(settings.broker).stop()
    console.print("Kafka stopped" if was_running else "Kafka was not running")


@kafka.command("status")
@click.pass_obj
def kafka_status(settings: LastreamSettings) -> None:
    """Say whether the local broker runs; exit code 1 when it does not."""
    status = LocalBroker(settings.broker).status()
    if status.running:
        console.print(f"Kafka running: pid {status.pid}, bootstrap {status.bootstrap}, log {status.log_file}")
    else:
        console.print(f"Kafka not running (log: {status.log_file})")
        sys.exit(1)


@main.group()
def topics() -> None:
    """Manage LaStream's own topics."""


@topics.command("ensure")
@click.pass_obj
def topics_ensure(settings: LastreamSettings) -> None:
    """Create the metrics, control (compacted), acks, decisions and dead-letter topics if missing; repair existing ones."""
    specs = project_topics(settings.topics)
    created = KafkaClients(settings.kafka).ensure_topics(specs)
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        console.print(f"{spec.name:<28} {spec.partitions:>3} partition(s)  {state}")


@main.command("schemas")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Directory (default: the repo's schemas/).")
def schemas_export(out: str | None) -> None:
    """Export the JSON Schema of every wire message."""
    from pathlib import Path

    from lastream_stream.wire import schemas

    for path in schemas.export(Path(out) if out else schemas.SCHEMA_DIR):
        console.print(f"wrote {path}")


@main.command("settings")
@click.option(
    "--write",
    "target",
    type=click.Path(exists=True, dir_okay=False),
    help="Rewrite the table between <!-- settings:start --> and <!-- settings:end --> in this file (e.g. README.md) instead of printing it.",
)
def settings_command(target: str | None) -> None:
    """Print every LASTREAM_* setting, its default and meaning, as one markdown table.

    Rendered from the settings classes, installed apps' included (entry-point group lastream.settings)."""
    from pathlib import Path

    from lastream_stream.tools import settings_table

    rendered = settings_table.table(settings_table.settings_classes())
    if target is None:
        click.echo(rendered, nl=False)
        return
    path = Path(target)
    try:
        path.write_text(settings_table.replace_region(path.read_text(), rendered))
    except ValueError as exc:
        raise click.ClickException(f"{path}: {exc}") from exc
    console.print(f"wrote the settings table into {path}")


main.add_command(supervisor_command)
main.add_command(kube_executor_command)


@main.command("keda-scaler")
@click.option("--port", type=int, default=None, help="gRPC port KEDA calls (default LASTREAM_KEDA_PORT or 9467).")
@click.option(
    "--host", default=None, help="Address to listen on (default LASTREAM_KEDA_HOST or 127.0.0.1; 0.0.0.0 in a pod)."
)
@click.pass_obj
def keda_scaler(settings: LastreamSettings, port: int | None, host: str | None) -> None:
    """Serve KEDA's external-scaler contract from the agent's recommendations (run the agent
    with --dry-run; README, 'Run on Kubernetes')."""
    from lastream_stream.keda.service import run  # grpc loads only for this command
    from lastream_stream.keda.settings import KedaSettings

    keda = KedaSettings()
    update = {k: v for k, v in (("port", port), ("host", host)) if v is not None}
    run(settings, keda.model_copy(update=update))


@main.command("watch")
@click.option("--app", required=True, help="The app to watch (its name in the metrics reports).")
@click.pass_obj
def watch(settings: LastreamSettings, app: str) -> None:
    """Live view of one app until Ctrl-C: each operator's instances, rates, busy ratio, lag
    and latency, and the agent's latest decisions, read from the metrics and decisions topics."""
    from rich.live import Live

    from lastream_stream.tools.dashboard import AppMonitor

    KafkaClients(settings.kafka).ensure_reachable()
    monitor = AppMonitor(settings, app, decisions_kept=10).start()
    try:
        with Live(monitor.render(), refresh_per_second=1, console=console) as live:
            while True:
                time.sleep(1.0)
                live.update(monitor.render())
    except KeyboardInterrupt:
        pass
    finally:
        monitor.stop()


@main.command("agent")
@click.option("--app", "apps", multiple=True, help="Scale only this app (repeatable). Default: every app that reports.")
@click.option("--dry-run", is_flag=True, help="Publish recommendations to the decisions topic, never commands.")
@click.option("--max-decisions", type=int, default=None, help="Stop after this many decisions.")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="Model + replay checkpoint (default: LASTREAM_AGENT_CHECKPOINT).",
)
@click.option("--no-llm", is_flag=True, help="Analytic candidates only, even when DEEPSEEK_API_KEY is set.")
@click.pass_obj
def agent(
    settings: LastreamSettings,
    apps: tuple[str, ...],
    dry_run: bool,
    max_decisions: int | None,
    checkpoint: str | None,
    no_llm: bool,
) -> None:
    """Run the autoscaling agent: metrics in, scaling commands out, outcomes measured and recorded.

    Timing and guard rails come from LASTREAM_CONTROLLER_WINDOW_S, _WARMUP_S, _COOLDOWN_S,
    _MAX_STEP, _MIN_PARALLELISM / _MAX_PARALLELISM (JSON maps); stability from
    _STABILISATION_S (no reversal, no scale-in below the recent peak need) and
    _DRAIN_BACKLOG_S (no scale-in while a backlog drains); trims of what the app no longer
    needs from _SCALE_IN_DELAY_S and _SCALE_IN_UTILISATION; each app's latency target from
    _LATENCY_TARGET_MS (a JSON map, ms); outcomes from _OUTCOME_S, online training from
    _TRAIN_STEPS (2 per outcome; 0: off); the
    restart assumed until one is measured from LASTREAM_AGENT_RESTART_S. See the README."""
    from pathlib import Path

    from lastream_stream.agent import service
    from lastream_stream.agent.settings import AgentServiceSettings

    agent_settings = AgentServiceSettings()
    overrides: dict[str, object] = {"llm": agent_settings.llm and not no_llm}
    if apps:
        overrides["apps"] = list(apps)
    if checkpoint:
        overrides["checkpoint"] = Path(checkpoint)
    if dry_run:
        overrides["controller"] = agent_settings.controller.model_copy(update={"dry_run": True})
    stop = threading.Event()
    # SIGTERM (a container stop) like Ctrl-C: the step in progress finishes and is published first.
    with stop_on_signals(stop):
        service.run(settings, agent_settings.model_copy(update=overrides), stop=stop, max_decisions=max_decisions)
    log.info("agent stopped")


@main.command("bench")
@click.option(
    "--suite",
    type=click.Choice(["default", "wide"]),
    default="default",
    show_default=True,
    help="default: 36 seeded scenarios; wide: rates from 1 to 10^6 records/s, fan-out, 20+ instances, slow restarts, contended hosts, measured capacity.",
)
@click.option(
    "--scenario-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Run your own topology instead: a JSON list of scenarios (format in the README).",
)
@click.option(
    "--scenarios",
    "n_scenarios",
    type=int,
    default=None,
    help="Only the first N scenarios (default: 36 of the default suite; all of the wide suite or the file).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--horizon", type=float, default=None, help="Seconds per episode (default: each scenario's own).")
@click.option(
    "--policy",
    "policies",
    multiple=True,
    help="Only these policies (repeatable): lastream (the shipped model, never trained online), lastream-online (as the service runs by default: an online model trained after each outcome, deciding once it predicts the app's outcomes better; LASTREAM_CONTROLLER_TRAIN_STEPS), ds2, flink, keda, static, oracle; or the ablation's fluid-only, fluid+capacity.",
)
@click.option("--out", type=click.Path(file_okay=False), default="benchmarks/results/bench", show_default=True)
@click.option(
    "--llm",
    is_flag=True,
    help="Also run lastream+llm, the agent with the LLM's candidates (LASTREAM_LLM_* names the endpoint; needs its key), and report how often they won and what they changed.",
)
@click.option(
    "--ablation",
    is_flag=True,
    help="LaStream's learned parts added one at a time: fluid-only, fluid+capacity, lastream (+ GCN/evaluator), lastream-online (+ online learning), and ds2 for reference.",
)
def bench(
    suite: str,
    scenario_file: str | None,
    n_scenarios: int | None,
    seed: int,
    horizon: float | None,
    policies: tuple[str, ...],
    out: str,
    llm: bool,
    ablation: bool,
) -> None:
    """Compare LaStream with DS2, the Flink autoscaler, KEDA, static and the oracle on the
    simulator: prints a table (and one per scenario tag), writes results.json, results.md and
    PNG plots to --out."""
    from pathlib import Path

    from lastream_stream.bench import BenchSettings, run
    from lastream_stream.bench.compare import chosen_suite
    from lastream_stream.bench.runner import ABLATION, LLM_POLICY, POLICY_NAMES, LLMUnavailable
    from lastream_stream.sim.scenario_file import ScenarioFileError

    if scenario_file and suite != "default":
        raise click.UsageError("give --scenario-file or --suite, not both")
    if ablation and policies:
        raise click.UsageError("--ablation chooses the policies itself; drop --policy")
    # Thousands of simulated decisions: their one-line logs would bury the progress bar.
    logging.getLogger("lastream_stream.agent.controller").setLevel(logging.WARNING)
    try:
        chosen = chosen_suite(seed, n_scenarios, suite, Path(scenario_file) if scenario_file else None)
    except ScenarioFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario-file") from None
    policies = policies or (ABLATION if ablation else POLICY_NAMES)
    if llm:
        policies = tuple(dict.fromkeys((*policies, "lastream", LLM_POLICY)))
    settings = BenchSettings(
        seed=seed, n_scenarios=len(chosen), horizon_s=horizon, policies=policies, out_dir=Path(out)
    )
    try:
        run(settings, suite=chosen)
    except LLMUnavailable as exc:  # raised while the policies are built, before any episode runs
        raise click.UsageError(str(exc)) from None


@main.command("train")
@click.option(
    "--sim", "simulated", is_flag=True, required=True, help="Pretrain on simulated episodes (the only mode so far)."
)
@click.option("--episodes", type=int, default=800, show_default=True, help="Simulated decision states to learn from.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Checkpoint to write (default: the shipped lastream_stream/models/pretrained.pt).",
)
def train(simulated: bool, episodes: int, seed: int, out: str | None) -> None:
    """Pretrain the GCN and the evaluator together on the simulator, so the agent is useful
    from its first decision. Shows progress; prints the held-out ranking quality."""
    from pathlib import Path

    from lastream_stream.policy.agent import PRETRAINED_PATH
    from lastream_stream.tools import training

    # The closed-loop runs' thousands of simulated decisions would bury the progress in their log lines.
    logging.getLogger("lastream_stream.agent.controller").setLevel(logging.WARNING)
    summary = training.run(episodes, Path(out) if out else PRETRAINED_PATH, seed=seed, progress=True)
    for key, value in summary.items():
        console.print(f"{key:<28} {value:.4g}" if isinstance(value, float) else f"{key:<28} {value}")


def add_plugin_commands(group: click.Group) -> None:
    """Commands an installed app adds to ``lastream`` (entry points in the group
    ``lastream.commands``): WordCount adds ``up`` and ``wordcount``. A plugin that fails to
    load is reported and left out; the rest of the CLI still works."""
    for entry in entry_points(group="lastream.commands"):
        try:
            group.add_command(entry.load(), entry.name)
        except Exception as exc:  # a broken plugin must not take the CLI down with it
            log.warning("cannot load the %r command from %s: %s", entry.name, entry.value, exc)


add_plugin_commands(main)
