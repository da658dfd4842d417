"""A Faust worker whose fetch position jumps forward once, as a dropped batch leaves it.

Usage: ``jump_worker.py APP BOOTSTRAP GROUP INPUT OUTPUT AT TO`` with APP ``plain``
(``faust.App``) or ``contiguous`` (``ContiguousApp``). One agent reads INPUT (one
partition) and writes each offset it processes to OUTPUT. Once it has processed offset AT,
it seeks the aiokafka consumer to TO the way Faust's own ``Consumer.seek`` does, but
without moving Faust's read offset: the state Faust leaves when it drops records it
already fetched (a ``getmany`` batch cut short) and fetches on. The offsets in between
are never delivered unless something seeks back.

Both apps recover with ``SeekFirstTableManager`` so that the guard is the only difference.
"""

from __future__ import annotations

import sys
import tempfile

import faust
from faust.types import StreamT

from wordcount_app.recovery import ContiguousApp, SeekFirstTableManager

APPS = {"plain": faust.App, "contiguous": ContiguousApp}


def build_app(kind: str, bootstrap: str, group: str, datadir: str) -> faust.App:
    return APPS[kind](
        group,
        broker=f"kafka://{bootstrap}",
        web_enabled=False,
        store="memory://",
        datadir=datadir,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        TableManager=SeekFirstTableManager,
    )


def main(kind: str, bootstrap: str, group: str, input_topic: str, output_topic: str, at: str, to: str) -> None:
    with tempfile.TemporaryDirectory(prefix="jump-worker-") as datadir:
        app = build_app(kind, bootstrap, group, datadir)
        source = app.topic(input_topic, value_type=bytes, value_serializer="raw")
        sink = app.topic(output_topic, value_type=bytes, value_serializer="raw")
        jumped = False

        @app.agent(source)
        async def record_offsets(stream: StreamT) -> None:
            nonlocal jumped
            async for event in stream.events():
                offset = event.message.offset
                if offset == int(at) and not jumped:
                    jumped = True
                    # Faust's Consumer.seek minus its read-offset update.
                    await app.consumer._seek(event.message.tp, int(to))
                await sink.send(value=str(offset).encode())

        faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main(*sys.argv[1:])
