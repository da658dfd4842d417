"""Each baseline reproduces its published rule on a case computed by hand."""

from __future__ import annotations

import pytest

from lastream_stream.bench.baselines import (
    DS2Policy,
    FlinkAutoscaler,
    FlinkSettings,
    KedaScaler,
    OraclePolicy,
    StaticPolicy,
    align_balanced,
    significant_change,
)
from lastream_stream.policy.graph import AppGraph, OperatorStats
from lastream_stream.sim import Constant, Scenario, SimOperator, Simulator


def op(name, upstreams=(), p=1, rate_in=0.0, rate_out=None, true_in=0.0, lag=0, partitions=16):
    """Operator statistics as build_graph would produce them; selectivity 1 unless rate_out says otherwise."""
    rate_out = rate_in if rate_out is None else rate_out
    ratio = rate_out / rate_in if rate_in else 1.0
    return OperatorStats(
        name=name,
        upstreams=list(upstreams),
        parallelism=p,
        partitions=partitions,
        observed_input_rate=rate_in,
        observed_output_rate=rate_out,
        true_input_rate=true_in,
        true_output_rate=true_in * ratio,
        busy_ratio=min(1.0, rate_in / (true_in * p)) if true_in else 0.0,
        lag=lag,
        latency_p50_ms=None,
        latency_p99_ms=None,
        instances_reporting=p,
    )


def graph(*ops: OperatorStats, window_s: float = 10.0) -> AppGraph:
    downstreams = {o.name: [d.name for d in ops if o.name in d.upstreams] for o in ops}
    return AppGraph(app="app", operators={o.name: o for o in ops}, window_s=window_s, downstreams=downstreams)


def chain(
    worker_p: int,
    worker_true: float,
    source_rate: float = 1000.0,
    worker_lag: int = 0,
    source_lag: int = 0,
    partitions: int = 16,
    window_s: float = 10.0,
) -> AppGraph:
    return graph(
        op("source", p=1, rate_in=source_rate, true_in=10 * source_rate, lag=source_lag, partitions=None),
        op(
            "worker",
            ("source",),
            p=worker_p,
            rate_in=min(source_rate, worker_p * worker_true),
            true_in=worker_true,
            lag=worker_lag,
            partitions=partitions,
        ),
        window_s=window_s,
    )


# -- static and oracle ------------------------------------------------------------------------


def test_static_keeps_the_running_configuration():
    assert StaticPolicy().decide(chain(3, 300.0)).chosen == {"source": 1, "worker": 3}


def test_oracle_returns_the_simulators_minimum():
    scenario = Scenario(
        name="c",
        operators=(SimOperator("source", true_rate=5000.0), SimOperator("worker", ("source",), true_rate=300.0)),
        schedule=Constant(1000.0),
    )
    sim = Simulator(scenario)
    assert OraclePolicy(sim).decide(chain(1, 300.0)).chosen == {"source": 1, "worker": 4}


# -- DS2 --------------------------------------------------------------------------------------


def test_ds2_waits_two_warm_up_intervals_then_applies_its_optimum():
    policy = DS2Policy()
    state = chain(3, 300.0)
    assert policy.decide(state).chosen == {"source": 1, "worker": 3}
    assert policy.decide(state).chosen == {"source": 1, "worker": 3}
    # ceil(1000 / 300) = 4
    assert policy.decide(state).chosen == {"source": 1, "worker": 4}


def test_ds2_warms_up_again_after_a_reconfiguration():
    policy = DS2Policy(warm_up_intervals=1)
    policy.decide(chain(3, 300.0))
    assert policy.decide(chain(3, 300.0)).chosen["worker"] == 4
    # The next window shows the new parallelism: ignored, then the policy runs again.
    assert policy.decide(chain(4, 200.0)).chosen["worker"] == 4
    assert policy.decide(chain(4, 200.0)).chosen["worker"] == 5  # ceil(1000 / 200)


def test_ds2_does_not_restart_to_save_a_single_instance():
    policy = DS2Policy(warm_up_intervals=0)
    assert policy.decide(chain(5, 300.0)).chosen["worker"] == 5  # optimum 4: one below
    assert policy.decide(chain(6, 300.0)).chosen["worker"] == 4  # two below


def test_ds2_scaling_factor_over_provisions():
    # ceil(1000 / 300 * 1.5) = ceil(5.0) = 5
    assert DS2Policy(scaling_factor=0.5, warm_up_intervals=0).decide(chain(3, 300.0)).chosen["worker"] == 5


def test_significant_change_is_ds2s_consider_change():
    assert significant_change({"a": 4}, {"a": 5})
    assert not significant_change({"a": 4}, {"a": 3})
    assert significant_change({"a": 4}, {"a": 2})
    assert not significant_change({"a": 4}, {"a": 4})


# -- Flink ------------------------------------------------------------------------------------


def flink(**settings) -> FlinkAutoscaler:
    return FlinkAutoscaler(FlinkSettings(restart_s=5.0, stabilisation_s=0.0, **settings))


def test_flink_scales_up_to_target_utilisation_with_catch_up_and_alignment():
    # Target rate 1000/s, catch-up 3000 / 300 s = 10/s, restart 1000 * 5 / 300 = 16.67/s:
    # capacity round(10 + 16.67 + 1000 / 0.7) = 1455 against 2 * 300 = 600 -> factor 2.425,
    # ceil(2.425 * 2) = 5; BALANCED: 16 partitions, 16 // 6 < 16 // 5, so 6.
    assert flink().decide(chain(2, 300.0, worker_lag=3000)).chosen["worker"] == 6
    # With 20 partitions, 5 divides them and stays.
    assert flink().decide(chain(2, 300.0, worker_lag=3000, partitions=20)).chosen["worker"] == 5


def test_flink_leaves_a_vertex_within_its_utilisation_bounds_alone():
    # 4 * 300 = 1200/s lies within [round(1000 / 1.0), round(16.67 + 1000 / 0.4)] = [1000, 2517],
    # although the target (1445) asks for ceil(4 * 1445 / 1200) = 5, aligned to 6 of 16 partitions.
    scaler = flink()
    g = chain(4, 300.0)
    target = scaler.evaluate(g)["worker"]
    assert scaler.vertex_parallelism(g.operators["worker"], target, 16) == 6
    assert scaler.decide(g).chosen["worker"] == 4


def test_flink_scale_down_is_limited_to_forty_percent_of_current():
    # 10 * 300 = 3000/s for 500/s: capacity round(8.33 + 714.29) = 723, factor 0.24 -> 0.4, 4 instances.
    assert flink().decide(chain(10, 300.0, source_rate=500.0)).chosen["worker"] == 4


def test_flink_does_not_scale_down_while_processing_backlog():
    # 160000 records at the source = 320 s of its 500/s input, above the 300 s threshold:
    # the lower utilisation bound goes, 3000/s is then within [1033, inf).
    backlog = chain(10, 300.0, source_rate=500.0, source_lag=160_000)
    assert flink().decide(backlog).chosen["worker"] == 10
    # 100000 records = 200 s: no backlog; capacity round(333.33 + 8.33 + 714.29) = 1056 -> 0.4 -> 4.
    assert flink().decide(chain(10, 300.0, source_rate=500.0, source_lag=100_000)).chosen["worker"] == 4


def test_flink_waits_out_the_stabilisation_interval():
    scaler = FlinkAutoscaler(FlinkSettings(stabilisation_s=30.0))
    state = chain(2, 300.0, worker_lag=3000)
    assert scaler.decide(state).chosen["worker"] == 2  # 10 s since start
    assert scaler.decide(state).chosen["worker"] == 2  # 20 s
    assert scaler.decide(state).chosen["worker"] == 6  # 30 s


def test_flink_target_rate_propagates_through_selectivity():
    g = graph(
        op("source", p=1, rate_in=1000.0, true_in=10_000.0, partitions=None),
        op("split", ("source",), p=4, rate_in=1000.0, rate_out=8000.0, true_in=400.0),
        op("count", ("split",), p=1, rate_in=4000.0, true_in=4000.0, lag=60_000),
    )
    targets = flink().evaluate(g)
    assert targets["split"].target_rate == pytest.approx(1000.0)
    assert targets["count"].target_rate == pytest.approx(8000.0)  # not the 4000 it observed
    assert targets["count"].catch_up_rate == pytest.approx(200.0)  # 60000 / 300
    assert targets["count"].true_processing_rate == pytest.approx(4000.0)


@pytest.mark.parametrize(
    "target, current, partitions, expected",
    [
        (5, 2, 16, 6),  # 16 // 6 = 2 < 16 // 5 = 3: fewer partitions per instance
        (5, 2, 20, 5),  # a divisor
        (4, 10, 16, 4),  # scale-down onto a divisor
        (7, 10, 16, 8),  # scale-down scans up to the current parallelism
        (5, 6, 7, 5),  # nothing in [5, 6] qualifies: keep the target
    ],
)
def test_balanced_alignment(target, current, partitions, expected):
    assert align_balanced(target, current, partitions, upper=200) == expected


# -- KEDA -------------------------------------------------------------------------------------


def test_keda_wants_lag_over_threshold_replicas_with_hpa_rate_limit_and_sync_period():
    keda = KedaScaler()
    # 2500 / 10 = 250 replicas, capped at 16 partitions, and the HPA adds at most max(+100 %, +4): 6.
    assert keda.decide(chain(2, 300.0, worker_lag=2500)).chosen["worker"] == 6
    # 10 s later the HPA has not synced again (every 15 s).
    assert keda.decide(chain(6, 300.0, worker_lag=2500)).chosen["worker"] == 6
    # 20 s later it has: max(12, 10) = 12.
    assert keda.decide(chain(6, 300.0, worker_lag=2500)).chosen["worker"] == 12


def test_keda_tolerates_ten_percent_around_the_target():
    # 105 / (10 * 10) = 1.05: within tolerance, although ceil(105 / 10) = 11.
    assert KedaScaler().decide(chain(10, 300.0, worker_lag=105)).chosen["worker"] == 10
    assert KedaScaler().decide(chain(10, 300.0, worker_lag=115)).chosen["worker"] == 12


def test_keda_scales_down_only_to_the_highest_recommendation_of_five_minutes():
    keda = KedaScaler()
    assert keda.decide(chain(8, 300.0, worker_lag=160)).chosen["worker"] == 16
    # No lag now, but 16 was recommended 20 s ago: stay.
    keda.decide(chain(16, 300.0, worker_lag=0, window_s=10.0))
    assert keda.decide(chain(16, 300.0, worker_lag=0, window_s=10.0)).chosen["worker"] == 16
    # Five minutes of no lag later: one replica.
    assert keda.decide(chain(16, 300.0, worker_lag=0, window_s=300.0)).chosen["worker"] == 1


def test_keda_leaves_sources_alone():
    assert KedaScaler().decide(chain(2, 300.0, source_lag=10_000)).chosen["source"] == 1
