"""The analytic candidate pool and how the agent assembles and scores a decision."""

from __future__ import annotations

import math

import pytest
from policy_graphs import chain_graph, graph_of, operator_reports

from lastream_stream.policy.agent import LaStreamAgent
from lastream_stream.policy.base import Candidate, Decision
from lastream_stream.policy.candidates import AnalyticGenerator, clamp_scheme


def scheme(src: int, split: int, count: int, sink: int) -> dict[str, int]:
    return {"src": src, "split": split, "count": count, "sink": sink}


def test_analytic_pool_on_the_chain():
    # DS2 gives 1, 3, 3, 1 and at 80 % 1, 4, 3, 1 (see test_ds2.py). split (busy 1.0, lag 8 000
    # = 10 s of its input) and count (busy 0.96) are under pressure, busiest first; split + 1
    # is the 80 % scheme again and is dropped as a duplicate.
    pool = AnalyticGenerator().propose(chain_graph())
    assert [(c.scheme, c.note) for c in pool] == [
        (scheme(1, 3, 3, 1), "ds2"),
        (scheme(1, 4, 3, 1), "ds2 at 80% utilisation"),
        (scheme(1, 2, 2, 1), "current"),
        (scheme(1, 2, 3, 1), "ds2 with split -1"),
        (scheme(1, 3, 2, 1), "ds2 with count -1"),
        (scheme(1, 3, 4, 1), "ds2 with count +1"),
    ]
    assert {c.source for c in pool} == {"analytic"}


def test_neighbours_stay_within_the_partitions():
    # The chain again, but count's topic has 3 partitions: DS2's 3 is the cap, so no count + 1.
    graph = graph_of(
        operator_reports("src", records_in=10_000, records_out=10_000, useful_s=5.0, partitions=4),
        operator_reports(
            "split",
            upstreams=("src",),
            instances=2,
            records_in=4_000,
            records_out=12_000,
            useful_s=10.0,
            partitions=8,
            lag=4_000,
        ),
        operator_reports(
            "count", upstreams=("split",), instances=2, records_in=12_000, records_out=6_000, useful_s=9.6, partitions=3
        ),
        operator_reports("sink", upstreams=("count",), records_in=12_000, records_out=0, useful_s=2.0, partitions=8),
    )
    notes = [c.note for c in AnalyticGenerator().propose(graph)]
    assert "ds2 with count -1" in notes
    assert "ds2 with count +1" not in notes


def test_over_provisioned_operator_gets_intermediate_steps():
    # 1 000 records/s into 4 splitters that each manage 1 000/s: DS2 needs 1 (2 with headroom).
    # Nothing is under pressure, so only the moves the optimum makes get neighbours: halfway
    # is ceil((4 + 1) / 2) = 3, and split + 1 is the headroom scheme again.
    graph = graph_of(
        operator_reports("src", records_in=10_000, records_out=10_000, useful_s=1.0),
        operator_reports(
            "split", upstreams=("src",), instances=4, records_in=2_500, records_out=2_500, useful_s=2.5, partitions=8
        ),
        operator_reports("sink", upstreams=("split",), records_in=10_000, records_out=0, useful_s=1.0, partitions=8),
    )
    pool = AnalyticGenerator().propose(graph)
    assert [(c.scheme["split"], c.note) for c in pool] == [
        (1, "ds2"),
        (2, "ds2 at 90% utilisation"),
        (4, "current"),
        (3, "halfway to ds2"),
    ]


def test_clamp_scheme():
    graph = chain_graph()
    # src pinned, split capped by its 8 partitions, count raised to 1, sink missing -> current
    assert clamp_scheme(graph, {"src": 3, "split": 50, "count": -2}) == scheme(1, 8, 1, 1)
    assert clamp_scheme(graph, {"src": 3}, pin_sources=False)["src"] == 3
    assert clamp_scheme(graph, {"split": 7}, max_parallelism=4)["split"] == 7  # partitions win over the default cap


class Broken:
    name = "broken"

    def propose(self, graph, context=None):
        raise RuntimeError("a plug-in bug")


class Fixed:
    name = "fixed"

    def propose(self, graph, context=None):
        return [Candidate({"src": 4, "split": 99, "count": 5}, "llm", "raw")]


def test_decision_holds_every_candidate_scored_and_the_argmax():
    agent = LaStreamAgent(generators=[Broken(), Fixed()])
    decision = agent.decide(chain_graph())
    schemes = [c.candidate.scheme for c in decision.candidates]
    # the analytic generator was added in front; the raw scheme was made applicable
    assert schemes[0] == scheme(1, 3, 3, 1)
    assert schemes[-1] == scheme(1, 8, 5, 1)
    assert decision.candidates[-1].candidate.source == "llm"
    scores = [c.score for c in decision.candidates]
    assert all(0 <= s <= 1 for s in scores)
    assert decision.chosen == schemes[scores.index(max(scores))]
    assert decision.chosen_candidate.score == max(scores)
    assert {"generate_analytic_ms", "generate_broken_ms", "generate_fixed_ms", "score_ms", "total_ms"} <= set(
        decision.timings_ms
    )
    assert decision.graph is not None and decision.policy == "lastream"


def test_scores_are_consistent_with_log_scores():
    agent = LaStreamAgent()
    graph = chain_graph()
    schemes = [scheme(1, 3, 3, 1), scheme(1, 8, 8, 8)]
    logs = agent.log_scores(graph, schemes)
    assert list(agent.score(graph, schemes)) == pytest.approx([math.exp(v) for v in logs], rel=1e-12)
    assert all(v < 0 for v in logs)


def test_single_candidate_decision_for_baselines():
    decision = Decision.single("ds2", chain_graph(), scheme(1, 3, 3, 1), note="ds2 optimum")
    assert decision.chosen == scheme(1, 3, 3, 1)
    assert decision.chosen_candidate.score is None
    assert decision.app == "test-app"
