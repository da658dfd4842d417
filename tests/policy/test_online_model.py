"""The online model against the shipped one: each outcome measures both before the online
model learns from it; the online model decides for an app only once it predicts the app's
outcomes clearly better, and is dropped when it predicts all apps' outcomes worse."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest
import torch
from factories import applied_ack
from policy_graphs import chain_graph

from lastream_stream.agent.controller import AppController, ControllerSettings
from lastream_stream.agent.metrics import AgentMetrics
from lastream_stream.bench.runner import EPOCH_START
from lastream_stream.policy.agent import (
    ONLINE_MIN_OUTCOMES,
    ONLINE_SWITCH_SHARE,
    RECENT_OUTCOMES,
    LaStreamAgent,
)
from lastream_stream.sim import Scenario, SimOperator, Simulator, Steps
from lastream_stream.wire.contracts import DecisionRecord, ScalingCommand


def shipped_prediction(agent: LaStreamAgent, decision) -> float:
    return math.exp(agent.log_scores(decision.graph, [decision.chosen], decision.context, "shipped")[0])


def test_the_online_model_decides_once_it_predicts_the_app_clearly_better_and_the_record_says_so(tmp_path):
    """An app whose every scheme earns 0.15 less than the shipped model predicts (a latency the
    fluid model cannot know): trained on its outcomes, the online model learns the offset."""
    agent = LaStreamAgent.pretrained()
    graph = chain_graph()
    models = []
    for _ in range(3 * ONLINE_MIN_OUTCOMES):
        decision = agent.decide(graph)
        models.append(decision.model)
        agent.observe(decision, shipped_prediction(agent, decision) - 0.15)
        agent.train(20)
    assert models[:ONLINE_MIN_OUTCOMES] == ["shipped"] * ONLINE_MIN_OUTCOMES  # too few outcomes to tell
    decision = agent.decide(graph)
    errors = decision.prediction_errors
    assert errors["online"] < ONLINE_SWITCH_SHARE * errors["shipped"], errors
    assert abs(errors["shipped"] - 0.15) < 0.01, errors
    assert decision.model == "online", (models, errors)
    # The prediction that decided is the online model's, and nearer what the app earns.
    online = decision.chosen_candidate.score
    assert abs(online - (shipped_prediction(agent, decision) - 0.15)) < errors["shipped"]
    assert agent.decide(dataclasses.replace(graph, app="other")).model == "shipped"  # no outcomes of that app yet

    path = tmp_path / "agent.pt"
    agent.save(path)
    restarted = LaStreamAgent.load(path)
    assert restarted.prediction_errors(graph.app) == agent.prediction_errors(graph.app)
    again = restarted.decide(graph)
    assert (again.model, again.chosen_candidate.score) == ("online", decision.chosen_candidate.score)
    assert shipped_prediction(restarted, again) == shipped_prediction(agent, decision)


def test_an_online_model_that_got_worse_is_dropped_with_a_log_line(caplog):
    agent = LaStreamAgent.pretrained()
    with torch.no_grad():  # the online model gone wrong: its correction's last layer scrambled
        for parameter in list(agent.evaluator.parameters())[-2:]:
            parameter.add_(torch.randn_like(parameter) * 3.0, alpha=1.0)
    graph = chain_graph()
    caplog.set_level(logging.WARNING, logger="lastream_stream.policy.agent")
    for k in range(RECENT_OUTCOMES):
        decision = agent.decide(graph)
        assert decision.model == "shipped"  # never trusted meanwhile
        assert not caplog.records, f"dropped after {k} outcomes"
        agent.observe(decision, shipped_prediction(agent, decision))  # the shipped model is right
    (record,) = caplog.records
    assert record.getMessage().startswith(
        f"online model dropped: its mean error on the last {RECENT_OUTCOMES} outcomes"
    )
    shipped_gcn, shipped_evaluator = agent.shipped
    for online, shipped in ((agent.gcn, shipped_gcn), (agent.evaluator, shipped_evaluator)):
        for name, value in online.state_dict().items():
            assert torch.equal(value, shipped.state_dict()[name]), name
    # Reset to the shipped weights, it would have predicted the kept outcomes as the shipped model did.
    errors = agent.prediction_errors(graph.app)
    assert errors["online"] == errors["shipped"] and agent.decide(graph).model == "shipped"


def test_the_records_metrics_and_live_view_carry_the_deciding_model_and_both_errors():
    """The service's controller on the simulator: every decision says which model decided,
    every outcome both models' recent errors, which the agent's metrics export."""
    scenario = Scenario(
        name="shop",
        operators=(SimOperator("source", true_rate=10_000.0), SimOperator("parse", ("source",), true_rate=25.0)),
        schedule=Steps(40.0, ()),
        interval_s=1.0,
        horizon_s=200.0,
    )
    sim = Simulator(scenario, seed=0)
    controller = AppController(
        "shop", LaStreamAgent.pretrained(), ControllerSettings(outcome_s=30.0, train_steps=2), since=EPOCH_START
    )
    records = []
    while sim.now < scenario.horizon_s:
        for report in sim.run(scenario.interval_s):
            controller.on_report(report)
        actions = controller.tick(EPOCH_START + sim.now)
        records += [a.message for a in actions if isinstance(a.message, DecisionRecord)]
        for command in (a.message for a in actions if isinstance(a.message, ScalingCommand)):
            sim.apply(command.target)
            controller.on_ack(applied_ack(command, sim.parallelism), EPOCH_START + sim.now)
    decided = [r for r in records if r.kind != "outcome"]
    outcomes = [r for r in records if r.kind == "outcome"]
    assert len(outcomes) >= ONLINE_MIN_OUTCOMES, [r.kind for r in records]
    assert {r.model for r in decided} <= {"shipped", "online"} and decided[0].model == "shipped"
    assert all(set(r.prediction_errors) == {"shipped", "online"} for r in outcomes)
    metrics = AgentMetrics()
    for record in records:
        metrics.observe(record)
    last = outcomes[-1].prediction_errors
    for model in ("shipped", "online"):
        assert metrics.registry.get_sample_value(
            "lastream_autoscaler_prediction_error", {"app": "shop", "model": model}
        ) == pytest.approx(last[model])
