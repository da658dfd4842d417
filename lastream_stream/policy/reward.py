"""La-Stream's reward: one number in (0, 1] that falls with latency, backlog and resources.

    r = cbrt( exp(-eta_l * L / theta) * exp(-eta_d * D / D_star) * exp(-(eta_a / n) * sum_i a_i / a_min) )
      = exp( -(eta_l * L / theta + eta_d * D / D_star + eta_a * mean_i(a_i / a_min)) / 3 )

L is the end-to-end latency (ms), D the records in flight (total consumer lag), a_i the
parallelism of operator i out of n, a_min the smallest parallelism allowed (1).
The second form is how it is computed: the product of three exponentials underflows for a
large backlog long before the cube root would bring it back into range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field


class RewardParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    theta_ms: float = Field(default=100.0, gt=0, description="latency scale, ms")
    d_star: float = Field(default=1000.0, gt=0, description="backlog scale, records")
    eta_l: float = Field(default=1.0, ge=0)
    eta_d: float = Field(default=1.0, ge=0)
    eta_a: float = Field(default=0.5, ge=0)
    a_min: int = Field(default=1, ge=1)


def performance_penalty(latency_ms: float, in_flight: float, params: RewardParams) -> float:
    """The latency and backlog part of the exponent (times 3): what a scheme cannot know in advance."""
    return params.eta_l * latency_ms / params.theta_ms + params.eta_d * in_flight / params.d_star


def resource_penalty(parallelism: Mapping[str, int] | Sequence[int], params: RewardParams) -> float:
    """The resource part of the exponent (times 3): known exactly from the scheme itself."""
    values = list(parallelism.values()) if isinstance(parallelism, Mapping) else list(parallelism)
    if not values:
        raise ValueError("a scheme needs at least one operator")
    return params.eta_a * sum(a / params.a_min for a in values) / len(values)


def log_reward(
    latency_ms: float,
    in_flight: float,
    parallelism: Mapping[str, int] | Sequence[int],
    params: RewardParams | None = None,
) -> float:
    """ln r: still tells two hopeless schemes apart after r itself has underflowed to 0."""
    params = params or RewardParams()
    if latency_ms < 0 or in_flight < 0:
        raise ValueError("latency and backlog cannot be negative")
    return -(performance_penalty(latency_ms, in_flight, params) + resource_penalty(parallelism, params)) / 3


def reward(
    latency_ms: float,
    in_flight: float,
    parallelism: Mapping[str, int] | Sequence[int],
    params: RewardParams | None = None,
) -> float:
    return math.exp(log_reward(latency_ms, in_flight, parallelism, params))


def horizon_log_reward(log_rewards: Sequence[float], interval_s: float, horizon_s: float, unobserved_s: float = 0.0) -> float:
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
    return peak + math.log(sum(w * math.exp(s - peak) for w, s in zip(weights, log_rewards, strict=True)) / sum(weights))
