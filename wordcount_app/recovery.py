"""Faust, made to skip no input record: at the end of a rebalance, and at any jump.

Faust 0.15 ends a rebalance (after its tables are recovered, or at once without tables)
by resuming the input partitions, then seeking them to their committed offsets, then
resuming the flow of records. Records fetched between the first and the last step reach a
suspended flow: they are dropped while Faust's read offset moves past them, and when
fetched again after the seek they are dropped as already read (with no committed offset,
the seek does not even happen). Those records are never processed, and Faust commits only
up to the first gap, so the group's offsets stick and its lag never drains: the words a
counter skipped this way were never counted.

``SeekFirstRecovery`` seeks while the partitions are still paused (to the log start where
nothing is committed), resumes the flow, and only then resumes the partitions: every
record fetched afterwards is processed, from the committed offset on. It is installed with
``TableManager=SeekFirstTableManager``. It also unsticks a changelog replay that gets
nothing from a partition for ``STALLED_S`` (cause inside Faust unknown; see the method).

Faust can also drop fetched records mid-run (a batch cut short when its flow is suspended
or its generation changes) without seeking back; the next record then lands past a jump,
and Faust counts the skipped offsets as done and commits past them: a word lost for good.
``ContiguousConsumer`` refuses such a jump: it seeks back to Faust's read offset and fetches
again (downstream dedup absorbs the one record this may repeat). It guards the input
topics, whose offsets Faust commits, not the changelogs, which it reads to restore tables
and whose compaction leaves holes; a jump met twice from the same offset is a real hole
(transaction markers) and is let through. It is installed with ``ContiguousApp``
(tests/wordcount/test_contiguous.py makes such a jump on a real broker).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import faust
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka
from faust.types import TP, Message

STALLED_S = 10.0  # a replay that gets nothing from a partition this long is stuck, not slow


class SeekFirstRecovery(Recovery):
    async def _verify_remaining(self, now: float, stats) -> None:
        """Unstick a changelog partition the replay has had nothing from for ``STALLED_S``.

        Seen about once in 10-20 runs of the kill test: aiokafka fetched the partition, but
        the replay got no record of it and waited for good ("No event received for active
        tp"). Faust hands over only the records of partitions in its own active set, so
        the partition is resumed there, and sought back to where the replay stands."""
        await super()._verify_remaining(now, stats)
        if self._recovery_started_at is None or not self.in_recovery:
            return
        consumer = self.app.consumer
        for tp in stats:
            last = self._active_events_received_at.get(tp, self._recovery_started_at)
            if now - last < STALLED_S:
                continue
            paused = tp not in consumer._get_active_partitions()
            self.log.warning(
                "changelog replay of %s[%d] got nothing for %.0f s (%s): resuming it from offset %d",
                tp.topic,
                tp.partition,
                now - last,
                "paused" if paused else "not paused",
                self.active_offsets[tp],
            )
            consumer.resume_partitions({tp})
            await consumer.seek_wait({tp: max(self.active_offsets[tp], 0)})
            self._active_events_received_at[tp] = now  # another STALLED_S before the next attempt

    async def _resume_streams(self, generation_id: int = 0) -> None:
        await self.app.on_rebalance_complete.send()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        await self._resume(generation_id, standbys_ready=True)

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        for table in self.tables.values():
            await table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        await self._resume(generation_id, standbys_ready=not self.app.assignor.assigned_standbys())

    async def _resume(self, generation_id: int, standbys_ready: bool) -> None:
        consumer = self.app.consumer
        streams = {tp for tp in consumer.assignment() if not self._is_changelog_tp(tp)}
        if streams:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(self._seek(streams), timeout=self.app.conf.broker_request_timeout)
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        self.completed.set()
        self.app.flow_control.resume()
        consumer.resume_flow()
        consumer.resume_partitions(streams)
        await self.app._fetcher.maybe_start()  # type: ignore[attr-defined]
        self.tables.on_actives_ready()
        if standbys_ready:
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    async def _seek(self, streams: set) -> None:
        """To the committed offsets, or to the log start where none is committed (the
        workers reset to earliest): Faust leaves those where an earlier fetch left them."""
        consumer = self.app.consumer
        await consumer.perform_seek()
        committed = await consumer.seek_to_committed()
        if unset := {tp: 0 for tp in streams if not committed.get(tp)}:
            await consumer.seek_wait(unset)  # an offset before the log start resets to it


class SeekFirstTableManager(TableManager):
    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class ContiguousConsumer(aiokafka.Consumer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rewound: dict[TP, int] = {}  # partition -> the read offset last rewound to

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        jumped: set[TP] = set()
        async for tp, message in super().getmany(timeout):
            if tp in jumped:
                continue  # the rest of this batch is fetched again after the seek
            # Faust's read offset is the last record read, or the next to read after a seek.
            read = self._read_offset[tp]
            jump = read is not None and message.offset > read + 1 and self._rewound.get(tp) != read
            # Only where Faust commits offsets: a compacted changelog is full of real holes.
            if jump and self.app.topics.acks_enabled_for(message.topic):
                self.log.warning(
                    "records %s[%d] %d..%d skipped: fetching again",
                    tp.topic,
                    tp.partition,
                    read + 1,
                    message.offset - 1,
                )
                self._rewound[tp] = read
                jumped.add(tp)
                await self.seek(tp, read)
                continue
            yield tp, message


class ContiguousTransport(aiokafka.Transport):
    Consumer = ContiguousConsumer


class ContiguousApp(faust.App):
    def _new_transport(self) -> ContiguousTransport:
        return ContiguousTransport(self.conf.broker_consumer, self)
