"""Features stay finite and fixed-width whatever the graph: idle operators, zero rates, 3 or 50 operators."""

from __future__ import annotations

import numpy as np
import pytest
from policy_graphs import chain_graph, graph_of, operator_reports

from lastream_stream.policy.agent import LaStreamAgent
from lastream_stream.policy.features import CANDIDATE_FEATURES, NODE_FEATURES, GraphView, batch_candidates, encode
from lastream_stream.policy.reward import RewardParams


def view(graph):
    return GraphView.of(graph, max_parallelism=64, restart_s=5.0, horizon_s=120.0, reward=RewardParams())


def test_idle_graph_is_finite():
    # Nothing flowed yet: no input, no busy time, so no true rates anywhere.
    graph = graph_of(
        operator_reports("src", records_in=0, records_out=0, useful_s=0.0),
        operator_reports("a", upstreams=("src",), instances=3, records_in=0, records_out=0, useful_s=0.0),
        operator_reports("b", upstreams=("a",), records_in=0, records_out=0, useful_s=0.0, lag=10),
    )
    nodes, candidates = encode(view(graph), [graph.parallelism, {"src": 1, "a": 1, "b": 5}])
    assert np.isfinite(nodes).all() and np.isfinite(candidates).all()
    decision = LaStreamAgent().decide(graph)
    assert decision.chosen["a"] == 3  # unknown true rate: DS2 keeps what runs


def test_widths_do_not_depend_on_graph_size():
    small = chain_graph()
    reports = operator_reports("op0", records_in=10_000, records_out=10_000, useful_s=1.0)
    for i in range(1, 50):
        reports += operator_reports(
            f"op{i}", upstreams=(f"op{i - 1}",), instances=2, records_in=5_000, records_out=5_000, useful_s=5.0
        )
    large = graph_of(reports)
    for graph in (small, large):
        batch = batch_candidates(view(graph), [graph.parallelism] * 3)
        assert batch.x.shape == (3 * len(graph.operators), len(NODE_FEATURES))
        assert batch.u.shape == (3, len(CANDIDATE_FEATURES))
        # both directions of every edge
        assert batch.edge_index.shape[1] == 3 * 2 * len(graph.edges)
    # 1 000 rec/s through instances of 1 000 rec/s: DS2 needs exactly 1 each; at 90 % that is 2,
    # which is what runs, so "current" and "halfway" are duplicates of it. Every operator
    # moves, so the first eight (max_neighbour_ops) get a +1 neighbour.
    decision = LaStreamAgent().decide(large)
    notes = ["ds2", "ds2 at 90% utilisation"] + [f"ds2 with op{i} +1" for i in range(1, 9)]
    assert [c.candidate.note for c in decision.candidates] == notes
    assert decision.candidates[0].candidate.scheme == {name: 1 for name in large.names}


def test_capacity_features_match_hand_computation():
    # Chain: split needs 2.5 instances. With 5, its capacity ratio is 2 (log 2) and it runs at
    # 1 000 / (5 * 400) = 50 %; with 2 it has a deficit of 1 000 - 800 = 200 rec/s, 20 % of its input.
    v = view(chain_graph())
    nodes, _ = encode(v, [{"src": 1, "split": 5, "count": 3, "sink": 1}, {"src": 1, "split": 2, "count": 3, "sink": 1}])
    split = v.names.index("split")
    column = {name: i for i, name in enumerate(NODE_FEATURES)}
    assert nodes[0, split, column["log_capacity_ratio"]] == np.float32(np.log(2.0))
    assert nodes[0, split, column["utilisation"]] == np.float32(0.5)
    assert nodes[1, split, column["deficit_share"]] == np.float32(0.2)
    assert nodes[1, split, column["changed"]] == 0.0 and nodes[0, split, column["changed"]] == 1.0


def test_disruption_counts_the_restart_and_the_drain():
    # split (400 rec/s per instance) gets 1 000 rec/s and has 8 000 queued. At 5 it restarts:
    # 8 000 + 5 s x 1 000 = 13 000 queued, drained by 1 000 rec/s of spare in 13 s, 6 500 on
    # average meanwhile. Kept at 2 it falls 200 rec/s further behind for the whole 120 s:
    # 8 000 + 200 x 120 / 2 on average. count, restarted at 3 (1 250 rec/s each), takes
    # 3 000 rec/s and queues 200 + 5 x 3 000: 20.3 s to drain, the longest, so the first
    # scheme disrupts the app for 20.3 of its 120 s.
    v = view(chain_graph())
    nodes, candidates = encode(
        v, [{"src": 1, "split": 5, "count": 3, "sink": 1}, {"src": 1, "split": 2, "count": 2, "sink": 1}]
    )
    split = v.names.index("split")
    disrupted_backlog = np.expm1(nodes[:, split, NODE_FEATURES.index("log_disrupted_backlog")].astype(np.float64))
    assert disrupted_backlog == pytest.approx([6_500, 8_000 + 200 * 60], rel=1e-5)
    share = candidates[:, CANDIDATE_FEATURES.index("disrupted_share")]
    assert share == pytest.approx([(200 + 5 * 3_000) / 750 / 120, 1.0], rel=1e-5)
