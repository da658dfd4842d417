"""``lastream bench``: La-Stream against DS2, Flink's autoscaler, KEDA, a static configuration
and the oracle, on the simulator (``lastream_stream.sim``).

``run(settings: BenchSettings | None = None, console: rich.console.Console | None = None) -> BenchResults``
runs the suite and writes results.json, results.md and PNG plots to ``settings.out_dir``.
The baselines live in ``bench.baselines``, the episode loop and its measures in ``bench.runner``.
"""

from lastream_stream.bench.compare import BenchResults, run
from lastream_stream.bench.runner import POLICY_NAMES, BenchSettings, EpisodeResult, run_episode

__all__ = ["POLICY_NAMES", "BenchResults", "BenchSettings", "EpisodeResult", "run", "run_episode"]
