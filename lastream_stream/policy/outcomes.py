"""What a decision earned, measured online the way pretraining labels it.

Pretraining judges a scheme by ln of its mean reward over the agent's horizon from the
moment it is applied: the first ``observe_s`` simulated, the rest taken to go on as the last
interval did (``reward.horizon_log_reward``). Judging a scale-out by the first window after
its restart instead would blame it for the backlog it is still draining, and teach the
agent to undo it.

So online, a decision's outcome stays open while its scheme runs: every window decided on
adds its reward to every open outcome, and after ``observe_s`` of windows (pretraining's
``simulate_s``) the outcome is complete. A hold is a decision too: its outcome is the
windows that follow it. An outcome whose scheme is replaced sooner is judged on the windows
it did run for, restart and drain included, and on nothing else: its scheme did not run
for the rest of the horizon, and holding a window with a backlog still draining over it
would make a sound change look hopeless. A reverted change is the most informative example
there is. One replaced before any window of its own was measured has nothing to be judged
on and is dropped. The restart and warm-up of a change are not windows anyone decides on; they count
as much as the first window, which carries their backlog, so that a change still pays for
its disruption as in pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lastream_stream.policy.base import Decision
from lastream_stream.policy.reward import horizon_log_reward


@dataclass
class OpenOutcome:
    decision: Decision
    unobserved_s: float  # between applying it and its first window: restart and warm-up
    log_rewards: list[float] = field(default_factory=list)  # ln r of each window since it was applied


@dataclass
class Outcomes:
    window_s: float
    observe_s: float
    horizon_s: float
    open: list[OpenOutcome] = field(default_factory=list)

    def start(self, decision: Decision, unobserved_s: float = 0.0) -> None:
        """``decision``'s scheme now runs; the next window is the first of its outcome, and
        starts ``unobserved_s`` after the scheme was applied."""
        self.open.append(OpenOutcome(decision, max(0.0, unobserved_s)))

    def window(self, log_reward: float, running: dict[str, int]) -> list[tuple[Decision, float]]:
        """A window of the ``running`` scheme: the outcomes it completes, as (decision, ln
        reward). Outcomes of another scheme (changed by someone else) are dropped."""
        self.open = [o for o in self.open if o.decision.chosen == running]
        for outcome in self.open:
            outcome.log_rewards.append(log_reward)
        done = [o for o in self.open if self._observed_enough(o)]
        self.open = [o for o in self.open if not self._observed_enough(o)]
        return [self._closed(o) for o in done]

    def replaced(self) -> list[tuple[Decision, float]]:
        """Another scheme runs now: every open outcome with a window measured is judged on
        what it measured, as (decision, ln reward); the others are dropped."""
        measured, self.open = [o for o in self.open if o.log_rewards], []
        return [self._closed(o, horizon_s=len(o.log_rewards) * self.window_s + o.unobserved_s) for o in measured]

    def _observed_enough(self, outcome: OpenOutcome) -> bool:
        return len(outcome.log_rewards) * self.window_s >= self.observe_s - 1e-9

    def _closed(self, outcome: OpenOutcome, horizon_s: float | None = None) -> tuple[Decision, float]:
        return outcome.decision, horizon_log_reward(
            outcome.log_rewards, self.window_s, horizon_s or self.horizon_s, outcome.unobserved_s
        )
