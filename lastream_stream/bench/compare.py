"""``lastream bench``: every policy on every scenario of a suite, summarised.

The suite is the seeded one (``sim.scenarios.suite``) unless ``run`` is given scenarios (the
wide suite, a scenario file). Writes into ``BenchSettings.out_dir``:

* ``results.json`` — settings, per-policy medians (overall, and per scenario tag under
  ``summary[policy]["by_tag"]``), every episode's measures, and the time series of the
  plotted scenarios;
* ``results.md`` — the same medians, per tag and per scenario, as Markdown tables;
* ``parallelism_<scenario>.png`` — scalable instances over time per policy against the oracle;
* ``headline.png`` — bar charts of the per-policy medians.

With ``lastream+llm`` among the policies (``lastream bench --llm``), ``results.json`` also
holds ``llm``: how many of its commands an LLM candidate won, and its reward and
reconfigurations against ``lastream`` scenario by scenario (``llm_report``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the benchmark runs headless
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from lastream_stream.bench.runner import (  # noqa: E402
    LLM_POLICY,
    BenchSettings,
    EpisodeResult,
    policy_factory,
    run_episode,
)
from lastream_stream.sim import Scenario, scenario_file, scenarios  # noqa: E402

log = logging.getLogger(__name__)

# (key in the summary, column title, how to print it). Only the reward is better when higher.
HEADLINE = (
    ("sustained", "sustained", "{}"),
    ("decisions_to_sustain", "decisions", "{:.1f}"),
    ("parallelism_ratio", "inst/oracle", "{:.2f}"),
    ("reconfigurations", "reconfigs", "{:.1f}"),
    ("seconds_backlog_over_dstar", "backlog>D* s", "{:.0f}"),
    ("mean_reward", "reward", "{:.3f}"),
    ("oscillations_per_operator", "osc/op", "{:.2f}"),
    ("decision_ms", "decide ms", "{:.2f}"),
)
LEGEND = (
    "`sustained`: scenarios brought to keep up, of those some configuration can keep up with; "
    "`decisions`: decisions after the last rate change until the first window that keeps up; "
    "`inst/oracle`: instances of scalable operators over the minimum, last quarter of the run; "
    "`reconfigs`: applied changes; `backlog>D* s`: seconds with a backlog over D* (10 s of input by default); "
    "`reward`: mean La-Stream reward (higher is better); `osc/op`: direction changes per operator; "
    "`decide ms`: mean time of one decision."
)
SUITES = ("default", "wide")
# The measures shown per tag: how fast, how close to the minimum, how calm, how rewarded.
BY_TAG = ("decisions_to_sustain", "parallelism_ratio", "reconfigurations", "oscillations_per_operator", "mean_reward")


@dataclass
class BenchResults:
    settings: BenchSettings
    episodes: list[EpisodeResult]
    summary: dict[str, dict[str, object]]
    out_dir: Path


def chosen_suite(seed: int, n: int | None = None, name: str = "default", path: Path | None = None) -> list[Scenario]:
    """The scenarios ``lastream bench`` runs: those of the scenario file at ``path`` if given,
    else the named suite (one of ``SUITES``); the first ``n`` of them if ``n`` is given, else
    all of them, 36 for the default suite. Raises ``ScenarioFileError`` for a malformed file."""
    if path is not None:
        chosen = scenario_file.load(path)
    elif name == "wide":
        chosen = scenarios.wide_suite(seed)
    elif name == "default":
        return scenarios.suite(seed, BenchSettings.n_scenarios if n is None else n)
    else:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    return chosen if n is None else chosen[:n]


def run(
    settings: BenchSettings | None = None, console: Console | None = None, suite: list[Scenario] | None = None
) -> BenchResults:
    """Every policy of ``settings`` on ``suite`` (default: the seeded suite of
    ``settings.n_scenarios``); writes the files, prints the tables."""
    settings = settings or BenchSettings()
    console = console or Console(stderr=True)
    suite = suite if suite is not None else scenarios.suite(settings.seed, settings.n_scenarios)

    factories = {name: policy_factory(name, settings) for name in settings.policies}

    episodes: list[EpisodeResult] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("bench", total=len(suite) * len(factories))
        for scenario in suite:
            for name, factory in factories.items():
                progress.update(task, description=f"{name:<9} {scenario.name}")
                episodes.append(run_episode(scenario, name, factory, settings))
                progress.advance(task)
                if not console.is_terminal:  # a log file sees no bar
                    log.info(
                        "episode %d of %d: %s on %s", len(episodes), len(suite) * len(factories), name, scenario.name
                    )

    summary = summarise(episodes, list(factories))
    llm = llm_report(episodes)
    out_dir = settings.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    plotted = [s.name for s in suite[: settings.plot_scenarios]]
    write_json(out_dir / "results.json", settings, summary, episodes, plotted, llm)
    write_markdown(out_dir / "results.md", settings, summary, episodes, llm)
    for scenario_name in plotted:
        plot_parallelism(out_dir / f"parallelism_{scenario_name}.png", scenario_name, episodes)
    plot_headline(out_dir / "headline.png", summary)
    console.print(summary_table(summary))
    if _tags(summary):
        console.print(tag_table(summary))
    if llm is not None:
        console.print(llm_table(llm))
    log.info("wrote results.json, results.md and plots to %s", out_dir)
    return BenchResults(settings, episodes, summary, out_dir)


def summarise(episodes: list[EpisodeResult], policies: list[str]) -> dict[str, dict[str, object]]:
    """Medians over scenarios per policy, and the same medians per scenario tag under
    ``by_tag``. ``decisions_to_sustain`` only counts scenarios that can be sustained and were;
    ``sustained`` says in how many of them that happened."""
    summary: dict[str, dict[str, object]] = {}
    for policy in policies:
        runs = [e for e in episodes if e.policy == policy]
        tags = sorted({tag for e in runs for tag in e.tags})
        summary[policy] = {
            **_medians(runs),
            "by_tag": {tag: _medians([e for e in runs if tag in e.tags]) for tag in tags},
        }
    return summary


def _medians(runs: list[EpisodeResult]) -> dict[str, object]:
    sustainable = [e for e in runs if e.sustainable]
    reached = [e.decisions_to_sustain for e in sustainable if e.decisions_to_sustain is not None]
    return {
        "scenarios": len(runs),
        "sustained": f"{len(reached)}/{len(sustainable)}",
        "sustained_fraction": len(reached) / len(sustainable) if sustainable else None,
        "decisions_to_sustain": statistics.median(reached) if reached else None,
        "parallelism_ratio": statistics.median(e.parallelism_ratio for e in runs),
        "reconfigurations": statistics.median(e.reconfigurations for e in runs),
        "seconds_backlog_over_dstar": statistics.median(e.seconds_backlog_over_dstar for e in runs),
        "mean_reward": statistics.median(e.mean_reward for e in runs),
        "oscillations_per_operator": statistics.median(e.oscillations_per_operator for e in runs),
        "decision_ms": statistics.median(e.decision_ms_mean for e in runs),
    }


def llm_report(episodes: list[EpisodeResult]) -> dict[str, object] | None:
    """What the LLM's candidates bought: of ``lastream+llm``'s commands, how many carried an
    LLM-proposed scheme; and per scenario run by both, its mean reward and reconfigurations
    minus those of ``lastream`` (the same agent without the LLM). None without ``lastream+llm``."""
    with_llm = {e.scenario: e for e in episodes if e.policy == LLM_POLICY}
    if not with_llm:
        return None
    without = {e.scenario: e for e in episodes if e.policy == "lastream"}
    commands = sum(sum(e.commands_by_source.values()) for e in with_llm.values())
    won = sum(e.commands_by_source.get("llm", 0) for e in with_llm.values())
    pairs = [(with_llm[name], without[name]) for name in with_llm if name in without]
    rewards = [a.mean_reward - b.mean_reward for a, b in pairs]
    reconfigurations = [a.reconfigurations - b.reconfigurations for a, b in pairs]
    return {
        "commands": commands,
        "llm_commands": won,
        "llm_share": won / commands if commands else None,
        "scenarios_compared": len(rewards),
        "reward_difference_median": statistics.median(rewards) if rewards else None,
        "reward_difference_mean": statistics.fmean(rewards) if rewards else None,
        "scenarios_better": sum(d > 0 for d in rewards),
        "scenarios_worse": sum(d < 0 for d in rewards),
        "reconfigurations_difference_median": statistics.median(reconfigurations) if reconfigurations else None,
    }


LLM_ROWS = (
    ("commands", "commands of lastream+llm", "{}"),
    ("llm_commands", "of them an LLM scheme", "{}"),
    ("llm_share", "LLM share", "{:.0%}"),
    ("scenarios_compared", "scenarios against lastream", "{}"),
    ("reward_difference_median", "reward difference, median", "{:+.4f}"),
    ("reward_difference_mean", "reward difference, mean", "{:+.4f}"),
    ("scenarios_better", "scenarios better", "{}"),
    ("scenarios_worse", "scenarios worse", "{}"),
    ("reconfigurations_difference_median", "reconfigurations difference, median", "{:+g}"),
)


def llm_table(llm: dict[str, object]) -> Table:
    table = Table(title="LLM candidates: lastream+llm against lastream")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, title, fmt in LLM_ROWS:
        table.add_row(title, _cell(llm[key], fmt))
    return table


def _cell(value: object, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def summary_table(summary: dict[str, dict[str, object]]) -> Table:
    table = Table(title="LaStream bench: medians over scenarios")
    table.add_column("policy", no_wrap=True)
    for _, title, _ in HEADLINE:
        table.add_column(title, justify="right")
    for policy, row in summary.items():
        table.add_row(policy, *(_cell(row[key], fmt) for key, _, fmt in HEADLINE))
    return table


def _tags(summary: dict[str, dict[str, object]]) -> list[str]:
    return sorted({tag for row in summary.values() for tag in row["by_tag"]})


def _tag_rows(summary: dict[str, dict[str, object]]) -> list[list[str]]:
    """[tag, policy, scenarios, *BY_TAG cells] per tag and policy, tag by tag."""
    formats = {key: fmt for key, _, fmt in HEADLINE}
    rows = []
    for tag in _tags(summary):
        for policy, row in summary.items():
            if (medians := row["by_tag"].get(tag)) is not None:
                rows.append(
                    [tag, policy, str(medians["scenarios"]), *(_cell(medians[key], formats[key]) for key in BY_TAG)]
                )
    return rows


def _tag_titles() -> list[str]:
    titles = {key: title for key, title, _ in HEADLINE}
    return ["tag", "policy", "scenarios", *(titles[key] for key in BY_TAG)]


def tag_table(summary: dict[str, dict[str, object]]) -> Table:
    table = Table(title="medians per scenario tag")
    for k, title in enumerate(_tag_titles()):
        table.add_column(title, justify="left" if k < 2 else "right", no_wrap=k < 2)
    for tag, group in itertools.groupby(_tag_rows(summary), key=lambda row: row[0]):
        rows = list(group)
        for k, row in enumerate(rows):
            table.add_row(tag if k == 0 else "", *row[1:], end_section=k == len(rows) - 1)
    return table


def _settings_dict(settings: BenchSettings) -> dict[str, object]:
    values = dataclasses.asdict(settings)
    values["out_dir"] = str(settings.out_dir)
    values["reward"] = settings.reward.model_dump()
    values["controller"] = settings.controller.model_dump(mode="json")
    return values


def write_json(
    path: Path,
    settings: BenchSettings,
    summary: dict[str, dict[str, object]],
    episodes: list[EpisodeResult],
    plotted: list[str],
    llm: dict[str, object] | None = None,
) -> None:
    payload = {
        "settings": _settings_dict(settings),
        "summary": summary,
        **({"llm": llm} if llm is not None else {}),
        "episodes": [e.measures() for e in episodes],
        "timeseries": {
            name: {e.policy: [dataclasses.asdict(s) for s in e.samples] for e in episodes if e.scenario == name}
            for name in plotted
        },
    }
    path.write_text(json.dumps(payload, indent=1, allow_nan=False))


def write_markdown(
    path: Path,
    settings: BenchSettings,
    summary: dict[str, dict[str, object]],
    episodes: list[EpisodeResult],
    llm: dict[str, object] | None = None,
) -> None:
    n_scenarios = len({e.scenario for e in episodes})
    lines = [
        "# LaStream bench",
        "",
        f"{n_scenarios} simulated scenarios (seed {settings.seed}), a decision every "
        f"{settings.decision_interval_s:g} s; medians over scenarios.",
        "",
        LEGEND,
        "",
        "| policy | " + " | ".join(title for _, title, _ in HEADLINE) + " |",
        "|---|" + "---:|" * len(HEADLINE),
    ]
    for policy, row in summary.items():
        lines.append(f"| {policy} | " + " | ".join(_cell(row[key], fmt) for key, _, fmt in HEADLINE) + " |")
    if tag_rows := _tag_rows(summary):
        lines += [
            "",
            "## Per tag",
            "",
            "| " + " | ".join(_tag_titles()) + " |",
            "|---|---|" + "---:|" * (len(BY_TAG) + 1),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in tag_rows]
    if llm is not None:
        lines += ["", "## LLM candidates: lastream+llm against lastream", "", "| measure | value |", "|---|---:|"]
        lines += [f"| {title} | {_cell(llm[key], fmt)} |" for key, title, fmt in LLM_ROWS]
    lines += [
        "",
        "## Per scenario",
        "",
        "| scenario | policy | decisions | inst/oracle | reconfigs | backlog>D* s | reward | osc/op |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in episodes:
        reach = "—" if e.decisions_to_sustain is None else str(e.decisions_to_sustain)
        if not e.sustainable:
            reach += " (cap binds)"
        lines.append(
            f"| {e.scenario} | {e.policy} | {reach} | {e.parallelism_ratio:.2f} | {e.reconfigurations} | "
            f"{e.seconds_backlog_over_dstar:.0f} | {e.mean_reward:.3f} | {e.oscillations_per_operator:.2f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def plot_parallelism(path: Path, scenario_name: str, episodes: list[EpisodeResult]) -> None:
    runs = [e for e in episodes if e.scenario == scenario_name]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for e in runs:
        ax.step([s.t for s in e.samples], [s.parallelism for s in e.samples], where="post", label=e.policy)
    # Every run sees the same rate schedule, hence the same oracle line.
    oracle = runs[0].samples
    ax.step(
        [s.t for s in oracle],
        [s.oracle for s in oracle],
        where="post",
        color="black",
        linestyle="--",
        label="oracle minimum",
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("instances of scalable operators")
    ax.set_title(scenario_name)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_headline(path: Path, summary: dict[str, dict[str, object]]) -> None:
    panels = [("sustained_fraction", "sustained (fraction)")] + [
        (key, title) for key, title, _ in HEADLINE if key != "sustained"
    ]
    fig, axes = plt.subplots(2, 4, figsize=(12, 6.5))
    policies = list(summary)
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        # A policy that never sustained has no median: drawn as an empty bar.
        values = [summary[p][key] if summary[p][key] is not None else 0.0 for p in policies]
        ax.bar(policies, values, color=[f"C{i}" for i in range(len(policies))])
        ax.set_title(title, fontsize="small")
        ax.tick_params(axis="x", labelrotation=60, labelsize="small")
    fig.suptitle(
        "medians over scenarios: sustained and reward higher is better, inst/oracle 1.0 is the minimum, the rest lower is better"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
