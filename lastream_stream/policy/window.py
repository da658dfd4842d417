"""Windows of ``MetricsReport``s: what a decision, a view or a training state looks at.

``recent`` is the one rule for which reports make up a decision's window; the controller
and pretraining use it, and ``build_graph`` aggregates what it keeps. ``MetricsWindow`` is
the terminal views' (and the tests') bounded store of each app's latest reports.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable

from lastream_stream.policy.graph import AppGraph, build_graph
from lastream_stream.wire.contracts import MetricsReport


def recent(
    reports: Iterable[MetricsReport], window_s: float, end: float | None = None, slack_s: float = 1e-6
) -> list[MetricsReport]:
    """The reports of the ``window_s`` seconds before ``end`` (by default the end of the
    latest one): those whose interval started no earlier than that, give or take
    ``slack_s``; a worker's interval is timed by its own clock."""
    reports = list(reports)
    if end is None:
        end = max((r.interval_end for r in reports), default=0.0)
    return [r for r in reports if r.interval_start >= end - window_s - slack_s]


class MetricsWindow:
    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._reports: dict[str, deque[MetricsReport]] = defaultdict(deque)

    def add(self, report: MetricsReport) -> None:
        reports = self._reports[report.app]
        reports.append(report)
        while reports and reports[0].interval_end < report.interval_end - self.window_s:
            reports.popleft()

    def reports(self, app: str, since: float | None = None) -> list[MetricsReport]:
        """Reports of ``app`` whose interval started at or after ``since`` (all when None)."""
        return [r for r in self._reports.get(app, ()) if since is None or r.interval_start >= since]

    def graph(self, app: str, since: float | None = None) -> AppGraph | None:
        reports = self.reports(app, since)
        return build_graph(reports) if reports else None


def keeps_up(graph: AppGraph, fraction: float = 0.9) -> bool:
    """Every operator takes in at least ``fraction`` of what its upstreams emit."""
    return all(
        op.observed_input_rate >= fraction * sum(graph.operators[u].observed_output_rate for u in op.upstreams)
        for op in graph.operators.values()
        if op.upstreams
    )
