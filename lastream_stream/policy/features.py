"""Numbers the GCN and the evaluator see: the operator graph's state and a candidate scheme.

Everything is on comparable scales whatever the app: lag and latency go through ``log1p``,
ratios stay as they are, and a candidate is described *relative* to the current scheme and
to DS2's requirement rather than by raw instance counts, so one model serves graphs of 3 or
50 operators at 10 or 100 000 records/s. Raw rates are left out on purpose: what they mean
for the reward (queueing delay, backlog) is in the fluid model's features below, in the
reward's own units, and a raw rate far from the training range made the network
extrapolate wildly on slow apps.

Per candidate, each node gets the state features concatenated with candidate features
(``NODE_FEATURES``); the GCN pools these into one embedding. ``CANDIDATE_FEATURES`` are
whole-graph summaries of the same candidate (worst capacity ratio, longest queueing path,
share of operators restarted, ...) that pooling alone would blur.

The candidate features come from a fluid model of the scheme: records flow from the
sources through each operator, an operator passes on at most its capacity
(instances x per-instance true rate, bent by the operator's learnt capacity curve), and queueing delay is M/M/1's median sojourn time.
A changed operator pauses for ``restart_s`` while its input keeps arriving, and a scheme is
judged over the next ``horizon_s``: its estimated penalty averages the backlog (and the wait
it causes) over that horizon, so the backlog a reconfiguration itself creates is part of
the scheme's cost. The model is crude on purpose (linear scaling, no backpressure); the
learned evaluator corrects it from measured rewards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from lastream_stream.policy.capacity import OperatorCapacity
from lastream_stream.policy.ds2 import ds2_plan, parallelism_cap, required_instances
from lastream_stream.policy.graph import AppGraph
from lastream_stream.policy.measure import observed
from lastream_stream.policy.reward import MIN_FEED_RATE, RewardParams, performance_penalty

# Bumped whenever the meaning or order of a feature changes: old checkpoints no longer fit.
FEATURES_VERSION = 4

STATE_FEATURES = (
    "log_selectivity",
    "busy_ratio",
    "log_lag",
    "log_lag_seconds",
    "log_latency_ms",
    "log_parallelism",
    "log_cap",
    "is_source",
    "true_rate_known",
    "log_required_over_current",
)
SCHEME_NODE_FEATURES = (
    "log_candidate",
    "log_candidate_over_current",
    "changed",
    "log_candidate_over_ds2",
    "log_capacity_ratio",
    "utilisation",
    "log_queueing_ms",
    "log_drain_s",
    "deficit_share",
    "candidate_over_cap",
    "log_backlog_at_horizon",
    "log_disrupted_backlog",
)
NODE_FEATURES = STATE_FEATURES + SCHEME_NODE_FEATURES
CANDIDATE_FEATURES = (
    "log_mean_parallelism",
    "log_total_over_current",
    "log_total_over_ds2",
    "min_log_capacity_ratio",
    "max_utilisation",
    "max_deficit_share",
    "log_path_queueing_ms",
    "log_max_drain_s",
    "disrupted_share",
    "share_changed",
    "log_operators",
    "log_backlog_s",
    "log_latency_ms",
    "log_estimated_penalty",
)

_RATIO_CLIP = 3.0  # |log ratio| beyond e^3 ~ 20x says nothing more
_MAX_UTILISATION = 0.95  # keeps the M/M/1 term finite; the drain time covers overload
_MAX_DRAIN_S = 1e4  # "never drains" within any horizon a decision cares about
_LN2 = math.log(2.0)


def _log_ratio(numerator: np.ndarray | float, denominator: np.ndarray | float) -> np.ndarray:
    num = np.maximum(np.asarray(numerator, dtype=np.float64), 1e-12)
    den = np.maximum(np.asarray(denominator, dtype=np.float64), 1e-12)
    return np.clip(np.log(num / den), -_RATIO_CLIP, _RATIO_CLIP)


@dataclass(frozen=True)
class GraphView:
    """The per-decision part of the encoding, computed once and shared by every candidate."""

    names: list[str]
    upstreams: list[list[int]]
    edge_index: torch.Tensor  # (2, E), both directions: load flows down, backpressure up
    state: np.ndarray  # (n, len(STATE_FEATURES))
    current: np.ndarray  # (n,) parallelism now
    cap: np.ndarray  # (n,) partition cap
    is_source: np.ndarray  # (n,) bool
    true_rate: np.ndarray  # (n,) per instance, 0 when unknown
    curves: list[OperatorCapacity | None]  # each operator's learnt capacity curve; None: DS2's linear model
    selectivity: np.ndarray  # (n,) true selectivity where known, observed otherwise
    source_input: np.ndarray  # (n,) records/s arriving at each source
    required: np.ndarray  # (n,) DS2's fractional instances; 0 when unknown
    required_instances: dict[str, int]  # what the reward measures resources against
    target_in: np.ndarray  # (n,) records/s each operator must take in: the rate that feeds it
    optimum: np.ndarray  # (n,) DS2's parallelism
    lag: np.ndarray  # (n,) records
    total_lag: float
    backlog_s: float  # the reward's backlog now, seconds of input
    service_ms: float  # the reward's processing time per record along the slowest path
    latency_ms: float
    restart_s: float
    horizon_s: float
    reward: RewardParams

    @classmethod
    def of(
        cls,
        graph: AppGraph,
        max_parallelism: int,
        restart_s: float,
        horizon_s: float,
        reward: RewardParams,
        capacity: Mapping[str, OperatorCapacity] | None = None,
    ) -> GraphView:
        ops = list(graph.operators.values())
        index = {op.name: i for i, op in enumerate(ops)}
        plan = ds2_plan(graph)
        measured = observed(graph, plan)
        edges = [(index[u], index[v]) for u, v in graph.edges]
        edge_index = torch.tensor(edges + [(v, u) for u, v in edges], dtype=torch.long).reshape(-1, 2).T.contiguous()

        current = np.array([op.parallelism for op in ops], dtype=np.float64)
        cap = np.array([parallelism_cap(op, max_parallelism) for op in ops], dtype=np.float64)
        true_rate = np.array([op.true_input_rate for op in ops])
        known = true_rate > 0
        selectivity = np.array(
            [op.true_output_rate / op.true_input_rate if op.true_input_rate > 0 else op.selectivity for op in ops]
        )
        target_in = np.array([plan.target_input_rate[op.name] for op in ops])
        required = np.array([plan.required[op.name] for op in ops])
        lag = np.array([op.lag for op in ops], dtype=np.float64)
        state = np.column_stack(
            [
                np.log1p(selectivity),
                [op.busy_ratio for op in ops],
                np.log1p(lag),
                np.log1p(lag / np.maximum(target_in, MIN_FEED_RATE)),
                np.log1p([op.latency_p50_ms or 0.0 for op in ops]),
                np.log1p(current),
                np.log1p(cap),
                [float(op.is_source) for op in ops],
                known.astype(np.float64),
                np.where(known, _log_ratio(required, current), 0.0),
            ]
        )
        return cls(
            names=[op.name for op in ops],
            upstreams=[[index[u] for u in op.upstreams] for op in ops],
            edge_index=edge_index,
            state=state,
            current=current,
            cap=cap,
            is_source=np.array([op.is_source for op in ops]),
            true_rate=true_rate,
            curves=[capacity.get(op.name) if capacity else None for op in ops],
            selectivity=selectivity,
            source_input=np.array([op.observed_input_rate if op.is_source else 0.0 for op in ops]),
            required=required,
            required_instances=required_instances(graph, plan),
            target_in=target_in,
            optimum=np.array([plan.parallelism[op.name] for op in ops], dtype=np.float64),
            lag=lag,
            total_lag=float(graph.total_lag),
            backlog_s=measured.backlog_s,
            service_ms=measured.service_ms,
            latency_ms=graph.latency_ms,
            restart_s=restart_s,
            horizon_s=horizon_s,
            reward=reward,
        )

    def scheme_matrix(self, schemes: Sequence[dict[str, int]]) -> np.ndarray:
        """(C, n) parallelism, operators in graph order."""
        return np.array([[scheme[name] for name in self.names] for scheme in schemes], dtype=np.float64)


def encode(view: GraphView, schemes: Sequence[dict[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Node features (C, n, len(NODE_FEATURES)) and candidate features (C, len(CANDIDATE_FEATURES))."""
    cand = view.scheme_matrix(schemes)
    n_candidates, n = cand.shape
    known = view.true_rate > 0
    # Each operator's capacity curve through what was measured now, for every candidate at once.
    capacity = np.where(known, cand * view.true_rate, np.inf)
    for i, curve in enumerate(view.curves):
        if curve is not None and known[i]:
            capacity[:, i] = curve.capacities(cand[:, i], (view.current[i], view.current[i] * view.true_rate[i]))

    # Fluid flow through the scheme, in topological order (the view's node order).
    inflow = np.zeros_like(cand)
    outflow = np.zeros_like(cand)
    for i in range(n):
        inflow[:, i] = view.source_input[i] if view.is_source[i] else sum(outflow[:, u] for u in view.upstreams[i])
        outflow[:, i] = np.minimum(inflow[:, i], capacity[:, i]) * view.selectivity[i]

    with np.errstate(divide="ignore", invalid="ignore"):
        utilisation = np.where(known & (capacity > 0), inflow / capacity, 0.0)
    queueing_ms = np.where(
        known,
        1000.0 * _LN2 / (np.maximum(view.true_rate, 1e-12) * (1.0 - np.minimum(utilisation, _MAX_UTILISATION))),
        0.0,
    )
    changed = (cand != view.current).astype(np.float64)
    backlog = view.lag + changed * view.restart_s * inflow
    spare = capacity - inflow
    with np.errstate(divide="ignore", invalid="ignore"):
        drain_s = np.where(spare > 0, backlog / spare, np.where(backlog > 0, _MAX_DRAIN_S, 0.0))
    drain_s = np.minimum(drain_s, _MAX_DRAIN_S)
    # What is still queued at the horizon: the backlog drained by the spare capacity, or grown by the deficit.
    backlog_at_horizon = np.where(known, np.maximum(backlog - spare * view.horizon_s, 0.0), view.lag)
    # Until then the app is disrupted: the backlog (a restart's included) drains linearly, or
    # grows over the whole horizon when there is no spare capacity.
    disrupted_backlog = np.where(spare > 0, backlog / 2.0, backlog - spare * view.horizon_s / 2.0)
    disrupted_backlog = np.where(known, disrupted_backlog, view.lag)
    with np.errstate(invalid="ignore"):
        has_capacity = known & (capacity > 0)
        wait_ms = np.where(has_capacity, 1000.0 * backlog_at_horizon / capacity, 0.0)
        disrupted_wait_ms = np.where(has_capacity, 1000.0 * disrupted_backlog / capacity, 0.0)
    deficit_share = np.maximum(inflow - capacity, 0.0) / np.maximum(inflow, 1.0)
    deficit_share = np.where(known, deficit_share, 0.0)
    capacity_ratio = np.where(
        known & (view.required > 0), _log_ratio(cand, view.required), np.where(known, _RATIO_CLIP, 0.0)
    )

    scheme_nodes = np.stack(
        [
            np.log1p(cand),
            _log_ratio(cand, view.current),
            changed,
            _log_ratio(cand, np.maximum(view.optimum, 1.0)),
            capacity_ratio,
            np.minimum(utilisation, 2.0),
            np.log1p(queueing_ms),
            np.log1p(drain_s),
            deficit_share,
            cand / view.cap,
            np.log1p(backlog_at_horizon),
            np.log1p(disrupted_backlog),
        ],
        axis=-1,
    )
    nodes = np.concatenate([np.broadcast_to(view.state, (n_candidates, *view.state.shape)), scheme_nodes], axis=-1)

    # The fluid model's own guess of the reward's performance penalty; the network corrects it.
    # A scheme is judged by its mean reward over the horizon: the disrupted share of it at the
    # disrupted penalty, the rest at the steady one (what the reward averages to, not the
    # penalty: an hour of backlog costs an hour of reward, not an arbitrarily large penalty).
    feed = np.maximum(view.target_in, MIN_FEED_RATE)
    steady_path_ms = _longest_path(view, queueing_ms + wait_ms)
    steady = performance_penalty(
        steady_path_ms,
        _longest_path(view, backlog_at_horizon / feed),
        backlog_at_horizon.sum(axis=1),
        view.service_ms,
        view.reward,
    )
    disrupted = performance_penalty(
        _longest_path(view, queueing_ms + disrupted_wait_ms),
        _longest_path(view, disrupted_backlog / feed),
        disrupted_backlog.sum(axis=1),
        view.service_ms,
        view.reward,
    )
    disrupted_share = np.minimum(drain_s.max(axis=1), view.horizon_s) / view.horizon_s
    with np.errstate(divide="ignore"):
        log_mean_reward = np.logaddexp(
            np.log1p(-disrupted_share) - steady / 3.0, np.log(disrupted_share) - disrupted / 3.0
        )
    estimated_penalty = np.maximum(-3.0 * log_mean_reward, 0.0)

    scalable = known & ~view.is_source
    candidates = np.column_stack(
        [
            np.log1p(cand.mean(axis=1)),
            _log_ratio(cand.sum(axis=1), view.current.sum()),
            _log_ratio(cand.sum(axis=1), view.optimum.sum()),
            capacity_ratio[:, scalable].min(axis=1) if scalable.any() else np.zeros(n_candidates),
            np.minimum(utilisation.max(axis=1), 2.0),
            deficit_share.max(axis=1),
            np.log1p(steady_path_ms),
            np.log1p(drain_s.max(axis=1)),
            disrupted_share,
            changed.mean(axis=1),
            np.full(n_candidates, math.log(n)),
            np.full(n_candidates, math.log1p(view.backlog_s)),
            np.full(n_candidates, math.log1p(view.latency_ms)),
            np.log1p(estimated_penalty),
        ]
    )
    return nodes.astype(np.float32), candidates.astype(np.float32)


def _longest_path(view: GraphView, delay: np.ndarray) -> np.ndarray:
    """(C,) the longest chain of per-operator delays (C, n) from a source to a sink: what
    end-to-end latency, and the wait behind backlogs, add up along."""
    path = np.zeros_like(delay)
    for i in range(delay.shape[1]):
        upstream = np.max([path[:, u] for u in view.upstreams[i]], axis=0) if view.upstreams[i] else 0.0
        path[:, i] = upstream + delay[:, i]
    return path.max(axis=1)


def to_data(view: GraphView, nodes: np.ndarray, candidate: np.ndarray, target: float | None = None) -> Data:
    """One candidate as a PyG graph; ``u`` (1, F) batches into (B, F) alongside the nodes."""
    data = Data(
        x=torch.from_numpy(np.ascontiguousarray(nodes)),
        edge_index=view.edge_index,
        u=torch.from_numpy(candidate).reshape(1, -1),
    )
    if target is not None:
        data.y = torch.tensor([target], dtype=torch.float32)
    return data


def batch_candidates(view: GraphView, schemes: Sequence[dict[str, int]]) -> Batch:
    """Every candidate as its own copy of the graph, in one batch: what ``Batch.from_data_list``
    would build, assembled directly because every copy has the same edges."""
    nodes, candidates = encode(view, schemes)
    n_candidates, n, _ = nodes.shape
    n_edges = view.edge_index.shape[1]
    offsets = torch.arange(n_candidates).repeat_interleave(n_edges) * n
    return Batch(
        x=torch.from_numpy(nodes.reshape(n_candidates * n, -1)),
        edge_index=view.edge_index.repeat(1, n_candidates) + offsets,
        batch=torch.arange(n_candidates).repeat_interleave(n),
        u=torch.from_numpy(candidates),
    )
