"""A simulated stream-processing app: operator DAG, Kafka-like queues, the app's metrics reports.

Pure Python, no Kafka. Policies are fed exactly what the real app sends (``MetricsReport``s,
aggregated by ``policy.graph.build_graph``), while the simulator also knows the ground truth
(true rates, the minimum sustaining configuration) to score them against.

Model assumptions
-----------------
* Fluid, discrete time: records are real numbers moved once per tick (default 0.25 s).
  Reports round per-instance counts to integers.
* Each operator has one true rate per instance (records per second of busy time, DS2's sense),
  fixed over time; total capacity is ``true_rate * p ** scaling_exponent`` with exponent in
  (0, 1], so scaling may be sublinear, or a measured ``capacity_table`` interpolated
  linearly. Instances of an operator share the load evenly.
* A CPU-contended host (``Scenario.host_cores``): all non-source instances share that many
  cores, each at ``min(1, host_cores / instances)`` of its true rate, so scaling one operator
  out slows every other one. Instances of a restarting operator count.
* Selectivity (records out per record in) is constant; every downstream receives an operator's
  whole output; an operator with several upstreams receives the sum (joins, unions).
* Between operators sit FIFO queues, unbounded, standing for Kafka topics: the queue is the
  consumer lag. There is no backpressure; a slow operator builds lag, it does not slow its
  upstreams. Sources read from a queue too, fed by the rate schedule; their parallelism is
  fixed and scenarios give them capacity for the schedule's peak.
* Reports carry whole records; each instance's unreported fraction carries into its next
  report, so counts add up even at a few records per second.
* Parallelism is capped by the partitions of the operator's input topic (``partitions``).
* Reconfiguration: an operator whose parallelism changes processes nothing for
  ``downtime_s``; its input keeps queuing. Other operators are not interrupted.
* Latency is an estimate from queueing (see ``simulator``), not a measurement of records.
* Source rate: a schedule (constant, steps, sine) times per-interval Gaussian noise.

API
---
``from lastream_stream.sim import Simulator, Scenario, SimOperator, scenarios``

* ``SimOperator(name, upstreams=(), true_rate=1000.0, selectivity=1.0, partitions=None,
  scaling_exponent=1.0, parallelism=1, share=1.0, capacity_table=None)`` — ``capacity(p)``,
  ``instance_true_rate(p)``, ``min_parallelism_for(rate) -> int | None``;
  ``capacity_table`` is ``{p: total records/s}`` (or pairs), refused if it ever decreases.
* ``Scenario(name, operators, schedule, interval_s=2.0, tick_s=0.25, downtime_s=5.0,
  source_noise=0.0, horizon_s=300.0, host_cores=None, tags=frozenset(), description="")`` —
  ``required_rates(source_rate) -> dict[str, float]``, ``contention(instances) -> float``;
  schedules: ``Constant(rate)``,
  ``Steps(rate, ((at_s, factor), ...))``, ``Sine(rate, amplitude, period_s)``.
* ``Simulator(scenario, seed=0)``:
  ``apply(scheme: dict[str, int]) -> None`` (clamped to [1, partitions], sources fixed,
  changed operators go down for ``downtime_s``);
  ``run(seconds: float) -> list[MetricsReport]`` (reports of the intervals completed);
  ``parallelism: dict[str, int]``; ``now: float`` (s since start); ``reconfigurations: int``;
  ``source_rate() -> float`` (nominal total, records/s);
  ``required_rates() -> dict[str, float]``;
  ``oracle() -> dict[str, int]`` (minimum sustaining parallelism, capped by partitions,
  host contention included);
  ``sustainable() -> bool`` (False when a partition cap or the host's cores bind);
  ``sustains(scheme) -> bool``;
  ``processed_rate() -> float`` (bottleneck throughput in source records/s, last interval);
  ``arrived_rate() -> float`` (source records/s that arrived in the last interval);
  ``total_lag() -> float`` (records); ``source_equivalent_lag() -> float`` (the backlog in
  source records); ``latency_ms() -> float`` (end-to-end p50 estimate).
* ``scenarios.wordcount(seed)``, ``nexmark_map(seed)``, ``nexmark_join(seed)``,
  ``nexmark_window(seed)``, ``random_dag(n_ops, seed)``, ``fanout_app(seed, rate, fanout)``,
  ``wide_app(seed, rate, need, partitions, start)``, ``contended_app(seed, rate, host_cores,
  load)``; ``suite(seed, n=36)``, ``wide_suite(seed)``; variants ``with_step(s, factor)``,
  ``with_steps(s, ((at_s, factor), ...))``, ``with_sine(s)``, ``with_sublinear(s)``,
  ``with_binding_cap(s)``, ``with_slow_restart(s)``, ``with_measured_capacity(s)``,
  ``at_rate(s, rate)``.
* ``scenario_file.load(path) -> list[Scenario]``: scenarios from a JSON file (see README).
"""

from lastream_stream.sim import scenarios
from lastream_stream.sim.model import Constant, Scenario, SimOperator, Sine, Steps
from lastream_stream.sim.simulator import Simulator

__all__ = ["Constant", "Scenario", "SimOperator", "Simulator", "Sine", "Steps", "scenarios"]
