"""Which apps an agent decides when several run, and what it needs to take one over.

Kafka's group protocol hands each agent of the group some partitions of the metrics topic;
an agent owns the apps whose reports arrive on them. Reports are keyed by app, so all of an
app's reports arrive on one partition, hence at one agent. No election of our own: a
rebalance moves partitions, and with them apps.

Every agent reads the control and acks topics in full and keeps, per app, the latest
command and the acks that followed it (``ControlHistory``), so that it can take an app over
at any moment as it would after a restart: continuing its generation, awaiting a command
still pending under the previous owner rather than issuing another.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from lastream_stream.agent.controller import ACKS_KEPT, AppController
from lastream_stream.kafka.control import current
from lastream_stream.wire.contracts import CommandAck, ScalingCommand

log = logging.getLogger(__name__)


@dataclass
class Ownership:
    """The metrics partitions assigned to this agent, and the partition each app's reports arrive on."""

    partitions: set[int] = field(default_factory=set)
    apps: dict[str, int] = field(default_factory=dict)
    spread: set[str] = field(default_factory=set)  # apps already warned about

    def assigned(self, partitions: Iterable[int]) -> None:
        self.partitions |= set(partitions)

    def revoked(self, partitions: Iterable[int]) -> list[str]:
        """Forget ``partitions``; the apps whose reports arrived on them, now someone else's."""
        gone = set(partitions)
        self.partitions -= gone
        apps = sorted(app for app, partition in self.apps.items() if partition in gone)
        for app in apps:
            del self.apps[app]
            self.spread.discard(app)
        return apps

    def owns(self, app: str, partition: int) -> bool:
        """Whether a report of ``app`` read from ``partition`` is this agent's to act on."""
        if partition not in self.partitions:
            return False  # fetched before a revocation, delivered after it
        previous = self.apps.get(app)
        if previous is not None and previous != partition and app not in self.spread:
            # Another agent may read its other partitions and decide the app too.
            self.spread.add(app)
            log.warning(
                "%s: reports arrive on metrics partitions %d and %d: they must be keyed by the app's name, "
                "or several agents decide the app (said once)",
                app,
                previous,
                partition,
            )
        self.apps[app] = partition
        return True


@dataclass
class AppHistory:
    command: ScalingCommand | None = None
    # As many as a controller remembers (AppController.acked): older ones change nothing it
    # decides, and each ack says all that runs.
    acks: deque[CommandAck] = field(default_factory=lambda: deque(maxlen=ACKS_KEPT))


@dataclass
class ControlHistory:
    """Per app, the latest command on the control topic and the acks seen since, for up to
    ``max_apps`` apps: a controller made at any time starts from them."""

    max_apps: int
    apps: dict[str, AppHistory] = field(default_factory=dict)

    def refused(self, app: str) -> str | None:
        if app in self.apps or len(self.apps) < self.max_apps:
            return None
        return f"the agent follows {len(self.apps)} apps, the most allowed (LASTREAM_AGENT_MAX_APPS); not {app!r}"

    def command(self, command: ScalingCommand) -> None:
        history = self.apps.setdefault(command.app, AppHistory())
        history.command = current(history.command, command)

    def ack(self, ack: CommandAck) -> None:
        self.apps.setdefault(ack.app, AppHistory()).acks.append(ack)

    def replay(self, controller: AppController, now: float, signed: bool) -> None:
        """What the control plane says of the app into its new ``controller``, as a restart replays it."""
        history = self.apps.get(controller.app)
        if history is None:
            return
        if history.command is not None:
            controller.on_command(history.command, now, signed=signed)
        for ack in history.acks:
            controller.on_ack(ack, now)
