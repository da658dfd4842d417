"""What a window of reports shows to be wrong with the app's reporting, in words a user can act on.

Each of these used to fail silently: the agent decided on a wrong parallelism, took the
first operator for the source and never rescaled it, or scored latency as 0. ``build_graph``
decides around them as well as it can (see ``graph.py``); these say what it assumed and
how to fix the app. The controller logs each once per app and attaches them to its records.
"""

from __future__ import annotations

from dataclasses import dataclass

from lastream_stream.policy.graph import AppGraph


@dataclass(frozen=True)
class Problem:
    key: str  # what it is about, e.g. "parallelism:parser": logged once per app and key
    text: str


def diagnose(graph: AppGraph) -> list[Problem]:
    return [*_parallelism(graph), *_unreported(graph), *_isolated(graph), *_latency(graph)]


def _parallelism(graph: AppGraph) -> list[Problem]:
    problems = []
    for name, op in graph.operators.items():
        reported = op.reported_parallelism
        if reported is None:
            continue
        if op.parallelism > reported:
            problems.append(
                Problem(
                    f"parallelism:{name}",
                    f"{name}: {op.parallelism} instances report through the window but say parallelism {reported}; "
                    f"decided on {op.parallelism}. Under the supervisor leave MetricsReporter(parallelism=...) unset "
                    "(it reads LASTREAM_WORKER_STATE), otherwise pass the running count",
                )
            )
        elif op.instances_reporting < reported:
            problems.append(
                Problem(
                    f"parallelism:{name}",
                    f"{name}: reports say parallelism {reported} but only {op.instances_reporting} instance(s) "
                    f"report; decided on {reported} as reported. Every instance must run a MetricsReporter, "
                    "and its parallelism must be the running count",
                )
            )
    return problems


def _unreported(graph: AppGraph) -> list[Problem]:
    problems = []
    for name, fed in graph.unreported.items():
        rate = graph.operators[name].observed_output_rate
        blind = [d for d in fed if graph.operators[d].lag_growth is None]
        assumed = (
            f"taken as an external source of {rate:.3g} records/s, what {', '.join(fed)} take(s) in plus lag growth"
        )
        if blind:
            assumed += (
                f"; {', '.join(blind)} report(s) no lag, so that is only what they process: "
                f"they cannot be seen to fall behind, and are not scaled out"
            )
        problems.append(
            Problem(
                f"upstream:{name}",
                f"'{name}' (upstream of {', '.join(fed)}) never reports; {assumed}. "
                f"Report from it too: MetricsReporter(operator='{name}', upstreams=[])",
            )
        )
    return problems


def _isolated(graph: AppGraph) -> list[Problem]:
    if not graph.isolated:
        return []
    names = ", ".join(repr(name) for name in graph.isolated)
    return [
        Problem(
            f"cycle:{','.join(graph.isolated)}",
            f"{names}: in or downstream of a cycle of declared upstreams; left out of the decision, kept as they "
            "run. Each report's upstreams must name only the operators feeding it",
        )
    ]


def _latency(graph: AppGraph) -> list[Problem]:
    sinks = [name for name in graph.operators if not graph.downstreams.get(name)]
    if not sinks or any(graph.operators[name].latency_p50_ms is not None for name in sinks):
        return []
    return [
        Problem(
            "latency",
            f"no sink reports latency ({', '.join(sinks)}): the reward's latency term is off. At each sink call "
            "reporter.observe_latency(ms) with the ms since the source's timestamp, carried through each hop "
            "(e.g. as the Kafka message timestamp)",
        )
    ]
