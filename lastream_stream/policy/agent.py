"""The La-Stream agent: generate candidate schemes, score each with the GCN and evaluator,
pick the best; learn from the rewards measured after acting.

The evaluator predicts only what a scheme cannot tell by itself - the latency and backlog
part of the reward. The resource part (instances over DS2's requirement) is arithmetic on
the scheme and added analytically, so the network spends no capacity learning it::

    score = exp(-(expm1(evaluator(...)) + resource_penalty(scheme, required)) / 3)

The network's target is ``log1p`` of the performance penalty, which keeps an hour of
backlog from drowning out the difference between 20 ms and 40 ms of latency. It
predicts that target as a correction to the fluid model's own estimate (the candidate
feature ``log_estimated_penalty``): the estimate already scales with the app's rates, so
on an app slower or faster than any seen in training the network only has to correct a
sound guess rather than invent one. Training fits the target and, for candidates measured
in the same state, their differences: the choice depends only on those.

Online, two models score: the *shipped* one, as loaded, never trained again, and the
*online* one, trained on every app's measured outcomes. Each outcome first measures how far
both predicted it (prequentially: the online model has not trained on it yet); an app is
decided for by the online model only once, over its recent outcomes, that model's error is
below ``ONLINE_SWITCH_SHARE`` of the shipped one's. One online model for all apps: an app's
outcomes are too few and too alike to train a network of its own. When it predicts the last
outcomes of all apps clearly worse than the shipped model, it is dropped: reset to the
shipped weights, with a log line.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import pickle
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from lastream_stream.policy import checkpoint as checkpoint_file
from lastream_stream.policy.base import (
    Candidate,
    CandidateGenerator,
    CheckpointMismatch,
    Decision,
    DecisionContext,
    PastDecision,
    ScoredCandidate,
)
from lastream_stream.policy.candidates import AnalyticGenerator, clamp_scheme, dedupe
from lastream_stream.policy.capacity import CapacityModels
from lastream_stream.policy.checkpoint import CorruptCheckpoint
from lastream_stream.policy.ds2 import DS2Plan, ds2_plan, falling_behind
from lastream_stream.policy.evaluator import Evaluator
from lastream_stream.policy.features import (
    CANDIDATE_FEATURES,
    FEATURES_VERSION,
    NODE_FEATURES,
    GraphView,
    batch_candidates,
    encode,
    to_data,
)
from lastream_stream.policy.gcn import GCNMemory
from lastream_stream.policy.graph import AppGraph
from lastream_stream.policy.llm import LLMGenerator
from lastream_stream.policy.measure import observed
from lastream_stream.policy.reward import RewardParams, resource_penalty
from lastream_stream.wire.contracts import HoldReason, Model

log = logging.getLogger(__name__)

PRETRAINED_PATH = Path(__file__).resolve().parent.parent / "models" / "pretrained.pt"
_ARCHITECTURE = ("gcn_hidden", "embedding_dim", "evaluator_hidden")
_SMALLEST_REWARD = 1e-300  # a reward that underflowed to 0 still has a finite log
_ESTIMATE = CANDIDATE_FEATURES.index("log_estimated_penalty")
DEFAULT_MARGIN = 0.05  # ln reward; until pretraining has measured the evaluator's error
MIN_BUSY_OBSERVED = 0.2  # an operator less busy than this adds nothing to its capacity curve
STATE_KINDS = ("steady", "backlogged")
STEADY_BACKLOG_S = 1.0  # no more backlog than this many seconds of input (or than queueing explains): a steady state
MODELS: tuple[Model, ...] = ("shipped", "online")
RECENT_OUTCOMES = 20  # of each app, and of all apps, that the models' errors are compared over
ONLINE_MIN_OUTCOMES = 5  # of an app, measured on both models, before the online one may decide for it
ONLINE_SWITCH_SHARE = 0.8  # the online model decides once its error is below this share of the shipped one's
ONLINE_DROP_SHARE = 1.25  # it is dropped once its error on all apps' last outcomes is this many times the shipped one's
ONLINE_DROP_SLACK = 0.01  # and more than this much higher: a difference in the third decimal is noise, not harm
ERRORS_KEPT_APPS = 10_000  # apps whose errors are kept; the least recently judged go first
# A gain compares two predictions of one app, whose shared error (the app's level) cancels: what is
# left is taken to be at most the deciding model's recent error on the app.
MARGIN_PER_ERROR = 1.0
MARGIN_FLOOR = 0.01  # ln reward: the least margin an app's record of close predictions earns


def state_kind(graph: AppGraph, plan: DS2Plan | None = None) -> str:
    """Steady or backlogged: the evaluator is far surer of the first (a fluid model of a
    queue-free app is nearly exact) than of the second."""
    return "backlogged" if observed(graph, plan).backlogged(STEADY_BACKLOG_S) else "steady"


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    gcn_hidden: list[int] = Field(default_factory=lambda: [64, 64])
    embedding_dim: int = Field(default=64, ge=1)
    evaluator_hidden: list[int] = Field(default_factory=lambda: [128, 64])
    dropout: float = Field(default=0.0, ge=0, lt=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    # Online, a tenth of pretraining's: at 1e-3 a few steps per outcome made the network drift
    # from the pretrained optimum faster than an app's outcomes pulled it anywhere useful.
    online_learning_rate: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    batch_size: int = Field(default=64, ge=1)
    replay_capacity: int = Field(default=10_000, ge=1)
    history_size: int = Field(default=5, ge=0)
    # Off by default: a decision should be explainable from its scores alone.
    explore_epsilon: float = Field(default=0.0, ge=0, le=1)
    # Gain in predicted ln reward over the horizon (restart included) a change needs to leave
    # the running scheme. None: the margins pretraining measured, by how much the evaluator
    # overstated the gain of the changes it would have made on held-out states, steady and
    # backlogged apart (its errors differ a hundredfold between the two).
    switch_margin: float | None = Field(default=None, ge=0)
    # Sources are generators we do not control (DS2's assumption), unless said otherwise.
    scale_sources: bool = False
    # Expected pause of a reconfigured operator, seconds: sizes the backlog a change creates.
    # A decision's context overrides it when the caller knows better.
    restart_s: float = Field(default=5.0, ge=0)
    # How long a scheme is judged over, from the moment it is applied: pretraining's label is
    # the mean reward over it, restart and drain included. Minutes: long enough for a lasting
    # saving to outweigh one restart, short enough that a marginal gain does not.
    horizon_s: float = Field(default=600.0, gt=0)
    # DS2 variants in the analytic pool, planned for instances busy this share of the time.
    headroom_utilisations: list[float] = Field(default_factory=lambda: [0.9, 0.8])
    # Learn each operator's capacity against its parallelism from the states decided on
    # (``policy/capacity.py``); off, every instance is assumed to add the same, as in DS2.
    capacity_model: bool = True
    # Score with the fluid model's estimate alone, the learned correction left out: the
    # ablation's baseline, and what to fall back on if the network misleads.
    use_evaluator: bool = True
    reward: RewardParams = Field(default_factory=RewardParams)


@dataclass(frozen=True)
class Example:
    """One (state, candidate, measured outcome) triple, encoded; what the replay buffer holds."""

    x: torch.Tensor  # (n, len(NODE_FEATURES))
    edge_index: torch.Tensor  # (2, E)
    u: torch.Tensor  # (1, len(CANDIDATE_FEATURES))
    y: float  # log1p of the performance penalty
    # The decision state it was measured in, when several candidates were measured there
    # (pretraining); training compares those with each other. None: the only one (a real outcome).
    state_id: int | None = None

    @cached_property
    def data(self) -> Data:
        return Data(x=self.x, edge_index=self.edge_index, u=self.u, y=torch.tensor([self.y], dtype=torch.float32))

    def state(self) -> dict[str, torch.Tensor | float | int | None]:
        return {"x": self.x, "edge_index": self.edge_index, "u": self.u, "y": self.y, "state_id": self.state_id}


def performance_target(
    log_reward: float, scheme: dict[str, int], required: dict[str, int], params: RewardParams
) -> float:
    """log1p of the latency + backlog penalty that, with the scheme's known resource penalty, gives ln r."""
    return math.log1p(max(0.0, -3.0 * log_reward - resource_penalty(scheme, required, params)))


class Normaliser:
    """Per-feature standardisation, fitted once on the first training data and then frozen:
    refitting later would shift the inputs under an already trained network."""

    def __init__(self) -> None:
        self.node_mean = torch.zeros(len(NODE_FEATURES))
        self.node_std = torch.ones(len(NODE_FEATURES))
        self.cand_mean = torch.zeros(len(CANDIDATE_FEATURES))
        self.cand_std = torch.ones(len(CANDIDATE_FEATURES))
        self.correction_mean = 0.0
        self.correction_std = 1.0
        self.fitted = False

    def fit(self, examples: Sequence[Example]) -> None:
        x = torch.cat([e.x for e in examples])
        u = torch.cat([e.u for e in examples])
        correction = torch.tensor([e.y for e in examples]) - u[:, _ESTIMATE]
        # Floors keep constant features (a flag that never flips in the data) at their raw scale.
        self.node_mean, self.node_std = x.mean(0), x.std(0, correction=0).clamp_min(1e-2)
        self.cand_mean, self.cand_std = u.mean(0), u.std(0, correction=0).clamp_min(1e-2)
        self.correction_mean, self.correction_std = (
            float(correction.mean()),
            max(float(correction.std(correction=0)), 1e-2),
        )
        self.fitted = True

    def state(self) -> dict[str, torch.Tensor | float | bool]:
        return dict(vars(self))

    def load(self, state: dict[str, torch.Tensor | float | bool]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class LaStreamAgent:
    name = "lastream"

    def __init__(
        self, config: AgentConfig | None = None, generators: Sequence[CandidateGenerator] | None = None
    ) -> None:
        self.config = config or AgentConfig()
        generators = list(generators or [])
        # The analytic generator is always in the pool: decisions must not depend on an LLM.
        if not any(isinstance(g, AnalyticGenerator) for g in generators):
            generators.insert(0, AnalyticGenerator(target_utilisations=tuple(self.config.headroom_utilisations)))
        self.generators = generators

        torch.manual_seed(self.config.seed)
        self.rng = np.random.default_rng(self.config.seed)
        self.gcn = GCNMemory(len(NODE_FEATURES), self.config.gcn_hidden, self.config.embedding_dim, self.config.dropout)
        self.evaluator = Evaluator(
            self.gcn.out_dim, len(CANDIDATE_FEATURES), self.config.evaluator_hidden, self.config.dropout
        )
        self.optimizer = torch.optim.Adam(
            [*self.gcn.parameters(), *self.evaluator.parameters()],
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
        )
        self.normaliser = Normaliser()
        self.replay: deque[Example] = deque(maxlen=self.config.replay_capacity)
        self.history: deque[PastDecision] = deque(maxlen=self.config.history_size)
        self.trained_steps = 0
        self.calibrated_margins = {kind: DEFAULT_MARGIN for kind in STATE_KINDS}
        self.capacity = CapacityModels()
        self.shipped = (copy.deepcopy(self.gcn), copy.deepcopy(self.evaluator))
        # Per app, and over all apps: (shipped, online) absolute error of the predicted reward of each outcome.
        self.errors: OrderedDict[str, deque[tuple[float, float]]] = OrderedDict()
        self.recent_errors: deque[tuple[float, float]] = deque(maxlen=RECENT_OUTCOMES)

    def add_llm(self, llm: LLMGenerator) -> None:
        """Add the LLM's candidates to the pool, telling it the reward its schemes are scored
        by; one without a key would propose nothing and is left out. The one way an LLM
        joins an agent: in the service, the bench and the facade alike."""
        if llm.enabled:
            llm.reward_params = self.config.reward
            self.generators.append(llm)

    @property
    def horizon_s(self) -> float:
        """What a scheme's reward is averaged over, in its label and in ``observe``'s argument."""
        return self.config.horizon_s

    # -- deciding ----------------------------------------------------------------------

    def decide(self, graph: AppGraph, context: DecisionContext | None = None) -> Decision:
        started = time.perf_counter()
        context = context or DecisionContext(history=tuple(self.history))
        notes = []
        if self.config.capacity_model:
            context, notes = self.learn_capacity(graph, context)
        pool, timings = self.candidates(graph, context)
        t = time.perf_counter()
        model = self.model_for(graph.app)
        log_scores = self.log_scores(graph, [c.scheme for c in pool], context, model)
        timings["score_ms"] = _ms_since(t)
        best = int(np.argmax(log_scores))
        # The scores already charge a change its restart; the margin covers the evaluator's own
        # error, so that a change is made only when its gain is larger than that error.
        current = self.sanitise(graph, graph.parallelism, context)
        keep = next((i for i, c in enumerate(pool) if c.scheme == current), None)
        held_by: list[HoldReason] = []
        if keep is not None and best != keep:
            margin, earned = self.margin(graph, model, math.exp(log_scores[keep]))
            if (gain := log_scores[best] - log_scores[keep]) < margin:
                notes.append(
                    f"held: best change predicted {gain:+.3f} ln reward, within the {model} model's error margin "
                    f"{margin:.3f}{' (earned by its recent predictions of this app)' if earned else ''}"
                )
                held_by.append("margin")
                best = keep
        if self.config.explore_epsilon and self.rng.random() < self.config.explore_epsilon:
            best = int(self.rng.integers(len(pool)))
        timings["total_ms"] = _ms_since(started)
        return Decision(
            policy=self.name,
            app=graph.app,
            chosen=dict(pool[best].scheme),
            candidates=[ScoredCandidate(c, math.exp(s)) for c, s in zip(pool, log_scores, strict=True)],
            timings_ms=timings,
            graph=graph,
            context=context,
            notes=notes,
            held_by=held_by,
            model=model,
            prediction_errors=self.prediction_errors(graph.app),
        )

    def model_for(self, app: str) -> Model:
        """The model that decides for ``app``: the online one once its error on the app's
        recent outcomes is clearly below the shipped one's, the shipped one until then."""
        errors = self.errors.get(app, ())
        if len(errors) < ONLINE_MIN_OUTCOMES:
            return "shipped"
        shipped, online = np.mean(errors, axis=0)
        return "online" if online < ONLINE_SWITCH_SHARE * shipped else "shipped"

    def prediction_errors(self, app: str) -> dict[Model, float]:
        """Each model's mean absolute error of the predicted reward over ``app``'s recent outcomes."""
        errors = self.errors.get(app)
        return dict(zip(MODELS, map(float, np.mean(errors, axis=0)), strict=True)) if errors else {}

    def learn_capacity(self, graph: AppGraph, context: DecisionContext) -> tuple[DecisionContext, list[str]]:
        """Add this state's measured capacities to the operators' curves; the context with the
        curves, and a note for each operator whose last scale-out proved ineffective."""
        curves, notes = {}, []
        for name, op in graph.operators.items():
            # An idle instance's true rate is a few records over a sliver of busy time: noise.
            if op.is_source or op.true_input_rate <= 0 or op.busy_ratio < MIN_BUSY_OBSERVED:
                continue
            curve = curves[name] = self.capacity.of(graph.app, name)
            curve.observe(op.parallelism, op.parallelism * op.true_input_rate)
            if (ineffective := curve.ineffective()) is not None:
                notes.append(f"{name}: {ineffective}")
        return replace(context, capacity=curves), notes

    def margin(self, graph: AppGraph, model: Model = "shipped", reward: float = 0.0) -> tuple[float, bool]:
        """ln reward a change must be predicted to gain in this state, and whether the app
        earned it: configured, or calibrated in pretraining for states like it; in a steady
        state, less for an app whose recent outcomes ``model`` predicted closely (its mean
        error relative to ``reward``, the running scheme's predicted reward; at least
        ``MARGIN_FLOOR``). None (0) when the running scheme cannot sustain the rate (DS2 needs
        more instances of some operator than it runs), since keeping it is then no option
        worth protecting."""
        plan = ds2_plan(graph)
        if falling_behind(graph, plan):
            return 0.0, False
        if self.config.switch_margin is not None:
            return self.config.switch_margin, False
        kind = state_kind(graph, plan)
        calibrated = self.calibrated_margins[kind]
        errors = self.errors.get(graph.app, ())
        # Outcomes are measured in steady states mostly: they say nothing of a backlogged one's error.
        if kind != "steady" or len(errors) < ONLINE_MIN_OUTCOMES or reward <= 0:
            return calibrated, False
        error = float(np.mean(errors, axis=0)[MODELS.index(model)])
        earned = max(MARGIN_FLOOR, MARGIN_PER_ERROR * error / reward)
        return (earned, True) if earned < calibrated else (calibrated, False)

    def candidates(
        self, graph: AppGraph, context: DecisionContext | None = None
    ) -> tuple[list[Candidate], dict[str, float]]:
        """Every generator's proposals, complete and within limits, first provenance kept; and
        how long each generator took."""
        context = context or DecisionContext(history=tuple(self.history))
        timings: dict[str, float] = {}
        pool: list[Candidate] = []
        for generator in self.generators:
            t = time.perf_counter()
            try:
                proposed = generator.propose(graph, context)
            except Exception:
                # A plug-in generator's bug must not stop the app from being scaled.
                log.exception("candidate generator %r failed; deciding without it", generator.name)
                proposed = []
            timings[f"generate_{generator.name}_ms"] = _ms_since(t)
            pool += [Candidate(self.sanitise(graph, c.scheme, context), c.source, c.note) for c in proposed]
        return dedupe(pool), timings

    def log_scores(
        self,
        graph: AppGraph,
        schemes: Sequence[dict[str, int]],
        context: DecisionContext | None = None,
        model: Model = "online",
    ) -> np.ndarray:
        """Predicted ln(reward) of each scheme (complete and clamped) in the graph's current state,
        by ``model``. Ranked in logs: in a hopeless state every predicted reward underflows to 0."""
        with torch.no_grad():
            view = self._view(graph, context)
            batch = batch_candidates(view, schemes)
            penalty = self._predict(batch, train=False, model=model)
            # A scheme with fewer instances of an operator than DS2 requires cannot keep up: no
            # learned correction may make it look better than the fluid model's estimate of
            # the backlog it builds (outside its training states, the network once did).
            short = torch.tensor([self.short_of(view.required_instances, s) for s in schemes])
            penalty = torch.where(short, torch.maximum(penalty, batch.u[:, _ESTIMATE]), penalty)
        performance = torch.expm1(penalty.clamp_min(0.0)).double().numpy()
        resources = np.array([resource_penalty(s, view.required_instances, view.reward) for s in schemes])
        return -(performance + resources) / 3.0

    @staticmethod
    def short_of(required: dict[str, int], scheme: dict[str, int]) -> bool:
        """Whether ``scheme`` runs fewer instances of some operator than ``required``."""
        return any(scheme.get(name, n) < n for name, n in required.items())

    def score(
        self, graph: AppGraph, schemes: Sequence[dict[str, int]], context: DecisionContext | None = None
    ) -> np.ndarray:
        """Predicted reward of each scheme."""
        return np.exp(self.log_scores(graph, schemes, context))

    def _view(self, graph: AppGraph, context: DecisionContext | None) -> GraphView:
        context = context or DecisionContext()
        restart_s = self.config.restart_s if context.restart_s is None else context.restart_s
        reward = self.config.reward.for_app(context.latency_target_ms)
        return GraphView.of(graph, context.max_parallelism, restart_s, self.config.horizon_s, reward, context.capacity)

    def _predict(self, batch: Batch, train: bool, model: Model = "online") -> torch.Tensor:
        """log1p(performance penalty) per candidate in the batch: the fluid estimate plus
        ``model``'s correction (only the online model trains)."""
        gcn, evaluator = (self.gcn, self.evaluator) if model == "online" else self.shipped
        gcn.train(train)
        evaluator.train(train)
        if not self.config.use_evaluator and not train:
            return batch.u[:, _ESTIMATE]
        n = self.normaliser
        embedding = gcn((batch.x - n.node_mean) / n.node_std, batch.edge_index, batch.batch)
        correction = evaluator(embedding, (batch.u - n.cand_mean) / n.cand_std)
        return batch.u[:, _ESTIMATE] + correction * n.correction_std + n.correction_mean

    def sanitise(
        self, graph: AppGraph, scheme: dict[str, int], context: DecisionContext | None = None
    ) -> dict[str, int]:
        """The scheme as it would be applied: every operator, within [1, cap], sources untouched
        unless the agent scales them."""
        max_parallelism = (context or DecisionContext()).max_parallelism
        return clamp_scheme(graph, scheme, max_parallelism, pin_sources=not self.config.scale_sources)

    # -- learning ----------------------------------------------------------------------

    def example(
        self,
        graph: AppGraph,
        scheme: dict[str, int],
        log_reward: float,
        context: DecisionContext | None = None,
        state_id: int | None = None,
        required: dict[str, int] | None = None,
    ) -> Example:
        """``scheme`` applied in ``graph``'s state earned reward exp(``log_reward``), encoded for
        training. ``required``: what that reward measured resources against (the simulator
        knows it exactly); DS2's estimate from the graph otherwise."""
        view = self._view(graph, context)
        nodes, candidates = encode(view, [scheme])
        data = to_data(view, nodes[0], candidates[0])
        target = performance_target(log_reward, scheme, required or view.required_instances, view.reward)
        return Example(data.x, data.edge_index, data.u, target, state_id)

    def observe(self, decision: Decision, measured_reward: float) -> None:
        """Remember what the chosen scheme earned, for ``train`` and for the LLM's prompt; and
        how far each model predicted it, before the online model learns from it."""
        if decision.graph is None:
            raise ValueError("the decision carries no graph to learn from")
        errors = tuple(
            abs(
                math.exp(self.log_scores(decision.graph, [decision.chosen], decision.context, model)[0])
                - measured_reward
            )
            for model in MODELS
        )
        app_errors = self.errors.pop(decision.app, None) or deque(maxlen=RECENT_OUTCOMES)
        app_errors.append(errors)
        self.errors[decision.app] = app_errors  # the most recently judged app last
        while len(self.errors) > ERRORS_KEPT_APPS:
            self.errors.popitem(last=False)
        self.recent_errors.append(errors)
        self._drop_online_if_worse()
        log_reward = math.log(max(measured_reward, _SMALLEST_REWARD))
        self.replay.append(self.example(decision.graph, decision.chosen, log_reward, decision.context))
        self.history.append(PastDecision(dict(decision.chosen), measured_reward))

    def _drop_online_if_worse(self) -> None:
        """Reset the online model to the shipped one when it predicted the last outcomes of
        all apps clearly worse; every app is decided for by the shipped model again."""
        if len(self.recent_errors) < RECENT_OUTCOMES:
            return
        shipped, online = np.mean(self.recent_errors, axis=0)
        if online <= ONLINE_DROP_SHARE * shipped or online - shipped <= ONLINE_DROP_SLACK:
            return
        log.warning(
            "online model dropped: its mean error on the last %d outcomes was %.3f against the shipped model's %.3f;"
            " learning again from the shipped model",
            len(self.recent_errors),
            online,
            shipped,
        )
        self.gcn.load_state_dict(self.shipped[0].state_dict())
        self.evaluator.load_state_dict(self.shipped[1].state_dict())
        self.optimizer.state.clear()  # its moments belong to the dropped weights
        # Reset to the shipped weights, it would have predicted every kept outcome as the shipped model did.
        for kept in (*self.errors.values(), self.recent_errors):
            as_shipped = [(error, error) for error, _ in kept]
            kept.clear()
            kept.extend(as_shipped)

    def train(self, steps: int) -> float:
        """``steps`` mini-batch updates of the online model from the replay buffer, at the
        online learning rate; mean loss (0 with nothing to learn from)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.online_learning_rate
        return self.fit(list(self.replay), steps)

    def fit(self, examples: Sequence[Example], steps: int) -> float:
        if len(examples) < 2 or steps <= 0:
            return 0.0
        if not self.normaliser.fitted:
            self.normaliser.fit(examples)
        by_state: dict[object, list[int]] = defaultdict(list)
        for i, e in enumerate(examples):
            by_state[("measured", i) if e.state_id is None else e.state_id].append(i)
        states = list(by_state.values())
        losses = []
        for _ in range(steps):
            # Whole decision states, until the batch is full.
            picked: list[list[int]] = []
            for k in self.rng.permutation(len(states)):
                picked.append(states[k])
                if sum(map(len, picked)) >= self.config.batch_size:
                    break
            batch = Batch.from_data_list([examples[i].data for indices in picked for i in indices])
            state = torch.cat([torch.full((len(indices),), k) for k, indices in enumerate(picked)])
            error = (self._predict(batch, train=True) - batch.y) / self.normaliser.correction_std
            # A decision only compares candidates of one state: their errors around the state's
            # mean error are what a wrong choice comes from, so they are penalised on their own too.
            relative = error - scatter(error, state, reduce="mean")[state]
            loss = error.pow(2).mean() + relative.pow(2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
        self.trained_steps += steps
        return float(np.mean(losses))

    # -- checkpoints -------------------------------------------------------------------

    def save(self, path: Path | str) -> None:
        checkpoint = {
            "features_version": FEATURES_VERSION,
            "config": self.config.model_dump(mode="json"),
            "gcn": self.gcn.state_dict(),
            "evaluator": self.evaluator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "normaliser": self.normaliser.state(),
            "replay": [e.state() for e in self.replay],
            "history": [{"scheme": p.scheme, "reward": p.reward} for p in self.history],
            "trained_steps": self.trained_steps,
            "calibrated_margins": self.calibrated_margins,
            "capacity": json.dumps(self.capacity.to_json()),
            "shipped_gcn": self.shipped[0].state_dict(),
            "shipped_evaluator": self.shipped[1].state_dict(),
            "errors": json.dumps({"apps": self.errors, "recent": self.recent_errors}, default=list),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }
        payload = io.BytesIO()
        torch.save(checkpoint, payload)
        checkpoint_file.write(Path(path), payload.getvalue())

    @classmethod
    def load(
        cls, path: Path | str, generators: Sequence[CandidateGenerator] | None = None, config: AgentConfig | None = None
    ) -> LaStreamAgent:
        """Restore an agent; ``config`` may change anything but the network's shape. Raises
        CheckpointMismatch for another version or shape, CorruptCheckpoint for a damaged file."""
        path = Path(path)
        payload = checkpoint_file.read(path)
        try:
            return cls._restore(torch.load(io.BytesIO(payload), weights_only=True), path, generators, config)
        except CheckpointMismatch:
            raise
        # What a payload that unpickles to the wrong things raises: missing keys, wrong types, wrong shapes.
        except (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, TypeError, ValueError) as exc:
            reason = " ".join(str(exc).split())  # load_state_dict's message spans lines
            raise CorruptCheckpoint(f"{path} does not fit its model ({type(exc).__name__}: {reason})") from exc

    @classmethod
    def _restore(
        cls,
        checkpoint: dict,
        path: Path,
        generators: Sequence[CandidateGenerator] | None,
        config: AgentConfig | None,
    ) -> LaStreamAgent:
        if checkpoint["features_version"] != FEATURES_VERSION:
            raise CheckpointMismatch(
                f"{path} was written by another LaStream version (features version {checkpoint['features_version']}, this one "
                f"reads {FEATURES_VERSION}); move it away to start again from the shipped model, or choose another checkpoint path"
            )
        saved = AgentConfig.model_validate(checkpoint["config"])
        if config is not None and (changed := [k for k in _ARCHITECTURE if getattr(config, k) != getattr(saved, k)]):
            raise CheckpointMismatch(f"{path}: the checkpoint's {', '.join(changed)} differ from the configuration")
        agent = cls(config or saved, generators)
        agent.gcn.load_state_dict(checkpoint["gcn"])
        agent.evaluator.load_state_dict(checkpoint["evaluator"])
        agent.optimizer.load_state_dict(checkpoint["optimizer"])
        agent.normaliser.load(checkpoint["normaliser"])
        agent.replay.extend(Example(**state) for state in checkpoint["replay"])
        agent.history.extend(PastDecision(h["scheme"], h["reward"]) for h in checkpoint["history"])
        agent.trained_steps = checkpoint["trained_steps"]
        agent.calibrated_margins = dict(checkpoint["calibrated_margins"])
        agent.capacity = CapacityModels.from_json(json.loads(checkpoint["capacity"]))
        # A checkpoint from before the online model was kept apart: what it holds is the shipped model.
        agent.shipped[0].load_state_dict(checkpoint.get("shipped_gcn", checkpoint["gcn"]))
        agent.shipped[1].load_state_dict(checkpoint.get("shipped_evaluator", checkpoint["evaluator"]))
        errors = json.loads(checkpoint.get("errors", '{"apps": {}, "recent": []}'))
        for app, pairs in errors["apps"].items():
            agent.errors[app] = deque(map(tuple, pairs), maxlen=RECENT_OUTCOMES)
        agent.recent_errors.extend(map(tuple, errors["recent"]))
        agent.rng.bit_generator.state = checkpoint["numpy_rng"]
        torch.set_rng_state(checkpoint["torch_rng"])
        return agent

    @classmethod
    def pretrained(
        cls,
        checkpoint: Path | str | None = None,
        config: AgentConfig | None = None,
        generators: Sequence[CandidateGenerator] | None = None,
    ) -> LaStreamAgent:
        """The agent's own checkpoint if it exists, else the one it replaced, else the shipped
        pretrained model, else untrained. What was unusable, and what is used instead, is one
        log line; a checkpoint of another version or shape is refused (CheckpointMismatch),
        since falling back would start over and overwrite it at the next save."""
        own = [] if checkpoint is None else [Path(checkpoint), checkpoint_file.previous(Path(checkpoint))]
        problems = []
        if own and not own[0].exists() and own[1].exists():  # a save stopped between its two renames
            problems.append(f"{own[0]} is missing")
        for path in [p for p in own if p.exists()] + [PRETRAINED_PATH]:
            try:
                agent = cls.load(path, generators, config)
            except CorruptCheckpoint as exc:
                problems.append(str(exc))
                continue
            except CheckpointMismatch as exc:
                if path != PRETRAINED_PATH:
                    raise
                problems.append(str(exc))
                continue
            if problems:
                log.warning("%s: using %s instead", "; ".join(problems), path)
            return agent
        log.warning("%s: starting untrained, candidates ranked by an untrained evaluator", "; ".join(problems))
        return cls(config, generators)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
