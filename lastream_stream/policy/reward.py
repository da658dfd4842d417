"""La-Stream's reward: one number in (0, 1] that falls with latency, backlog and resources.

    r = cbrt( exp(-eta_l * L / L_target) * exp(-eta_d * D / D_star) * exp(-eta_a * A) )
      = exp( -(eta_l * L / L_target + eta_d * D / D_star + eta_a * A) / 3 )

The paper's form measures D in records (total consumer lag) and A as mean_i(a_i / a_min):
the same backlog is a disaster for an app at 10 records/s and noise for one at 10^6, and an
app needing 40 instances scores near 0 however well it is sized. So by default every term
is scale-free:

* ``L``: end-to-end latency (ms), against the app's latency target: its own when it has
  one; otherwise 1 s, or twice the time its instances take to process a record along the
  slowest path if that is longer (no number of instances makes a record that takes 5 s to
  process come out in 1 s, and chasing it would only burn instances);
* ``D``: backlog in *seconds of input*, each operator's lag over the rate that feeds it,
  added along the longest source-to-sink path (the wait a record entering now would see);
* ``A``: instances in multiples of what sustains the rate (DS2's requirement), so
  A = 1 for a right-sized app whatever its size.

The same app at 10x the rates and 10x the true rates scores the same. ``form="absolute"``
keeps the paper's form for comparison. The second form of ``r`` is how it is computed, in
logs: the product of exponentials underflows for a large backlog long before the cube root
would bring it back into range, and two hopeless schemes must still be told apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

# A backlog of an operator that nothing feeds is counted against this rate, records/s.
MIN_FEED_RATE = 1e-6
QUEUED_RECORDS = 2.0  # a queue this many records deep is ordinary, not a backlog


class RewardParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    form: Literal["scale-free", "absolute"] = "scale-free"
    latency_target_ms: float | None = Field(
        default=None, gt=0, description="scale-free: the app's latency target; None: the default rule"
    )
    default_latency_ms: float = Field(
        default=1000.0, gt=0, description="scale-free: the latency target of an app without its own"
    )
    service_multiple: float = Field(
        default=2.0, gt=0, description="scale-free: nor below this multiple of the app's processing time per record"
    )
    d_star_s: float = Field(default=10.0, gt=0, description="scale-free: backlog scale, seconds of input")
    theta_ms: float = Field(default=100.0, gt=0, description="absolute: latency scale, ms")
    d_star: float = Field(default=1000.0, gt=0, description="absolute: backlog scale, records")
    a_min: int = Field(default=1, ge=1, description="absolute: the smallest parallelism allowed")
    eta_l: float = Field(default=1.0, ge=0)
    eta_d: float = Field(default=1.0, ge=0)
    eta_a: float = Field(default=0.5, ge=0)

    def formula(self) -> str:
        """The reward in words, with these parameters: what an LLM proposing schemes is told."""
        if self.form == "absolute":
            return (
                f"cbrt(exp(-{self.eta_l}*L/{self.theta_ms}) * exp(-{self.eta_d}*D/{self.d_star}) * "
                f"exp(-{self.eta_a}*mean(parallelism/{self.a_min}))), L = latency ms, D = total lag in records."
            )
        return (
            f"cbrt(exp(-{self.eta_l}*L/L_target) * exp(-{self.eta_d}*D/{self.d_star_s}) * exp(-{self.eta_a}*A)), "
            f"L = latency ms, L_target = {self._target_in_words()}, D = backlog in seconds "
            "of input along the slowest path, A = total instances / total instances needed at 100% busy."
        )

    def _target_in_words(self) -> str:
        if self.latency_target_ms is not None:
            return f"{self.latency_target_ms:g} ms"
        return f"{self.default_latency_ms:g} ms or {self.service_multiple:g} x the processing time per record along the slowest path, whichever is longer"

    def latency_scale_ms(self, service_ms):
        """The latency that costs as much as D_star of backlog (scale-free form)."""
        if self.latency_target_ms is not None:
            return self.latency_target_ms
        return np.maximum(self.default_latency_ms, self.service_multiple * service_ms)

    def over_d_star(self, backlog_s: float, lag: float) -> bool:
        """A backlog beyond D_star: seconds of input, or records in the absolute form."""
        return lag > self.d_star if self.form == "absolute" else backlog_s > self.d_star_s

    def for_app(self, latency_target_ms: float | None) -> RewardParams:
        """These parameters with an app's own latency target, when it has one."""
        return self if latency_target_ms is None else self.model_copy(update={"latency_target_ms": latency_target_ms})


@dataclass(frozen=True)
class Measured:
    """What one interval of an app measured, in the reward's terms."""

    latency_ms: float
    backlog_s: float  # longest source-to-sink path of per-operator lag / feeding rate
    service_ms: float  # longest source-to-sink path of one instance's processing time per record
    lag: float  # records, all operators
    parallelism: Mapping[str, int]
    required: Mapping[str, int]  # instances that sustain the rate, per operator

    def backlogged(self, threshold_s: float) -> bool:
        """A backlog over ``threshold_s`` seconds of input and over what ordinary queueing
        explains in an app that takes seconds per record (``QUEUED_RECORDS`` records'
        processing along the slowest path): fixed seconds would call every slow app behind."""
        return self.backlog_s > max(threshold_s, QUEUED_RECORDS * self.service_ms / 1000.0)


def longest_path(per_operator: Mapping[str, float], upstreams: Mapping[str, Sequence[str]]) -> float:
    """The largest sum of ``per_operator`` along a source-to-sink path; ``upstreams`` must
    list the operators in topological order."""
    path: dict[str, float] = {}
    for name, ups in upstreams.items():
        path[name] = per_operator[name] + max((path[u] for u in ups if u in path), default=0.0)
    return max(path.values(), default=0.0)


def path_backlog_s(
    lag: Mapping[str, float], feed_rate: Mapping[str, float], upstreams: Mapping[str, Sequence[str]]
) -> float:
    """Seconds a record entering now waits in queues on its slowest way through the graph."""
    return longest_path({name: lag[name] / max(feed_rate[name], MIN_FEED_RATE) for name in upstreams}, upstreams)


def path_service_ms(true_rate: Mapping[str, float], upstreams: Mapping[str, Sequence[str]]) -> float:
    """Milliseconds one instance of each operator takes per record, along the slowest path;
    operators of unknown true rate (0) count nothing."""
    return longest_path(
        {name: 1000.0 / true_rate[name] if true_rate[name] > 0 else 0.0 for name in upstreams}, upstreams
    )


def performance_penalty(latency_ms, backlog_s, lag, service_ms, params: RewardParams):
    """The latency and backlog part of the exponent (times 3): what a scheme cannot know in
    advance. Works on floats and numpy arrays alike."""
    if params.form == "absolute":
        return params.eta_l * latency_ms / params.theta_ms + params.eta_d * lag / params.d_star
    return params.eta_l * latency_ms / params.latency_scale_ms(service_ms) + params.eta_d * backlog_s / params.d_star_s


def resource_penalty(parallelism: Mapping[str, int], required: Mapping[str, int], params: RewardParams) -> float:
    """The resource part of the exponent (times 3): known from the scheme and the requirement."""
    if not parallelism:
        raise ValueError("a scheme needs at least one operator")
    if params.form == "absolute":
        return params.eta_a * float(np.mean([a / params.a_min for a in parallelism.values()]))
    return params.eta_a * sum(parallelism.values()) / max(1, sum(required[name] for name in parallelism))


def log_reward(measured: Measured, params: RewardParams | None = None) -> float:
    """ln r: still tells two hopeless schemes apart after r itself has underflowed to 0."""
    params = params or RewardParams()
    if measured.latency_ms < 0 or measured.backlog_s < 0 or measured.lag < 0:
        raise ValueError("latency and backlog cannot be negative")
    performance = performance_penalty(
        measured.latency_ms, measured.backlog_s, measured.lag, measured.service_ms, params
    )
    return -(performance + resource_penalty(measured.parallelism, measured.required, params)) / 3


def reward(measured: Measured, params: RewardParams | None = None) -> float:
    return math.exp(log_reward(measured, params))


def horizon_log_reward(
    log_rewards: Sequence[float], interval_s: float, horizon_s: float, unobserved_s: float = 0.0
) -> float:
    """ln of the mean reward over ``horizon_s``, from the rewards of the consecutive
    ``interval_s`` intervals it starts with; the rest of the horizon is taken to go on as the
    last interval did. This is how a scheme is judged, in pretraining and online alike.

    Online, the restart and warm-up before the first interval decided on go unmeasured:
    ``unobserved_s`` of them are taken to be like the first interval, the one with the
    restart's backlog still in it."""
    if not log_rewards:
        raise ValueError("at least one interval is needed")
    weights = [1.0] * len(log_rewards)
    weights[0] += unobserved_s / interval_s
    weights[-1] += max(0.0, horizon_s / interval_s - sum(weights))
    peak = max(log_rewards)  # factored out: exp of a hopeless interval's ln r underflows
    return peak + math.log(
        sum(w * math.exp(s - peak) for w, s in zip(weights, log_rewards, strict=True)) / sum(weights)
    )
