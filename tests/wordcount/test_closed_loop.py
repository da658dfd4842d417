"""The whole loop on real parts: WordCount workers started by the supervisor, the agent
deciding from their metrics, commands applied, rewards measured and trained on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from control_log import read_all
from scrape import free_port

from lastream_stream.agent.controller import ControllerSettings
from lastream_stream.agent.service import AgentService
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.policy.window import MetricsWindow, keeps_up
from lastream_stream.wire.contracts import DecisionRecord, ScalingCommand
from wordcount_app.launcher import start_wordcount
from wordcount_app.settings import WordCountSettings
from wordcount_app.topology import worker_env

# Light on CPU (2 cores run broker, agent and ~8 workers) but needing scale-out: at 12
# sentences/s, 150 ms per sentence needs 2 splitters (1.8 busy s/s); ~83 words/s at
# 20 ms per word needs 2 counters (1.7 busy s/s).
LOOP_WC = dict(
    rate=12.0, cost_splitter_ms=150.0, cost_counter_ms=20.0, cost_sink_ms=2.0, metrics_interval_s=1.0, partitions=4
)


@pytest.fixture
def loop_wc() -> WordCountSettings:
    return WordCountSettings(prefix=f"loop-{uuid.uuid4().hex[:8]}", **LOOP_WC)


class RunningAgent:
    """An AgentService in a thread (the LaStream agent unless ``policy`` says otherwise), recording what it publishes."""

    def __init__(self, settings, checkpoint, policy=None, **controller):
        controller = {"window_s": 8.0, "warmup_s": 5.0, "outcome_s": 16.0, "train_steps": 5} | controller
        service = AgentServiceSettings(checkpoint=checkpoint, llm=False, controller=ControllerSettings(**controller))
        self.service = AgentService(settings, service, agent=policy)
        self.published = []
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self.service.run, args=(self.stop, None, lambda a: self.published.append(a.message)), daemon=True
        )
        self.thread.start()

    def commands(self) -> list[ScalingCommand]:
        return [m for m in self.published if isinstance(m, ScalingCommand)]

    def records(self, kind: str):
        return [m for m in self.published if getattr(m, "kind", None) == kind]

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "agent did not stop"


def wait_for(condition, timeout_s: float, what: str, agent: RunningAgent | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if agent is not None:
            assert agent.thread.is_alive(), "the agent thread died"
        if value := condition():
            return value
        time.sleep(1.0)
    seen = f"; last seen: {condition.seen}" if getattr(condition, "seen", None) else ""
    issued = f"; commands: {[c.target for c in agent.commands()]}" if agent is not None else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{seen}{issued}")


class Sustained:
    """Checked once a second: every operator takes in >= 90% of what its upstream emits, over
    the controller's current window, and the total lag is not above what it was 5 checks ago."""

    def __init__(self, agent: RunningAgent, app: str) -> None:
        self.agent, self.app = agent, app
        self.lags: list[int] = []
        self.seen = ""  # why the last check failed, for the timeout's message

    def __call__(self) -> bool:
        controller = self.agent.service.controllers.get(self.app)
        if controller is None or controller.pending is not None:
            self.seen = "a command pending"
            return False
        window = MetricsWindow(window_s=8.0)
        for report in list(controller.reports):
            window.add(report)
        graph = window.graph(self.app)
        if graph is None or len(graph.operators) < 4:
            self.seen = "not every operator reporting"
            return False
        self.lags.append(graph.total_lag)
        self.seen = (
            ", ".join(
                f"{op.name} x{op.parallelism} in {op.observed_input_rate:.1f}/s lag {op.lag}"
                for op in graph.operators.values()
            )
            + f"; total lag over the last checks {self.lags[-6:]}"
        )
        return keeps_up(graph, 0.9) and len(self.lags) > 5 and self.lags[-1] <= self.lags[-6]


@pytest.mark.timeout(900)
def test_under_provisioned_wordcount_converges_and_learns(settings, loop_wc, supervisor_home, tmp_path):
    checkpoint = tmp_path / "agent.pt"
    pipeline = start_wordcount(settings, loop_wc, {"splitter": 1, "counter": 1, "sink": 1}, tmp_path / "logs")
    agent = RunningAgent(settings, checkpoint)
    try:
        wait_for(
            lambda: agent.commands() and agent.records("outcome"),
            240,
            "an applied command and its measured reward",
            agent,
        )
        first = agent.commands()[0]
        assert first.generation == 2  # the launcher's initial configuration was generation 1
        assert first.target["splitter"] >= 2
        wait_for(Sustained(agent, loop_wc.app), 240, "the source rate sustained with lag not growing", agent)
        replay_before = len(agent.service.agent.replay)
        size_before = checkpoint.stat().st_size
        wait_for(lambda: len(agent.service.agent.replay) > replay_before, 120, "another measured outcome", agent)
        # The checkpoint is written after the training that follows the outcome.
        wait_for(
            lambda: checkpoint.stat().st_size > size_before, 120, "the checkpoint to grow with the new outcome", agent
        )
        assert all(0 < r.measured_reward <= 1 for r in agent.records("outcome"))
        restarts = [r.restart_s for r in agent.records("outcome") if r.restart_s is not None]
        assert restarts and all(0 < s < 60 for s in restarts), f"restart times measured on the real workers: {restarts}"
    finally:
        agent.halt()
        pipeline.stop()
    generations = [c.generation for c in agent.commands()]
    assert generations == sorted(set(generations)), "a generation was issued twice"


@pytest.mark.timeout(900)
def test_step_down_in_source_rate_leads_to_a_scale_in(settings, supervisor_home, tmp_path):
    # Over-sized for 12 sentences/s, then the rate drops to 2/s: one splitter and one counter suffice.
    wc = WordCountSettings(prefix=f"down-{uuid.uuid4().hex[:8]}", **(LOOP_WC | {"schedule": "0:12,15:2"}))
    pipeline = start_wordcount(settings, wc, {"splitter": 4, "counter": 4, "sink": 1}, tmp_path / "logs")
    agent = RunningAgent(settings, tmp_path / "agent.pt")
    try:

        def scaled_in():
            return [c for c in agent.commands() if c.target.get("splitter", 4) < 4 or c.target.get("counter", 4) < 4]

        wait_for(scaled_in, 240, "a scale-in command", agent)
        wait_for(
            lambda: agent.service.controllers[wc.app].pending is None, 60, "the scale-in to be acknowledged", agent
        )
        wait_for(Sustained(agent, wc.app), 180, "the lower rate sustained after the scale-in", agent)
    finally:
        agent.halt()
        pipeline.stop()


@pytest.mark.timeout(900)
def test_agent_killed_mid_run_resumes_without_duplicating_a_command(settings, loop_wc, supervisor_home, tmp_path):
    checkpoint = tmp_path / "agent.pt"
    env = (
        os.environ
        | worker_env(settings, loop_wc)
        | {
            "LASTREAM_AGENT_CHECKPOINT": str(checkpoint),
            "LASTREAM_CONTROLLER_WINDOW_S": "8",
            "LASTREAM_CONTROLLER_WARMUP_S": "5",
            "LASTREAM_CONTROLLER_TRAIN_STEPS": "5",
            "LASTREAM_CONTROLLER_OUTCOME_S": "30",  # an outcome measured sooner than the default 120 s
            "LASTREAM_AGENT_LLM": "false",
            "LASTREAM_AGENT_METRICS_PORT": str(free_port()),
        }
    )
    command = [sys.executable, "-m", "lastream_stream", "agent", "--app", loop_wc.app]
    clients = KafkaClients(settings.kafka)

    pipeline = start_wordcount(settings, loop_wc, {"splitter": 1, "counter": 1, "sink": 1}, tmp_path / "logs")
    with open(tmp_path / "agent-1.log", "wb") as log:  # the child keeps its own copy of the descriptor
        first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    second = None
    try:
        wait_for(
            lambda: (
                [r for r in read_all(clients, settings.topics.decisions, DecisionRecord) if r.kind == "outcome"]
                and [c for c in read_all(clients, settings.topics.control, ScalingCommand) if c.generation >= 2]
            ),
            300,
            "a command from the agent and a measured outcome",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        restarted_at = time.time()
        before = read_all(clients, settings.topics.control, ScalingCommand)
        with open(tmp_path / "agent-2.log", "wb") as log:
            second = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        # Two decisions of the restarted agent: where a careless agent would re-issue.
        wait_for(
            lambda: (
                len([r for r in read_all(clients, settings.topics.decisions, DecisionRecord) if r.at > restarted_at])
                >= 2
            ),
            180,
            "decisions of the restarted agent",
        )
        assert second.poll() is None, (tmp_path / "agent-2.log").read_text()[-2000:]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        pipeline.stop()
    seen = read_all(clients, settings.topics.control, ScalingCommand)
    generations = [c.generation for c in seen]
    assert generations == list(range(1, len(seen) + 1)), f"generations not consecutive: {generations}"
    assert len({c.decision_id for c in seen}) == len(seen)
    assert seen[: len(before)] == before
    log_text = (tmp_path / "agent-2.log").read_text()
    assert f"model and replay from {checkpoint}" in log_text
