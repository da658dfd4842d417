"""Seeded scenarios: the shapes of the La-Stream and DS2 evaluations, plus random DAGs.

Every builder takes a seed that jitters rates by up to ±15 %, so a suite run with another seed
checks that conclusions do not hinge on one lucky set of numbers. Sources are given four- to
sixfold headroom so that a ×4 step stays within what the (fixed) sources can emit.

``suite`` is the default benchmark; ``wide_suite`` adds rates from 1 to 10^6 records/s,
fan-out, very wide operators, slow restarts, a CPU-contended host and measured capacity.
Scenarios are tagged by what they stress ("constant" when the rate never changes).
"""

from __future__ import annotations

import dataclasses
import math
import random

from lastream_stream.sim.model import Constant, Scenario, SimOperator, Sine, Steps

STEP_AT_S = 150.0  # rate steps happen half-way through the default 300 s horizon
SOURCE_NOISE = 0.02
SOURCE_HEADROOM = 6.0  # source capacity / base source rate


def _jitter(rng: random.Random, value: float) -> float:
    return value * rng.uniform(0.85, 1.15)


def _source(
    name: str, base_rate: float, share: float = 1.0, total_share: float = 1.0, parallelism: int = 2
) -> SimOperator:
    rate = SOURCE_HEADROOM * base_rate * share / total_share / parallelism
    return SimOperator(name, true_rate=rate, parallelism=parallelism, share=share, partitions=parallelism)


def _scenario(
    name: str, ops: list[SimOperator], rate: float, description: str, tags: set[str], **changes: object
) -> Scenario:
    return Scenario(
        name=name,
        operators=tuple(ops),
        schedule=Constant(rate),
        source_noise=SOURCE_NOISE,
        tags=frozenset(tags | {"constant"}),
        description=description,
        **changes,
    )


def wordcount(seed: int = 0) -> Scenario:
    """lines → split (flatMap, ~8 words a line) → count (keyed) → sink; DS2's running example."""
    rng = random.Random(seed)
    rate = _jitter(rng, 2000.0)
    ops = [
        _source("lines", rate),
        SimOperator("split", ("lines",), true_rate=_jitter(rng, 400.0), selectivity=8.0, partitions=32, parallelism=2),
        SimOperator("count", ("split",), true_rate=_jitter(rng, 4000.0), selectivity=1.0, partitions=32, parallelism=1),
        SimOperator("sink", ("count",), true_rate=_jitter(rng, 40000.0), selectivity=0.0, partitions=32, parallelism=1),
    ]
    return _scenario(f"wordcount-s{seed}", ops, rate, "WordCount: split and count under-provisioned", {"wordcount"})


def nexmark_map(seed: int = 0) -> Scenario:
    """Nexmark Q1 (currency conversion): bids → map → sink, started over-provisioned."""
    rng = random.Random(seed)
    rate = _jitter(rng, 10000.0)
    ops = [
        _source("bids", rate),
        SimOperator("currency_map", ("bids",), true_rate=_jitter(rng, 3000.0), partitions=16, parallelism=8),
        SimOperator(
            "sink", ("currency_map",), true_rate=_jitter(rng, 15000.0), selectivity=0.0, partitions=16, parallelism=2
        ),
    ]
    return _scenario(f"nexmark-map-s{seed}", ops, rate, "Nexmark Q1: map over-provisioned", {"nexmark", "map"})


def nexmark_join(seed: int = 0) -> Scenario:
    """Nexmark Q3-like: persons and auctions filtered, then joined on seller; the join is costly."""
    rng = random.Random(seed)
    rate = _jitter(rng, 8000.0)
    ops = [
        _source("persons", rate, share=1.0, total_share=4.0, parallelism=1),
        _source("auctions", rate, share=3.0, total_share=4.0, parallelism=2),
        SimOperator(
            "filter_persons",
            ("persons",),
            true_rate=_jitter(rng, 5000.0),
            selectivity=0.25,
            partitions=8,
            parallelism=1,
        ),
        SimOperator(
            "filter_auctions",
            ("auctions",),
            true_rate=_jitter(rng, 5000.0),
            selectivity=0.3,
            partitions=16,
            parallelism=1,
        ),
        SimOperator(
            "join",
            ("filter_auctions", "filter_persons"),
            true_rate=_jitter(rng, 600.0),
            selectivity=0.5,
            partitions=24,
            parallelism=1,
        ),
        SimOperator("sink", ("join",), true_rate=_jitter(rng, 20000.0), selectivity=0.0, partitions=8, parallelism=1),
    ]
    return _scenario(f"nexmark-join-s{seed}", ops, rate, "Nexmark Q3-like two-input join", {"nexmark", "join"})


def nexmark_window(seed: int = 0) -> Scenario:
    """Nexmark Q5-like hot items: bids → assign window → windowed count → top-k → sink."""
    rng = random.Random(seed)
    rate = _jitter(rng, 8000.0)
    ops = [
        _source("bids", rate),
        SimOperator("assign_window", ("bids",), true_rate=_jitter(rng, 4000.0), partitions=16, parallelism=1),
        SimOperator(
            "window_agg",
            ("assign_window",),
            true_rate=_jitter(rng, 1500.0),
            selectivity=0.02,
            partitions=32,
            parallelism=2,
        ),
        SimOperator(
            "top_k", ("window_agg",), true_rate=_jitter(rng, 2000.0), selectivity=0.5, partitions=4, parallelism=1
        ),
        SimOperator("sink", ("top_k",), true_rate=_jitter(rng, 20000.0), selectivity=0.0, partitions=4, parallelism=1),
    ]
    return _scenario(
        f"nexmark-window-s{seed}", ops, rate, "Nexmark Q5-like windowed aggregation", {"nexmark", "window"}
    )


def random_dag(n_ops: int, seed: int = 0) -> Scenario:
    """A random DAG of ``n_ops`` operators (3..20), one to three of them sources.

    Each operator reads from one or two earlier ones. True rates are drawn so that the
    minimum parallelism at the base rate lies between 1 and 8, and initial parallelism
    anywhere from a third to twice that, so both scale-up and scale-down are needed.
    """
    if not 3 <= n_ops <= 20:
        raise ValueError("random_dag takes 3 to 20 operators")
    rng = random.Random(seed * 7919 + n_ops)
    n_sources = min(3, max(1, n_ops // 6))
    rate = rng.uniform(1000.0, 20000.0)
    shares = [rng.uniform(1.0, 3.0) for _ in range(n_sources)]
    total_share = sum(shares)
    ops = [
        dataclasses.replace(_source(f"src{i}", rate, share, total_share), selectivity=rng.uniform(0.5, 2.0))
        for i, share in enumerate(shares)
    ]
    required = {op.name: rate * op.share / total_share for op in ops}
    selectivity = {op.name: op.selectivity for op in ops}
    for i in range(n_sources, n_ops):
        name = f"op{i}"
        earlier = [op.name for op in ops]
        upstreams = tuple(sorted(rng.sample(earlier, k=min(len(earlier), rng.choice((1, 1, 2))))))
        required[name] = sum(required[u] * selectivity[u] for u in upstreams)
        selectivity[name] = rng.uniform(0.3, 2.0)
        need = rng.uniform(0.7, 8.0)  # parallelism the base rate needs
        ops.append(
            SimOperator(
                name,
                upstreams,
                true_rate=required[name] / need,
                selectivity=selectivity[name],
                partitions=rng.choice((32, 48, 64)),
                parallelism=max(1, round(need * rng.uniform(0.33, 2.0))),
            )
        )
    return Scenario(
        name=f"random-{n_ops}ops-s{seed}",
        operators=tuple(ops),
        schedule=Constant(rate),
        source_noise=SOURCE_NOISE,
        tags=frozenset({"random", "constant"}),
        description=f"random DAG of {n_ops} operators",
    )


# -- variants: change one condition of a base scenario -----------------------------------


def with_step(base: Scenario, factor: float, at_s: float = STEP_AT_S) -> Scenario:
    schedule = Steps(base.schedule.rate_at(0.0), ((at_s, factor),))
    return _variant(base, f"step-x{factor:g}", schedule=schedule, tags={"step"})


def with_sine(base: Scenario, amplitude: float = 0.3, period_s: float = 120.0) -> Scenario:
    schedule = Sine(base.schedule.rate_at(0.0), amplitude, period_s)
    return _variant(base, "sine", schedule=schedule, tags={"sine"})


def with_sublinear(base: Scenario, exponent: float = 0.8) -> Scenario:
    """Every non-source operator gains less from each added instance: capacity ∝ p^exponent."""
    ops = tuple(op if op.is_source else dataclasses.replace(op, scaling_exponent=exponent) for op in base.operators)
    return _variant(base, f"sublinear{exponent:g}", operators=ops, tags={"sublinear"})


def with_binding_cap(base: Scenario) -> Scenario:
    """The operator needing the most instances gets one partition fewer than it needs at peak."""
    peak_required = base.required_rates(base.schedule.peak())
    needs = {
        op.name: op.min_parallelism_for(peak_required[op.name]) or op.max_parallelism
        for op in base.operators
        if not op.is_source
    }
    bottleneck = max(needs, key=lambda name: needs[name])
    cap = max(1, needs[bottleneck] - 1)
    ops = tuple(
        dataclasses.replace(op, partitions=cap, parallelism=min(op.parallelism, cap)) if op.name == bottleneck else op
        for op in base.operators
    )
    return _variant(base, "cap", operators=ops, tags={"partition-cap"})


def with_slow_restart(base: Scenario, downtime_s: float = 15.0) -> Scenario:
    return _variant(base, f"down{downtime_s:g}s", downtime_s=downtime_s, tags={"downtime"})


def _variant(base: Scenario, suffix: str, tags: set[str], **changes: object) -> Scenario:
    # A new schedule is no longer the base's constant rate.
    kept = base.tags - {"constant"} if "schedule" in changes else base.tags
    return dataclasses.replace(base, name=f"{base.name}-{suffix}", tags=kept | tags, **changes)


def _random_variant(index: int, base: Scenario) -> Scenario:
    variants = (
        lambda s: s,
        lambda s: with_step(s, 2.0),
        lambda s: with_step(s, 0.5),
        lambda s: with_step(s, 4.0),
        with_sine,
        with_sublinear,
        with_binding_cap,
        with_slow_restart,
    )
    return variants[index % len(variants)](base)


def suite(seed: int = 0, n: int = 36) -> list[Scenario]:
    """``n`` scenarios. The first ones are deliberately varied (a step, a binding cap, sublinear
    scaling, a join, a random DAG) so that even a short suite covers the main conditions;
    random DAGs of 3 to 20 operators fill the rest."""
    named = [
        with_step(wordcount(seed), 2.0),
        with_binding_cap(nexmark_join(seed)),
        with_sublinear(random_dag(8, seed)),
        with_step(nexmark_map(seed), 4.0),
        with_step(nexmark_window(seed), 0.5),
        wordcount(seed),
        nexmark_map(seed),
        nexmark_join(seed),
        nexmark_window(seed),
        with_step(wordcount(seed), 4.0),
        with_step(wordcount(seed), 0.5),
        with_sublinear(wordcount(seed)),
        with_slow_restart(wordcount(seed)),
        with_step(nexmark_map(seed), 0.5),
        with_sine(nexmark_map(seed)),
        with_step(nexmark_join(seed), 2.0),
        with_sublinear(nexmark_join(seed)),
        with_step(nexmark_window(seed), 2.0),
        with_binding_cap(nexmark_window(seed)),
        with_slow_restart(nexmark_window(seed)),
    ]
    scenarios = named[:n]
    index = 0
    while len(scenarios) < n:
        size = 3 + (index * 5) % 18  # walks through 3..20
        scenarios.append(_random_variant(index, random_dag(size, seed * 1000 + index)))
        index += 1
    return scenarios


# -- the wide suite: rates over six decades and harder conditions --------------------------

# Total capacity of p instances in single instances' worth: each added instance gains less
# (a shared store, skew), as a capacity measured at a few parallelisms typically shows
# (e.g. 500, 950 and 1700 records/s at 1, 2 and 4 instances).
DIMINISHING = ((1, 1.0), (2, 1.9), (4, 3.4), (8, 5.8), (16, 9.6))


def _decade(rate: float) -> str:
    return f"1e{round(math.log10(rate))}"


def at_rate(base: Scenario, rate: float) -> Scenario:
    """``base`` with its schedule's base rate set to ``rate`` (the shape kept) and every true
    rate (and measured capacity) scaled alike, so every operator needs as many instances as
    before: a slow app is not a small app."""
    factor = rate / base.schedule.rate
    ops = tuple(
        dataclasses.replace(
            op,
            true_rate=op.true_rate * factor,
            capacity_table=None if op.capacity_table is None else tuple((p, c * factor) for p, c in op.capacity_table),
        )
        for op in base.operators
    )
    tags = {t for t in base.tags if not t.startswith("rate-")} | {f"rate-{_decade(rate)}"}
    schedule = dataclasses.replace(base.schedule, rate=rate)
    return dataclasses.replace(
        base, name=f"{base.name}-{_decade(rate)}", operators=ops, schedule=schedule, tags=frozenset(tags)
    )


def with_measured_capacity(base: Scenario, table: tuple[tuple[int, float], ...] = DIMINISHING) -> Scenario:
    """The operator needing the most instances at peak gets a measured capacity table: its
    one-instance true rate times ``table``, so each added instance gains less. It then needs
    more instances; its partitions are raised to a quarter above that if they fall short."""
    peak_required = base.required_rates(base.schedule.peak())
    needs = {
        op.name: op.min_parallelism_for(peak_required[op.name]) or op.max_parallelism
        for op in base.operators
        if not op.is_source
    }
    bottleneck = base.by_name[max(needs, key=lambda name: needs[name])]
    measured = dataclasses.replace(
        bottleneck, capacity_table=tuple((p, bottleneck.true_rate * gain) for p, gain in table), partitions=None
    )
    need = measured.min_parallelism_for(peak_required[bottleneck.name])
    partitions = None if bottleneck.partitions is None else max(bottleneck.partitions, math.ceil(1.25 * need))
    measured = dataclasses.replace(measured, partitions=partitions)
    ops = tuple(measured if op.name == bottleneck.name else op for op in base.operators)
    return _variant(base, "measured", operators=ops, tags={"measured-capacity"})


def with_steps(base: Scenario, steps: tuple[tuple[float, float], ...]) -> Scenario:
    """Several steps, e.g. a rise and a fall back: ``((at_s, factor), ...)``."""
    schedule = Steps(base.schedule.rate_at(0.0), steps)
    return _variant(base, "steps-" + "-".join(f"x{factor:g}" for _, factor in steps), schedule=schedule, tags={"step"})


def _tagged(base: Scenario, *tags: str) -> Scenario:
    return dataclasses.replace(base, tags=base.tags | set(tags))


def _chain(
    name: str,
    rate: float,
    rng: random.Random,
    stages: list[tuple[str, float, float, int, int]],
    tags: set[str],
    **changes: object,
) -> Scenario:
    """A source, then ``stages`` in a line. Each stage is (name, instances it needs at ``rate``
    (jittered), selectivity, partitions, initial parallelism); its true rate follows from its
    required input and that need, so the same shape needs as many instances at any rate."""
    ops = [_source("source", rate)]
    required = rate
    for op_name, need, selectivity, partitions, start in stages:
        true_rate = required / _jitter(rng, need)
        ops.append(
            SimOperator(
                op_name,
                (ops[-1].name,),
                true_rate=true_rate,
                selectivity=selectivity,
                partitions=partitions,
                parallelism=start,
            )
        )
        required *= selectivity
    description = f"{name} at {rate:g} records/s"
    return _scenario(f"{name}-{_decade(rate)}", ops, rate, description, tags | {f"rate-{_decade(rate)}"}, **changes)


def fanout_app(seed: int, rate: float, fanout: float) -> Scenario:
    """sessions → explode (``fanout`` records out per record in) → enrich → aggregate → sink:
    the operators after the explosion see ``fanout`` times the source rate."""
    rng = random.Random(seed * 101 + round(fanout))
    stages = [
        ("explode", 2.0, fanout, 16, 1),
        ("enrich", 6.0, 1.0, 48, 2),
        ("aggregate", 3.0, 0.01, 32, 1),
        ("sink", 0.5, 0.0, 8, 1),
    ]
    return _chain(f"fanout{fanout:g}-s{seed}", rate, rng, stages, {"fanout"})


def wide_app(seed: int, rate: float, need: float, partitions: int, start: int) -> Scenario:
    """events → parse → model (needs ``need`` instances at ``rate``) → sink."""
    rng = random.Random(seed * 103 + round(need))
    stages = [
        ("parse", 3.0, 1.0, 16, 2),
        ("model", need, 0.5, partitions, start),
        ("sink", 1.0, 0.0, 8, 1),
    ]
    return _chain(f"wide{need:g}-s{seed}", rate, rng, stages, {"wide"})


def contended_app(seed: int, rate: float, host_cores: float, load: float) -> Scenario:
    """Five operators on one host of ``host_cores`` cores: at ``rate`` they keep ``load`` of
    the cores busy between them (30/25/20/15/10 %). Each needs about a core or less, so the
    instances outnumber the cores and every instance added slows all the others."""
    rng = random.Random(seed * 107 + round(host_cores))
    work = load * host_cores  # cores' worth of work at ``rate``; one instance uses at most one
    stages = [
        ("parse", 0.30 * work, 1.0, 32, 1),
        ("split", 0.25 * work, 8.0, 32, 1),
        ("count", 0.20 * work, 1.0, 32, 1),
        ("enrich", 0.15 * work, 0.5, 32, 1),
        ("sink", 0.10 * work, 0.0, 16, 1),
    ]
    return _chain(f"host{host_cores:g}-s{seed}", rate, rng, stages, {"contended"}, host_cores=host_cores)


def wide_suite(seed: int = 0) -> list[Scenario]:
    """Harder, wider conditions than ``suite``, 300 s each, tagged by what they stress:
    source rates from 1 to 10^6 records/s ("decades", and "rate-1eK" on every scenario),
    fan-out of 10 to 100 ("fanout"), operators needing 20+ instances ("wide"), restarts of
    30-50 s ("slow-restart"), a shared CPU host ("contended"), measured capacity with
    diminishing returns ("measured-capacity"), under constant rates, steps and sines.
    Every scenario has a configuration that keeps up at its peak."""
    decades = [
        _tagged(scenario, "decades")
        for scenario in (
            with_step(at_rate(wordcount(seed), 1.0), 2.0),
            at_rate(nexmark_window(seed), 10.0),
            with_sine(at_rate(nexmark_join(seed), 100.0)),
            with_step(at_rate(random_dag(6, seed), 1e3), 2.0),
            with_step(at_rate(nexmark_map(seed), 1e4), 0.5),
            at_rate(random_dag(10, seed), 1e5),
            with_step(at_rate(wordcount(seed), 1e6), 2.0),
        )
    ]
    fanout = [
        fanout_app(seed, 10.0, 10.0),
        with_step(fanout_app(seed, 1e3, 12.0), 2.0),
        with_sine(fanout_app(seed, 1e4, 25.0)),
        with_step(fanout_app(seed, 100.0, 50.0), 3.0),
        fanout_app(seed, 1e5, 100.0),
    ]
    wide = [
        wide_app(seed, 1e3, 24.0, 48, 4),
        with_step(wide_app(seed, 1e4, 16.0, 64, 8), 2.0),
        with_sine(wide_app(seed, 1e5, 40.0, 128, 10), 0.5, 100.0),
        with_step(wide_app(seed, 1e6, 30.0, 64, 40), 0.5),
        with_steps(wide_app(seed, 100.0, 20.0, 96, 2), ((100.0, 2.0), (200.0, 1.0))),
    ]
    slow_restart = [
        _tagged(with_slow_restart(with_step(at_rate(wordcount(seed), 100.0), 2.0), 30.0), "slow-restart"),
        _tagged(with_slow_restart(with_measured_capacity(at_rate(nexmark_window(seed), 1e3)), 40.0), "slow-restart"),
        _tagged(with_slow_restart(with_sine(wide_app(seed, 1e4, 20.0, 64, 4)), 50.0), "slow-restart"),
        _tagged(with_slow_restart(with_step(at_rate(nexmark_join(seed), 1e5), 0.5), 45.0), "slow-restart"),
    ]
    contended = [
        contended_app(seed, 10.0, 2.0, 0.75),
        with_step(contended_app(seed, 1e3, 4.0, 0.5), 1.5),
        with_sine(contended_app(seed, 1e4, 6.0, 0.6)),
        with_step(contended_app(seed, 1e5, 3.0, 0.375), 2.0),
        with_measured_capacity(with_step(contended_app(seed, 100.0, 4.0, 0.75), 0.5)),
    ]
    measured = [
        with_measured_capacity(at_rate(wordcount(seed), 1.0)),
        with_measured_capacity(with_step(at_rate(random_dag(8, seed), 1e3), 2.0)),
        with_measured_capacity(with_sine(at_rate(nexmark_map(seed), 1e5))),
    ]
    schedules = [
        with_steps(at_rate(nexmark_window(seed), 1e4), ((100.0, 3.0), (200.0, 1.0))),
        with_steps(fanout_app(seed, 1.0, 10.0), ((60.0, 2.0), (120.0, 4.0), (240.0, 1.0))),
        with_sine(at_rate(random_dag(12, seed), 1e6), 0.6, 100.0),
    ]
    return [*decades, *fanout, *wide, *slow_restart, *contended, *measured, *schedules]


__all__ = [
    "DIMINISHING",
    "at_rate",
    "contended_app",
    "fanout_app",
    "nexmark_join",
    "nexmark_map",
    "nexmark_window",
    "random_dag",
    "suite",
    "wide_app",
    "wide_suite",
    "with_binding_cap",
    "with_measured_capacity",
    "with_sine",
    "with_slow_restart",
    "with_step",
    "with_steps",
    "with_sublinear",
    "wordcount",
]
