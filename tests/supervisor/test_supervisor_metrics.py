"""A supervisor's Prometheus metrics over real HTTP, run as `lastream supervisor` runs it:
commands applied and stale, a crashed worker restarted, a malformed command dead-lettered."""

import logging
import os
import signal
import socket
import threading
import urllib.error

import pytest
from control_log import APP, command, publish, wait_for
from scrape import Scrape, free_port

from lastream_stream.supervisor.service import run


def scrape_when_up(url: str) -> Scrape | None:
    try:
        return Scrape(url)
    except urllib.error.URLError:
        return None


def test_the_supervisor_serves_its_workers_commands_and_dead_letters(settings, clients, workers, acks, sup_config):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    stop = threading.Event()
    thread = threading.Thread(
        target=run, args=(settings, workers.spec(), stop, sup_config.model_copy(update={"metrics_port": port}))
    )
    thread.start()
    try:

        def running(operator: str, n: int):
            scrape = scrape_when_up(url)
            running = scrape and scrape.value("lastream_supervisor_running_workers", app=APP, operator=operator)
            return scrape if running == n else None

        scrape = wait_for(lambda: running("counter", 1), what="the supervisor's workers on /metrics")
        assert scrape.value("lastream_supervisor_desired_parallelism", app=APP, operator="splitter") == 1
        assert scrape.value("lastream_supervisor_commands_total", app=APP, status="applied") == 0
        assert scrape.value("lastream_dead_letters_total", consumer=f"supervisor-{APP}") == 0

        publish(clients, settings, command(1, splitter=3))
        assert acks.next().status == "applied"
        publish(clients, settings, command(1, splitter=2), b"\x00not a command")
        assert acks.next().status == "stale"
        os.kill(workers.live()[("counter", 0)], signal.SIGKILL)
        scrape = wait_for(
            lambda: (
                (s := running("counter", 1))
                and s.value("lastream_supervisor_worker_restarts_total", app=APP, operator="counter") == 1
                and s.value("lastream_dead_letters_total", consumer=f"supervisor-{APP}") == 1
                and s
            ),
            what="the restart and the dead letter on /metrics",
        )
    finally:
        stop.set()
        thread.join(30)
    assert scrape.value("lastream_supervisor_desired_parallelism", app=APP, operator="splitter") == 3
    assert scrape.value("lastream_supervisor_running_workers", app=APP, operator="splitter") == 3
    assert scrape.value("lastream_supervisor_worker_restarts_total", app=APP, operator="splitter") == 0
    assert scrape.value("lastream_supervisor_commands_total", app=APP, status="applied") == 1
    assert scrape.value("lastream_supervisor_commands_total", app=APP, status="stale") == 1
    assert not thread.is_alive()
    with pytest.raises(urllib.error.URLError):  # the server stopped with the supervisor
        Scrape(url)


def test_a_supervisor_whose_metrics_port_is_taken_supervises_anyway(settings, workers, acks, sup_config, caplog):
    """Another app's supervisor on this host holds the default port: the workers matter more."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stop = threading.Event()
        config = sup_config.model_copy(update={"metrics_port": port})
        thread = threading.Thread(target=run, args=(settings, workers.spec(), stop, config))
        with caplog.at_level(logging.ERROR, logger="lastream_stream.supervisor.service"):
            thread.start()
            try:
                wait_for(lambda: ("counter", 0) in workers.live(), what="the supervisor's workers")
            finally:
                stop.set()
                thread.join(60)
    (error,) = [r.getMessage() for r in caplog.records]
    assert "set LASTREAM_SUPERVISOR_METRICS_PORT to a free port" in error and "supervising without metrics" in error
