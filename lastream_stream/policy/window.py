"""A sliding window of ``MetricsReport``s per app.

Pure bookkeeping shared by the agent service and the terminal views: reports go in as they
arrive, reports older than ``window_s`` (by their own timestamps) fall out, and ``graph``
aggregates what is left with the policy's own ``build_graph``.
"""

from __future__ import annotations

from collections import defaultdict, deque

from lastream_stream.policy.graph import AppGraph, build_graph
from lastream_stream.wire.contracts import MetricsReport


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
