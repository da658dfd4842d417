"""The prototype's Python API, kept so code written against it runs unchanged.

``StreamProcessingRLAgent(...).act(operators_info, dependencies)`` takes operators as dicts
(``name``, ``processing_capability``, ``input_rate``, ``resource_load``) and dependencies as
``(upstream_index, downstream_index)`` pairs, and returns the recommended parallelism as a
list in the order of ``operators_info``. Underneath it is the same :class:`LaStreamAgent`
the service runs: ``processing_capability`` is the true rate per instance, ``input_rate``
the observed input rate, ``resource_load`` the busy ratio. Optional keys: ``parallelism``
(current, default 1), ``selectivity`` (1.0), ``partitions``, ``lag``, ``latency_ms``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from lastream_stream.policy.agent import AgentConfig, LaStreamAgent
from lastream_stream.policy.base import Decision, DecisionContext
from lastream_stream.policy.graph import AppGraph, OperatorStats, topological_order
from lastream_stream.policy.llm import LLMConfig, LLMGenerator

log = logging.getLogger(__name__)

DEFAULT_MAX_PARALLELISM = 16  # the prototype's default


def graph_from_operators_info(
    operators_info: Sequence[dict[str, Any]], dependencies: Sequence[tuple[int, int]], app: str = "app"
) -> AppGraph:
    names = [str(op["name"]) for op in operators_info]
    if len(set(names)) != len(names):
        raise ValueError("operator names must be unique")
    upstreams: dict[str, list[str]] = {name: [] for name in names}
    for up, down in dependencies:
        upstreams[names[down]].append(names[up])
    stats: dict[str, OperatorStats] = {}
    for info in operators_info:
        name = str(info["name"])
        parallelism = int(info.get("parallelism", 1))
        selectivity = float(info.get("selectivity", 1.0))
        capability = float(info["processing_capability"])
        input_rate = float(info["input_rate"])
        stats[name] = OperatorStats(
            name=name,
            upstreams=sorted(upstreams[name]),
            parallelism=parallelism,
            partitions=info.get("partitions"),
            observed_input_rate=input_rate,
            observed_output_rate=input_rate * selectivity,
            true_input_rate=capability,
            true_output_rate=capability * selectivity,
            busy_ratio=min(max(float(info.get("resource_load", 0.0)), 0.0), 1.0),
            lag=int(info.get("lag", 0)),
            latency_p50_ms=info.get("latency_ms"),
            latency_p99_ms=None,
            instances_reporting=parallelism,
        )
    order = topological_order(upstreams)
    downstreams: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for up in upstreams[name]:
            downstreams[up].append(name)
    return AppGraph(app=app, operators={name: stats[name] for name in order}, downstreams=downstreams)


class StreamProcessingRLAgent:
    def __init__(
        self,
        deepseek_api_key: str | None = None,
        gcn_config: dict[str, Any] | None = None,
        action_evaluator_config: dict[str, Any] | None = None,
        deepseek_config: dict[str, Any] | None = None,
        checkpoint: Path | str | None = None,
    ) -> None:
        gcn_config = gcn_config or {}
        evaluator_config = action_evaluator_config or {}
        deepseek_config = deepseek_config or {}
        if "input_dim" in gcn_config:
            log.debug("gcn_config['input_dim'] is ignored: the input is the fixed feature set")
        defaults = AgentConfig()
        config = AgentConfig(
            gcn_hidden=list(gcn_config.get("hidden_dims", defaults.gcn_hidden)),
            embedding_dim=int(gcn_config.get("output_dim", defaults.embedding_dim)),
            evaluator_hidden=list(evaluator_config.get("hidden_dims", defaults.evaluator_hidden)),
            dropout=float(gcn_config.get("dropout", defaults.dropout)),
            learning_rate=float(evaluator_config.get("learning_rate", defaults.learning_rate)),
        )
        self.max_parallelism = int(deepseek_config.get("max_parallelism", DEFAULT_MAX_PARALLELISM))
        llm_config = LLMConfig(
            api_key=SecretStr(deepseek_api_key) if deepseek_api_key else None,
            model=deepseek_config.get("model_name", LLMConfig.model_fields["model"].default),
            base_url=deepseek_config.get("base_url", LLMConfig.model_fields["base_url"].default),
            n_schemes=int(deepseek_config.get("num_schemes", LLMConfig.model_fields["n_schemes"].default)),
            timeout_s=float(deepseek_config.get("timeout_s", LLMConfig.model_fields["timeout_s"].default)),
        )
        self.agent = LaStreamAgent.pretrained(checkpoint, config)
        self.agent.add_llm(LLMGenerator(llm_config))

    def act(
        self, operators_info: Sequence[dict[str, Any]], dependencies: Sequence[tuple[int, int]]
    ) -> tuple[list[int], dict[str, Any]]:
        """The recommended parallelism per operator (in input order) and how it was chosen."""
        graph = graph_from_operators_info(operators_info, dependencies)
        context = DecisionContext(history=tuple(self.agent.history), max_parallelism=self.max_parallelism)
        decision = self.agent.decide(graph, context)
        names = [str(op["name"]) for op in operators_info]
        best_scheme = [decision.chosen[name] for name in names]
        action_info = {
            "predicted_value": decision.chosen_candidate.score,
            "all_schemes": [[c.candidate.scheme[name] for name in names] for c in decision.candidates],
            "scores": [c.score for c in decision.candidates],
            "sources": [c.candidate.source for c in decision.candidates],
            "notes": [c.candidate.note for c in decision.candidates],
            "timings_ms": decision.timings_ms,
            "decision": decision,
        }
        return best_scheme, action_info

    def observe(self, action_info: dict[str, Any], reward: float) -> None:
        decision: Decision = action_info["decision"]
        self.agent.observe(decision, reward)

    def train(self, steps: int = 1) -> float:
        return self.agent.train(steps)

    def save(self, path: Path | str) -> None:
        self.agent.save(path)
