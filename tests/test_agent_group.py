"""Several agents at once, on the real broker: Kafka's group protocol on the metrics topic
gives each app to exactly one agent, and an agent that stops, cleanly or not, hands its
apps to the others."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import pytest
from factories import applied_ack
from test_agent_service import DS2, honest_reports, short_windows
from test_control_auth import keyed

from lastream_stream.agent.controller import Phase
from lastream_stream.agent.ownership import Ownership
from lastream_stream.agent.service import AgentService
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.wire.contracts import ScalingCommand
from lastream_stream.wire.signing import Signer

APPS = [f"app{i}" for i in range(4)]  # one per partition of the metrics topic (4 by default)


@dataclass
class RunningAgent:
    service: AgentService
    stop: threading.Event
    thread: threading.Thread
    published: list = field(default_factory=list)

    def commands(self) -> list[ScalingCommand]:
        return [m for m in list(self.published) if isinstance(m, ScalingCommand)]

    def commanded(self) -> set[str]:
        return {m.app for m in self.commands()}


@contextmanager
def running_agents(settings, service_settings: list[AgentServiceSettings]) -> Iterator[list[RunningAgent]]:
    """One agent service (DS2's policy) per settings, each in its own thread, all ready."""
    agents = []
    with ExitStack() as stack:
        for service in service_settings:
            stop = threading.Event()
            agent = RunningAgent(AgentService(settings, service, agent=DS2()), stop, threading.Thread(daemon=True))
            agent.thread = threading.Thread(
                target=agent.service.run,
                args=(stop, None, lambda a, p=agent.published: p.append(a.message)),
                daemon=True,
            )
            agent.thread.start()
            stack.callback(agent.thread.join, 30)
            stack.callback(stop.set)
            agents.append(agent)
        for agent in agents:
            assert agent.service.ready.wait(30), "an agent did not get ready"
        yield agents


def app_reports(app: str, now: float) -> list[bytes]:
    return [json.dumps(json.loads(r) | {"app": app}).encode() for r in honest_reports(now)]


def report_until(
    clients, settings, done: Callable[[], bool], timeout_s: float = 60, refusing: tuple[RunningAgent, ...] = ()
) -> float:
    """Every app's reports, keyed by the app, each app on a partition of its own, every second
    until ``done`` (``timeout_s`` at most); the seconds it took. Each command of the
    ``refusing`` agents is refused at once, so its app is decided again at its next window."""
    started = time.monotonic()
    refused: set[str] = set()
    with clients.producer() as producer:
        while not done() and time.monotonic() - started < timeout_s:
            for partition, app in enumerate(APPS):
                for payload in app_reports(app, time.time()):
                    producer.produce(settings.topics.metrics, key=app.encode(), value=payload, partition=partition)
            for command in (c for a in refusing for c in a.commands() if c.decision_id not in refused):
                refused.add(command.decision_id)
                ack = applied_ack(command, {}).model_copy(update={"status": "rejected", "error": "no room"})
                producer.produce(settings.topics.acks, key=command.app.encode(), value=ack.to_bytes())
            producer.flush(10)
            time.sleep(1.0)
    return time.monotonic() - started


def group_settings(tmp_path, **overrides) -> AgentServiceSettings:
    """Agents of one test: their own group, a shared checkpoint and stabilisation state."""
    base = short_windows(tmp_path, "shared.pt")
    return base.model_copy(update={"group": f"agents-{tmp_path.name}", "session_timeout_s": 6.0} | overrides)


def every_app_commanded(agents: list[RunningAgent]) -> Callable[[], bool]:
    return lambda: set().union(*(a.commanded() for a in agents)) >= set(APPS)


def test_two_agents_split_the_apps_each_decided_by_exactly_one(settings, clients, tmp_path):
    with running_agents(settings, [group_settings(tmp_path), group_settings(tmp_path)]) as agents:
        report_until(clients, settings, every_app_commanded(agents))
        # Long enough for a second agent deciding the same apps to have decided them too.
        report_until(clients, settings, lambda: False, timeout_s=5)
        first, second = (a.commanded() for a in agents)
        owned = [set(a.service.controllers) for a in agents]
    assert first | second == set(APPS), "some app was never decided"
    assert not first & second, f"apps decided by both agents: {sorted(first & second)}"
    assert first and second, "one agent decided every app: the apps were not split"
    assert owned == [first, second]


def handed_over(settings, clients, tmp_path, leaving_settings: AgentServiceSettings) -> float:
    """Seconds until the apps of a stopped agent were decided by the one left."""
    with running_agents(settings, [group_settings(tmp_path), leaving_settings]) as (staying, leaving):
        report_until(clients, settings, every_app_commanded([staying, leaving]))
        moved = leaving.commanded()
        assert moved and staying.commanded().isdisjoint(moved), "the apps were not split"
        leaving.stop.set()
        leaving.thread.join(30)
        assert not leaving.thread.is_alive()
        took = report_until(clients, settings, lambda: staying.commanded() >= moved, timeout_s=60)
        assert staying.commanded() >= moved, f"{sorted(moved - staying.commanded())} not taken over in 60 s"
    # The new owner continued each app's generation from the control topic.
    before = {c.app: c.generation for c in leaving.commands()}
    after = {c.app: c.generation for c in reversed(staying.commands()) if c.app in moved}
    assert after == {app: generation + 1 for app, generation in before.items()}
    return took


def test_a_stopped_agents_apps_are_decided_by_the_other(settings, clients, tmp_path):
    # A clean stop leaves the group: the rebalance starts at once.
    assert handed_over(settings, clients, tmp_path, group_settings(tmp_path)) < 30


def test_a_command_pending_under_the_old_owner_is_awaited_not_reissued(settings, clients, tmp_path):
    """Signed, unacknowledged when its agent stops: the new owner waits for its ack, as a
    restarted agent would, and decides again once it arrives."""
    signer = Signer({"k1": b"secret"}, "k1")
    settings = keyed(settings, signer)
    with running_agents(settings, [group_settings(tmp_path), group_settings(tmp_path)]) as (staying, leaving):
        report_until(clients, settings, every_app_commanded([staying, leaving]))
        pending = {c.app: c for c in leaving.commands()}
        assert pending and staying.commanded().isdisjoint(pending), "the apps were not split"
        leaving.stop.set()
        leaving.thread.join(30)

        def awaited() -> bool:
            controllers = [staying.service.controllers.get(app) for app in pending]
            return all(c is not None and c.phase is Phase.AWAITING_ACK for c in controllers)

        report_until(clients, settings, awaited, timeout_s=30)
        assert awaited(), "the new owner does not await the pending commands"
        awaiting = {app: staying.service.controllers[app].pending.decision_id for app in pending}
        assert awaiting == {app: command.decision_id for app, command in pending.items()}
        assert staying.commanded().isdisjoint(pending), "a pending command was issued again"
        with clients.producer() as producer:
            for command in pending.values():
                # Refused: the reports still say one 'work', so the app is decided on again at once.
                refused = applied_ack(command, {}).model_copy(update={"status": "rejected", "error": "no room"})
                ack = signer.sign(refused)
                producer.produce(settings.topics.acks, key=command.app.encode(), value=ack.to_bytes())
        report_until(clients, settings, lambda: staying.commanded() >= set(pending), timeout_s=30)
    after = {c.app: c.generation for c in staying.commands() if c.app in pending}
    assert after == {app: command.generation + 1 for app, command in pending.items()}


LONG_RUN_S = 300.0


@pytest.mark.timeout(LONG_RUN_S + 240)
def test_two_agents_for_five_minutes_then_one_vanishes(settings, clients, tmp_path):
    """Each app decided again and again for five minutes, always by the same one agent, with
    no generation issued twice or skipped; then one agent vanishes (a static member, which
    does not leave the group, as a killed agent does not) and the other decides its apps
    after the session timeout and within a minute, generations continuing."""
    vanishing = group_settings(tmp_path, member=f"vanishing-{tmp_path.name}")
    with running_agents(settings, [group_settings(tmp_path), vanishing]) as (staying, leaving):
        report_until(clients, settings, every_app_commanded([staying, leaving]))
        owners = [set(staying.service.controllers), set(leaving.service.controllers)]
        changed: list[list[set[str]]] = []

        def owners_changed() -> bool:
            now = [set(staying.service.controllers), set(leaving.service.controllers)]
            if now != owners:
                changed.append(now)
            return False  # the whole five minutes

        report_until(clients, settings, owners_changed, LONG_RUN_S, refusing=(staying, leaving))
        first, second = staying.commanded(), leaving.commanded()
        assert not changed, f"apps changed hands while both agents ran: {owners} -> {changed[:3]}"
        assert first | second == set(APPS) and not first & second, f"apps decided by both: {first & second}"
        for app in APPS:
            generations = [c.generation for a in (staying, leaving) for c in a.commands() if c.app == app]
            assert len(generations) >= 20, f"{app} decided only {len(generations)} times in five minutes"
            assert generations == list(range(generations[0], generations[0] + len(generations))), app

        moved, last = second, {c.app: c.generation for c in leaving.commands()}
        leaving.stop.set()
        leaving.thread.join(30)
        took = report_until(clients, settings, lambda: staying.commanded() >= moved, 60, refusing=(staying, leaving))
        # The first command of each moved app under its new owner.
        taken = {c.app: c.generation for c in reversed(staying.commands()) if c.app in moved}
    assert set(taken) == moved, f"{sorted(moved - set(taken))} not taken over within a minute"
    # A static member's close does not leave the group, as a killed agent does not: its
    # apps move only when the broker gives up on it after the session timeout.
    assert took >= 6, f"taken over after {took:.0f} s, before the session timeout"
    assert taken == {app: last[app] + 1 for app in moved}, "the new owner did not continue the generations"


def test_an_app_reported_on_two_partitions_is_warned_about_once(caplog):
    """Reports keyed otherwise than by app spread over partitions, and so over agents."""
    ownership = Ownership()
    ownership.assigned([0, 1, 2])
    assert all(ownership.owns("shop", partition) for partition in (0, 1, 0, 1))
    assert not ownership.owns("shop", 3), "a report of a partition not assigned (any more) was acted on"
    warnings = [r.getMessage() for r in caplog.records if "shop" in r.getMessage()]
    assert len(warnings) == 1 and "partitions 0 and 1" in warnings[0] and "keyed by the app" in warnings[0]
    assert ownership.revoked([0]) == [] and ownership.revoked([1]) == ["shop"] and ownership.partitions == {2}
