"""Logs stay bounded: identical records are rate-limited on every handler LaStream installs
(a broker outage once made one worker log 132 644 lines in 40 s), and a configured log file
rotates by size."""

from __future__ import annotations

import logging
import sys

import pytest
from mode.utils.logging import setup_logging as faust_setup_logging

from lastream_stream.logs import logging_config, setup_logging
from lastream_stream.settings import LastreamSettings
from wordcount_app.launcher import Pipeline
from wordcount_app.settings import WordCountSettings


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_burst_of_identical_errors_is_rate_limited_with_a_summary(capsys):
    setup_logging("INFO")
    (repeats,) = logging.getLogger().handlers[0].filters
    now = [0.0]
    repeats.clock = lambda: now[0]
    broker = logging.getLogger("aiokafka.conn")
    for _ in range(1000):
        broker.error("Unable connect to node with id %d: %s", 1, "Connect call failed")
    broker.error("Unable connect to node with id %d: %s", 2, "Connect call failed")  # another node: its own line
    now[0] = 11.0
    broker.error("Unable connect to node with id %d: %s", 1, "Connect call failed")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert lines[-1].endswith("id 1: Connect call failed (repeated 999 times in 11 s)")


def test_a_configured_log_file_rotates_within_its_bounds(tmp_path):
    log_file = tmp_path / "logs" / "agent.log"
    setup_logging("INFO", log_file, max_bytes=2000, backups=2)
    for n in range(500):
        logging.getLogger("lastream").info("decision %d", n)  # all different: none rate-limited
    parts = sorted(log_file.parent.iterdir())
    assert [p.name for p in parts] == ["agent.log", "agent.log.1", "agent.log.2"]
    assert sum(p.stat().st_size for p in parts) <= 2000 * 3
    assert log_file.read_text().splitlines()[-1].endswith("decision 499")


def test_faust_workers_take_the_same_rate_limit():
    """A WordCount worker hands this config to Faust, which replaces the root handlers with it."""
    faust_setup_logging(loglevel="WARNING", logging_config=logging_config("WARNING"))
    (handler,) = logging.getLogger().handlers
    assert [type(f).__name__ for f in handler.filters] == ["RepeatFilter"]


def test_the_processes_of_up_never_share_its_log_file(tmp_path):
    """`lastream up` with a log file: the supervisor and the source it starts each get their own."""
    settings = LastreamSettings(log_file=tmp_path / "up.log")
    pipeline = Pipeline(settings, WordCountSettings(), tmp_path / "logs")
    child = pipeline.spawn(
        "supervisor", [sys.executable, "-c", "import os; print(os.environ['LASTREAM_LOG_FILE'])"], {}
    )
    assert child.popen.wait(timeout=30) == 0
    assert (tmp_path / "logs" / "supervisor.log").read_text().strip() == str(tmp_path / "logs" / "supervisor.log")
