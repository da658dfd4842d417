"""Windows of ``MetricsReport``s: what a decision, a view or a training state looks at.

``recent`` is the one rule for which reports make up a decision's window; the controller
and pretraining use it, and ``build_graph`` aggregates what it keeps. ``MetricsWindow`` is
the terminal views' (and the tests') bounded store of each app's latest reports.

A window is judged on the agent's clock: ``ProducerClocks`` times each report by when it
arrived when its producer's clock is off (a worker 15 s behind would otherwise never be in
a window, one ahead would skip the warm-up), and a report dated ahead of its arrival by
when it arrived, whatever its producer's clock.
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from lastream_stream.policy.graph import AppGraph, build_graph
from lastream_stream.wire.contracts import MetricsReport

log = logging.getLogger(__name__)

SKEW_TOLERANCE_S = 2.0  # a producer's clock this far off the agent's is corrected, and logged once
OFFSETS_KEPT = 9  # a producer's offset is the median of its last few reports': a late delivery does not move it


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


@dataclass
class ProducerClocks:
    """Each producer's (operator instance's) clock offset from the agent's, measured as
    arrival time less ``interval_end``, the median of its last few reports. Within
    ``SKEW_TOLERANCE_S`` a report is taken as dated; beyond it, corrected by the offset."""

    app: str
    offsets: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    logged: set[tuple[str, str]] = field(default_factory=set)  # skewed producers already logged

    def retime(self, report: MetricsReport, received_at: float) -> MetricsReport:
        producer = (report.operator, report.instance_id)
        offsets = self.offsets.setdefault(producer, deque(maxlen=OFFSETS_KEPT))
        offsets.append(received_at - report.interval_end)
        skew = statistics.median(offsets)
        end = report.interval_end
        if abs(skew) > SKEW_TOLERANCE_S:
            end += skew
            if producer not in self.logged:
                self.logged.add(producer)
                log.warning(
                    "%s: the clock of %s/%s is %+.1f s off the agent's (+: behind); its reports are timed by their arrival",
                    self.app,
                    *producer,
                    skew,
                )
        # A report must not stay in windows longer than it describes, however its producer's clock goes.
        if end > received_at + SKEW_TOLERANCE_S:
            end = received_at
        return report if end == report.interval_end else report.model_copy(update={"interval_end": end})

    def keep(self, producers: Iterable[tuple[str, str]]) -> None:
        """Forget the producers not in ``producers`` (gone from the window)."""
        kept = set(producers)
        self.offsets = {p: offsets for p, offsets in self.offsets.items() if p in kept}
        self.logged &= kept
