"""Candidate schemes from an LLM behind an OpenAI-compatible chat API (DeepSeek by default).

The model sees what DS2 sees plus what it cannot use: latency, lag, and how earlier
decisions were rewarded. Its answer is untrusted text, so parsing repairs what it can
(missing operators, numeric strings, out-of-range values) and counts every repair. Any
failure - no key, timeout, HTTP error, unparsable answer - yields no candidates and a
warning, never an exception: the analytic candidates are always there to fall back on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, fields
from typing import Any

import openai
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from lastream_stream.policy.base import Candidate, DecisionContext
from lastream_stream.policy.ds2 import ds2_plan, parallelism_cap
from lastream_stream.policy.graph import AppGraph
from lastream_stream.policy.reward import RewardParams
from lastream_stream.wire.contracts import MAX_PARALLELISM

log = logging.getLogger(__name__)

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


class LLMConfig(BaseSettings):
    """The LLM candidate generator's endpoint: any OpenAI-compatible chat API.

    DeepSeek by default, or a local model server, e.g. ``LASTREAM_LLM_BASE_URL=http://localhost:11434/v1``,
    ``LASTREAM_LLM_MODEL=qwen2.5``, ``LASTREAM_LLM_API_KEY_ENV=OLLAMA_KEY``."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_LLM_", extra="forbid")

    base_url: str = Field(
        default="https://api.deepseek.com", description="Base URL of the OpenAI-compatible chat endpoint."
    )
    model: str = Field(default="deepseek-chat", description="Chat model asked for candidate schemes.")
    api_key: SecretStr | None = Field(
        default=None,
        description="API key of the endpoint; a secret, never logged. When unset, read from `api_key_env`.",
    )
    api_key_env: str = Field(
        default="DEEPSEEK_API_KEY",
        description="Name of the environment variable holding the API key; LLM candidates are off while it is empty.",
    )
    n_schemes: int = Field(default=10, ge=1, le=64, description="Candidate schemes asked for per decision.")
    # A decision waits for this answer: keep it short, and never retry inside one decision.
    timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds a decision waits for the model's answer (no retries)."
    )
    temperature: float = Field(default=0.7, ge=0, le=2, description="Sampling temperature of the model.")
    max_tokens: int = Field(default=2000, ge=64, description="Most tokens of the model's answer.")
    json_mode: bool = Field(
        default=True,
        description="Ask for a JSON object response (`response_format`); set false for servers that reject it.",
    )
    history_shown: int = Field(
        default=5, ge=0, description="Past decisions and their rewards shown to the model in its prompt."
    )

    def resolved_key(self) -> SecretStr | None:
        if self.api_key is not None:
            return self.api_key
        value = os.environ.get(self.api_key_env)
        return SecretStr(value) if value else None


@dataclass
class ParseStats:
    """What parsing had to do to the model's answer; adds up over calls."""

    schemes_seen: int = 0
    accepted: int = 0
    rejected: int = 0  # not a scheme at all, or no usable value in it
    duplicates: int = 0
    filled_missing: int = 0  # operators the scheme left out: kept at their current parallelism
    unknown_dropped: int = 0  # operators the graph does not have, or extra positions
    rounded: int = 0  # floats and numeric strings made integers
    garbage_dropped: int = 0  # values that are not numbers
    clamped: int = 0  # values outside [1, cap]

    def add(self, other: ParseStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class LLMStats:
    requests: int = 0
    failures: int = 0  # no answer: timeout, HTTP error, connection error
    unparsable: int = 0


class LLMGenerator:
    name = "llm"

    def __init__(self, config: LLMConfig | None = None, reward_params: RewardParams | None = None) -> None:
        self.config = config or LLMConfig()
        self.reward_params = reward_params or RewardParams()
        self.stats = LLMStats()
        self.parse_stats = ParseStats()
        key = self.config.resolved_key()
        self._client = (
            None
            if key is None
            else openai.OpenAI(
                api_key=key.get_secret_value(),
                base_url=self.config.base_url,
                timeout=self.config.timeout_s,
                max_retries=0,
            )
        )
        if self._client is None:
            log.info("no API key (set $%s): LLM candidates are off", self.config.api_key_env)

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def propose(self, graph: AppGraph, context: DecisionContext | None = None) -> list[Candidate]:
        if self._client is None:
            return []
        cap = context.max_parallelism if context is not None else MAX_PARALLELISM
        self.stats.requests += 1
        try:
            completion = self._client.chat.completions.create(
                model=self.config.model,
                messages=self.messages(graph, context),
                temperature=self.config.temperature,
                max_tokens=self.config.max_tokens,
                **({"response_format": {"type": "json_object"}} if self.config.json_mode else {}),
            )
            text = completion.choices[0].message.content or ""
        except openai.OpenAIError as exc:
            self.stats.failures += 1
            log.warning("LLM request to %s failed, no LLM candidates this time: %s", self.config.base_url, exc)
            return []
        except (IndexError, AttributeError) as exc:
            self.stats.unparsable += 1
            log.warning("LLM response has no message: %s", exc)
            return []
        stats = ParseStats()
        parsed = parse_schemes(text, graph, stats, max_parallelism=cap)
        self.parse_stats.add(stats)
        if not parsed:
            self.stats.unparsable += 1
            log.warning("LLM answer held no usable scheme (%d chars)", len(text))
            return []
        if stats.rejected or stats.garbage_dropped or stats.unknown_dropped or stats.filled_missing or stats.clamped:
            log.info("LLM answer repaired: %s", stats)
        return [Candidate(scheme, "llm", note or "llm") for scheme, note in parsed[: self.config.n_schemes]]

    def messages(self, graph: AppGraph, context: DecisionContext | None) -> list[dict[str, str]]:
        cap = context.max_parallelism if context is not None else MAX_PARALLELISM
        plan = ds2_plan(graph)
        rows = []
        for name, op in graph.operators.items():
            rows.append(
                f"- {name}: upstreams={op.upstreams or 'none (source, parallelism fixed)'}, "
                f"parallelism={op.parallelism}, max={parallelism_cap(op, cap)}, "
                f"observed_in={op.observed_input_rate:.1f}/s, observed_out={op.observed_output_rate:.1f}/s, "
                f"true_rate_per_instance={op.true_input_rate:.1f}/s, selectivity={op.selectivity:.3f}, "
                f"busy={op.busy_ratio:.2f}, lag={op.lag}, "
                f"latency_p50_ms={_fmt(op.latency_p50_ms)}, latency_p99_ms={_fmt(op.latency_p99_ms)}, "
                f"instances_needed_at_100pct_busy={plan.required[name]:.2f}"
            )
        p = self.reward_params
        lines = [
            f"Streaming application '{graph.app}', operators in topological order (rates in records/s):",
            *rows,
            f"End-to-end latency p50: {graph.latency_ms:.1f} ms. Total lag: {graph.total_lag} records.",
            f"Reward of a scheme, in (0, 1], higher is better: {p.formula()}",
        ]
        if context is not None and context.latency_target_ms is not None:
            lines.append(f"This app's latency target: {_fmt(context.latency_target_ms)} ms (the L_target above).")
        history = list(context.history)[-self.config.history_shown :] if context is not None else []
        if history and self.config.history_shown:
            lines.append("Recent decisions and their measured rewards (oldest first):")
            lines.extend(f"- {json.dumps(past.scheme)} -> {past.reward:.4f}" for past in history)
        n = self.config.n_schemes
        lines.append(
            f"Propose {n} diverse parallelism schemes, from lean to generous. Every operator must "
            "appear with an integer between 1 and its max. Answer with JSON only, exactly: "
            '{"schemes": [{"parallelism": {"<operator>": <int>, ...}, "reason": "<one short sentence>"}]}'
        )
        return [
            {"role": "system", "content": "You size stream-processing operators. You answer with strict JSON only."},
            {"role": "user", "content": "\n".join(lines)},
        ]


def _fmt(value: float | int | None) -> str:
    return "unknown" if value is None else f"{value:g}"


def extract_json(text: str) -> Any:
    """The first JSON value in ``text``: the whole text, a fenced block, or the first {...}/[...] in prose."""
    text = text.strip()
    attempts = [text, *(block.strip() for block in _FENCE.findall(text))]
    for attempt in attempts:
        try:
            return json.loads(attempt)
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, (dict, list)):
            return value
    raise ValueError("no JSON value in the text")


def _as_int(value: Any) -> tuple[int | None, bool]:
    """(integer, whether it had to be rounded or converted); (None, False) for garbage."""
    if isinstance(value, bool):
        return None, False
    if isinstance(value, int):
        return value, False
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None, False
    if isinstance(value, float) and math.isfinite(value):
        return math.floor(value + 0.5), True
    return None, False


def _raw_schemes(payload: Any, names: list[str]) -> list[Any]:
    if isinstance(payload, list):
        # A bare list of numbers is one positional scheme, not many one-number schemes.
        return [payload] if payload and not isinstance(payload[0], (dict, list)) else payload
    if isinstance(payload, dict):
        if any(name in payload for name in names) or "parallelism" in payload:
            return [payload]
        lists = [value for value in payload.values() if isinstance(value, list)]
        if lists:
            return lists[0]
    return []


def parse_schemes(
    text: str, graph: AppGraph, stats: ParseStats, max_parallelism: int = MAX_PARALLELISM
) -> list[tuple[dict[str, int], str]]:
    """Schemes (with the model's reason, if any) from an answer; repairs are counted in ``stats``."""
    try:
        payload = extract_json(text)
    except ValueError:
        return []
    names = graph.names
    result: list[tuple[dict[str, int], str]] = []
    seen: set[tuple[int, ...]] = set()
    for raw in _raw_schemes(payload, names):
        stats.schemes_seen += 1
        note = ""
        if isinstance(raw, dict) and "parallelism" in raw:
            note = str(raw.get("reason", ""))[:200]
            raw = raw["parallelism"]
        if isinstance(raw, list):
            stats.unknown_dropped += max(0, len(raw) - len(names))
            raw = dict(zip(names, raw, strict=False))
        if not isinstance(raw, dict):
            stats.rejected += 1
            continue
        scheme: dict[str, int] = {}
        for key, value in raw.items():
            if key not in graph.operators:
                stats.unknown_dropped += 1
                continue
            number, converted = _as_int(value)
            if number is None:
                stats.garbage_dropped += 1
                continue
            stats.rounded += converted
            cap = parallelism_cap(graph.operators[key], max_parallelism)
            if not 1 <= number <= cap:
                stats.clamped += 1
                number = min(max(number, 1), cap)
            scheme[key] = number
        if not scheme:
            stats.rejected += 1
            continue
        stats.filled_missing += len(names) - len(scheme)
        complete = {name: scheme.get(name, op.parallelism) for name, op in graph.operators.items()}
        key = tuple(complete.values())
        if key in seen:
            stats.duplicates += 1
            continue
        seen.add(key)
        stats.accepted += 1
        result.append((complete, note))
    return result
