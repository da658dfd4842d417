"""How every LaStream process logs: rich on a terminal, one plain line per record otherwise;
to a size-bounded rotating file when one is configured; identical records rate-limited."""

from __future__ import annotations

import logging
import logging.config
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REPEAT_INTERVAL_S = 10.0
# A flood repeats a few messages; this bounds the filter's own memory when messages never repeat.
REPEAT_KEYS_KEPT = 1000


class RepeatFilter(logging.Filter):
    """Lets one of identical records (same logger, level, message template and arguments)
    through per ``interval_s``; the next one let through says how many were dropped. A
    broker outage makes every client log the same error many times a second: 13.9 MB
    from one worker in 40 s.

    One instance serves every handler: its verdict is kept on the record, so that every
    handler shows or drops a record alike."""

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._seen: OrderedDict[tuple, list] = OrderedDict()  # key: [last let through, dropped since]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        verdict = record.__dict__.get("lastream_repeat")
        if verdict is None:
            verdict = record.lastream_repeat = self._judge(record)
        return verdict

    def _judge(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg), repr(record.args))
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.interval_s:
                seen[1] += 1
                return False
            self._seen[key] = [now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > REPEAT_KEYS_KEPT:
                self._seen.popitem(last=False)
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} (repeated {seen[1]} times in {now - seen[0]:.0f} s)"
        return True


def logging_config(
    level: str, terminal: bool = False, file: Path | None = None, max_bytes: int = 0, backups: int = 0
) -> dict:
    """The ``logging.config.dictConfig`` of a LaStream process (Faust workers take it too):
    to ``file``, rotated at ``max_bytes`` with ``backups`` older parts, when given; else to
    stderr, rich on a terminal. Every handler rate-limits identical records."""
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": str(file),
            "maxBytes": max_bytes,
            "backupCount": backups,
            "formatter": "plain",
        }
    elif terminal:
        handler = {"()": RichHandler, "console": console, "show_path": False, "rich_tracebacks": False}
    else:
        handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"repeats": {"()": RepeatFilter}},
        "formatters": {"plain": {"format": PLAIN_FORMAT}},
        "handlers": {"main": handler | {"filters": ["repeats"]}},
        "root": {"level": level.upper(), "handlers": ["main"]},
    }


def setup_logging(level: str, file: Path | None = None, max_bytes: int = 0, backups: int = 0) -> None:
    """Rich on a terminal; plain one-line records when the output goes to a pipe, or to
    ``file`` (rotated by size) when one is given."""
    logging.config.dictConfig(logging_config(level, console.is_terminal, file, max_bytes, backups))
    logging.getLogger("lastream.librdkafka").setLevel(max(logging.WARNING, logging.getLogger().level))
