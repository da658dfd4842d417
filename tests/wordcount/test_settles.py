"""The first impression of ``lastream up`` on a 2-core machine: WordCount at its default
sizing, started under-provisioned, is brought to keep up and then left alone.

Real parts throughout: the supervisor starts the workers, the agent decides from their
metrics, and "keeps up" is judged from the metrics topic (``launcher.KeepsUp``: >= 95% of
the source processed, lag not growing)."""

from __future__ import annotations

import time
import uuid

import pytest

from lastream_stream.tools.dashboard import AppMonitor
from wordcount_app.launcher import KeepsUp, start_wordcount
from wordcount_app.settings import UPSTREAMS, WordCountSettings

from .test_closed_loop import RunningAgent, wait_for

HOLD_DECISIONS = 5  # stable windows at a constant rate after settling, each one a decision
WINDOW_S = 8.0


def describe(agent: RunningAgent) -> str:
    """What the agent decided, for a failure message: each decision's scheme, candidates and state."""
    lines = []
    for record in agent.published:
        if getattr(record, "kind", None) is None:
            continue
        state = " ".join(
            f"{name}={s.parallelism}(in {s.input_rate:.0f}/s, true {s.true_rate_per_instance:.0f}/s, lag {s.lag})"
            for name, s in record.state.items()
        )
        candidates = ", ".join(
            f"{c.scheme}:{c.score:.3g}" if c.score is not None else str(c.scheme) for c in record.candidates[:6]
        )
        measured = f" measured {record.measured_reward:.3f}" if record.measured_reward is not None else ""
        lines.append(
            f"{time.strftime('%H:%M:%S', time.localtime(record.at))} {record.kind} {record.chosen}{measured} | {state} | {candidates}"
        )
    return "\n".join(lines)


@pytest.mark.timeout(600)
def test_default_wordcount_settles_and_stays_put(settings, supervisor_home, tmp_path):
    # The defaults `lastream up` runs (rate, costs, partitions); reports every second for short windows.
    wc = WordCountSettings(prefix=f"settle-{uuid.uuid4().hex[:8]}", metrics_interval_s=1.0)
    monitor = AppMonitor(settings, wc.app).start()
    pipeline = start_wordcount(settings, wc, {"splitter": 1, "counter": 1, "sink": 1}, tmp_path / "logs")
    agent = RunningAgent(settings, tmp_path / "agent.pt", window_s=WINDOW_S)
    tracker = KeepsUp(UPSTREAMS)

    def controller():
        return agent.service.controllers.get(wc.app)

    def settled() -> bool:
        c = controller()
        kept = tracker.update(monitor.graph(), time.time(), c.commands if c else 0)
        # Its command(s) applied and the new instances processing: what runs now is what settled.
        return kept and c is not None and c.commands > 0 and c.pending is None and c.pause is None

    try:
        # All at 1 is under-provisioned at the default rate: the agent must act.
        wait_for(agent.commands, 240, "the agent's first command", agent)
        first = agent.commands()[0]
        assert first.target.get("splitter", 1) >= 2, (
            f"the first command does not scale the splitter out: {first.target}\n{describe(agent)}"
        )
        wait_for(
            settled, 300, "the app to keep up (>= 95% processed, lag not growing) with no command in flight", agent
        )
        commands, decisions = controller().commands, controller().decisions
        settled_at = time.time()
        checks: list[bool] = []

        def held() -> bool:
            checks.append(tracker.update(monitor.graph(), time.time(), commands))
            return controller().decisions >= decisions + HOLD_DECISIONS or controller().commands > commands

        # A decision per stable window at a constant rate; each must be a hold.
        wait_for(held, HOLD_DECISIONS * (WINDOW_S + 10) + 60, f"{HOLD_DECISIONS} more decisions", agent)
        assert controller().commands == commands, (
            f"after settling ({commands} command(s), app keeping up) the agent issued "
            f"{[c.target for c in agent.commands()[commands:]]} within {time.time() - settled_at:.0f} s at a constant rate:\n{describe(agent)}"
        )
        # Noise may fail a check now and then; an app falling behind fails most of them.
        assert sum(checks) >= 0.8 * len(checks), (
            f"the app kept up in only {sum(checks)} of {len(checks)} checks while the agent held:\n{describe(agent)}"
        )
    finally:
        agent.halt()
        monitor.stop()
        pipeline.stop()
