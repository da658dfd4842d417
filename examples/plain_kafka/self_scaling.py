"""The shop app scaling itself, without the supervisor: its parser and tally instances run
as threads of this one process, and it follows LaStream's commands through ``ControlClient``.
Run ``python examples/plain_kafka/self_scaling.py`` (the source runs apart: ``shop.py orders``)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from shop import APP, PARTITIONS, create_topics, run_parser, run_tally

from lastream_stream.kafka.control import ControlClient

log = logging.getLogger("shop.self_scaling")


class Pool:
    """The running instances of one operator, each a thread with its own stop flag."""

    def __init__(self, run: Callable[..., None]) -> None:
        self.run = run
        self.instances: list[tuple[threading.Thread, threading.Event]] = []

    def __len__(self) -> int:
        return len(self.instances)

    def scale(self, n: int) -> None:
        while len(self.instances) < n:
            stop = threading.Event()
            # Every instance reports the pool's current size as its parallelism.
            thread = threading.Thread(target=self.run, args=(stop, lambda: len(self)), daemon=True)
            thread.start()
            self.instances.append((thread, stop))
        while len(self.instances) > n:
            thread, stop = self.instances.pop()
            stop.set()
            thread.join(30)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    create_topics()
    pools = {"parser": Pool(run_parser), "tally": Pool(run_tally)}
    for pool in pools.values():
        pool.scale(1)
    with ControlClient(APP) as control:
        for command in control.follow(stop):
            wanted = {op: n for op, n in command.target.items() if op in pools}
            for op, n in wanted.items():
                pools[op].scale(min(n, PARTITIONS))
            clamped = {op: n for op, n in wanted.items() if n > PARTITIONS}
            running = {op: len(pool) for op, pool in pools.items()}
            status = "applied" if wanted.keys() == command.target.keys() else "partial"  # an operator it does not run
            control.ack(command, applied=running, status=status, clamped=clamped)
            log.info("generation %d: running %s", command.generation, {op: len(p) for op, p in pools.items()})
    for pool in pools.values():
        pool.scale(0)


if __name__ == "__main__":
    main()
