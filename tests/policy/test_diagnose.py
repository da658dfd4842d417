"""What a window of reports shows to be wrong with the app's reporting, and what the graph
assumes around it: real MetricsReports, as the new user's plain confluent-kafka app sent them."""

from __future__ import annotations

import pytest

from lastream_stream.policy.diagnose import diagnose
from lastream_stream.policy.ds2 import ds2_plan, falling_behind, optimal_parallelism
from lastream_stream.policy.graph import build_graph
from lastream_stream.wire.contracts import MetricsReport

END = 1_700_000_000.0


def reports(
    operator: str,
    *,
    upstreams: list[str],
    instances: int = 1,
    parallelism: int = 1,
    records_in: int,
    records_out: int | None = None,
    busy_s: float = 0.5,
    lag_start: int | None = 0,
    lag_growth: int = 0,
    latency_ms: float | None = None,
    seconds: int = 10,
) -> list[MetricsReport]:
    """One 1 s report per instance per second for ``seconds``; per-instance numbers."""
    return [
        MetricsReport(
            app="plain",
            operator=operator,
            instance_id=f"{operator}-{i}",
            interval_end=END - seconds + t + 1,
            interval_s=1.0,
            records_in=records_in,
            records_out=records_in if records_out is None else records_out,
            useful_time_s=busy_s,
            lag=None if lag_start is None else lag_start + lag_growth * t,
            latency_p50_ms=latency_ms,
            parallelism=parallelism,
            upstreams=upstreams,
            input_partitions=8 if upstreams else None,
        )
        for t in range(seconds)
        for i in range(instances)
    ]


def sink(**overrides) -> list[MetricsReport]:
    return reports(
        "sink", **({"upstreams": ["parser"], "records_in": 49, "busy_s": 0.1, "latency_ms": 30.0} | overrides)
    )


def keys(problems) -> list[str]:
    return [p.key for p in problems]


def test_an_app_that_reports_everything_has_no_problems():
    window = reports("source", upstreams=[], records_in=0, records_out=49) + reports(
        "parser", upstreams=["source"], records_in=49
    )
    assert diagnose(build_graph(window + sink())) == []


def test_more_instances_than_their_reported_parallelism_are_counted_and_named():
    window = reports("source", upstreams=[], records_in=0, records_out=120) + reports(
        "parser", upstreams=["source"], instances=3, parallelism=1, records_in=40
    )
    graph = build_graph(window + sink())
    assert graph.parallelism["parser"] == 3
    (problem,) = diagnose(graph)
    assert problem.key == "parallelism:parser"
    assert "3 instances report" in problem.text and "say parallelism 1" in problem.text
    assert "decided on 3" in problem.text and "LASTREAM_WORKER_STATE" in problem.text


def test_an_instance_restarted_within_the_window_is_not_an_extra_one():
    restarted = reports("parser", upstreams=["source"], records_in=40, seconds=4)
    replacement = [
        r.model_copy(update={"instance_id": "parser-new"})
        for r in reports("parser", upstreams=["source"], records_in=40, seconds=6)
    ]
    window = reports("source", upstreams=[], records_in=0, records_out=40) + restarted + replacement
    graph = build_graph(window + sink())
    assert graph.parallelism["parser"] == 1 and diagnose(graph) == []


def test_fewer_instances_than_reported_are_named_and_the_reported_figure_kept():
    window = reports("source", upstreams=[], records_in=0, records_out=40) + reports(
        "parser", upstreams=["source"], parallelism=3, records_in=40
    )
    graph = build_graph(window + sink())
    assert graph.parallelism["parser"] == 3
    assert [p.text for p in diagnose(graph)] == [
        "parser: reports say parallelism 3 but only 1 instance(s) report; decided on 3 as reported. "
        "Every instance must run a MetricsReporter, and its parallelism must be the running count"
    ]


def test_a_source_that_never_reports_is_an_external_source_and_the_first_operator_is_rescaled():
    """The new user's app: the parser takes 49/s at 100% busy while 120/s arrive (its lag
    grows 71/s). DS2 needs ceil(120 / 49) = 3 parsers."""
    window = reports("parser", upstreams=["source"], records_in=49, busy_s=1.0, lag_growth=71) + sink()
    graph = build_graph(window)
    assert graph.operators["source"].is_source and graph.operators["source"].instances_reporting == 0
    assert graph.operators["source"].observed_output_rate == pytest.approx(120)
    assert graph.operators["parser"].upstreams == ["source"]
    assert optimal_parallelism(graph)["parser"] == 3
    assert "parser" in falling_behind(graph, ds2_plan(graph))
    (problem,) = diagnose(graph)
    assert problem.key == "upstream:source"
    assert problem.text.startswith("'source' (upstream of parser) never reports; taken as an external source of 120")
    assert "MetricsReporter(operator='source', upstreams=[])" in problem.text


def test_without_lag_a_missing_source_is_named_with_what_cannot_be_seen():
    window = reports("parser", upstreams=["source"], records_in=49, busy_s=1.0, lag_start=None) + sink()
    graph = build_graph(window)
    assert graph.operators["source"].observed_output_rate == pytest.approx(49)
    (problem,) = diagnose(graph)
    assert "parser report(s) no lag" in problem.text and "not scaled out" in problem.text


def test_a_missing_upstream_of_a_join_gets_what_the_reporting_one_does_not_send():
    window = (
        reports("left", upstreams=[], records_in=0, records_out=30)
        + reports("join", upstreams=["left", "right"], records_in=100, busy_s=0.5, lag_growth=10)
        + reports("sink", upstreams=["join"], records_in=100, latency_ms=5.0)
    )
    graph = build_graph(window)
    assert graph.operators["right"].observed_output_rate == pytest.approx(100 + 10 - 30)
    assert graph.unreported == {"right": ["join"]}


def test_no_latency_at_any_sink_turns_the_latency_term_off_and_says_how_to_fix_it():
    window = reports("source", upstreams=[], records_in=0, records_out=49) + reports(
        "parser", upstreams=["source"], records_in=49, latency_ms=12.0
    )
    graph = build_graph(window + sink(latency_ms=None))
    assert graph.latency_ms == 0.0
    (problem,) = diagnose(graph)
    assert problem.key == "latency"
    assert "no sink reports latency (sink)" in problem.text and "latency term is off" in problem.text
    assert "reporter.observe_latency(ms)" in problem.text and "source's timestamp" in problem.text
