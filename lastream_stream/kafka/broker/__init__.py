"""A real single-node Apache Kafka broker (KRaft, combined broker + controller) for dev and tests.

The jars come from Maven Central through the checked-in ``pom.xml`` and are cached outside
the repo (``LASTREAM_BROKER_HOME``, default ``$LASTREAM_HOME``, ``~/.cache/lastream``); the broker runs on the
machine's Java 17, listens on 127.0.0.1 only, and logs to ``<home>/broker/broker.log``.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from lastream_stream.kafka.clients import BrokerUnreachable, KafkaClients
from lastream_stream.settings import BrokerSettings, KafkaSettings

log = logging.getLogger(__name__)

POM = Path(__file__).with_name("pom.xml")


class MissingTool(RuntimeError):
    """Java or Maven is not installed; the message says which and how to get it."""


@dataclass
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    log_file: Path


class LocalBroker:
    def __init__(self, settings: BrokerSettings | None = None) -> None:
        self.settings = settings or BrokerSettings()
        home = self.settings.home
        self.libs = home / f"kafka-{self.settings.kafka_version}" / "libs"
        self.run_dir = home / "broker"
        self.data_dir = self.run_dir / "data"
        self.pid_file = self.run_dir / "broker.pid"
        self.log_file = self.run_dir / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.port}"

    def _clients(self) -> KafkaClients:
        return KafkaClients(KafkaSettings(bootstrap=self.bootstrap, timeout_s=2.0))

    def status(self) -> BrokerStatus:
        pid = self._pid()
        return BrokerStatus(running=pid is not None, pid=pid, bootstrap=self.bootstrap, log_file=self.log_file)

    def start(self) -> BrokerStatus:
        """Start the broker unless it already runs; return once it answers metadata."""
        if self._pid() is not None:
            self._wait_ready()
            return self.status()
        java = _require(
            "java", "Java 17 is missing: install OpenJDK 17 (e.g. `apt-get install openjdk-17-jre-headless`)."
        )
        self.resolve_jars()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            cluster_id = _kraft_cluster_id()
            self._java(java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), check=True)
        log.info("starting Kafka %s on %s (log: %s)", self.settings.kafka_version, self.bootstrap, self.log_file)
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(
                self._java_cmd(java, "kafka.Kafka", str(config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid} {psutil.Process(proc.pid).create_time()}")
        try:
            self._wait_ready(proc)
        except BaseException:
            self.stop()
            raise
        return self.status()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM (Kafka shuts down cleanly), SIGKILL after ``timeout_s``. True if it was running."""
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            log.warning("broker %d ignored SIGTERM for %.0f s, killing it", pid, timeout_s)
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def resolve_jars(self) -> None:
        """Fetch the Kafka jars from Maven Central once; later starts reuse the cache."""
        if self.libs.is_dir() and any(self.libs.glob("kafka_2.13-*.jar")):
            return
        mvn = _require("mvn", "Maven is missing: install it (e.g. `apt-get install maven`) to fetch the Kafka jars.")
        log.info("resolving Kafka %s jars with Maven into %s", self.settings.kafka_version, self.libs)
        partial = self.libs.with_name("libs.partial")
        shutil.rmtree(partial, ignore_errors=True)
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-Dkafka.version={self.settings.kafka_version}",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={partial}",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"mvn could not resolve the Kafka jars:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        partial.rename(self.libs)

    def _write_config(self) -> Path:
        s = self.settings
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{s.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{s.port},CONTROLLER://127.0.0.1:{s.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{s.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            # A dev broker on one machine: rebalances must not wait for more members to join.
            "group.initial.rebalance.delay.ms": "0",
            # Topics are made by `lastream topics ensure` with the configuration they need, never
            # by a first produce with the broker defaults (an uncompacted control topic).
            "auto.create.topics.enable": "false",
            "log.cleaner.backoff.ms": "1000",
        }
        config = self.run_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.run_dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka.request.logger=WARN\n"
            "log4j.logger.state.change.logger=WARN\n"
        )
        return config

    def _java_cmd(self, java: str, main: str, *args: str) -> list[str]:
        return [
            java,
            f"-Xmx{self.settings.heap}",
            f"-Xms{self.settings.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.run_dir / 'log4j.properties'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _java(self, java: str, main: str, *args: str, check: bool) -> None:
        result = subprocess.run(self._java_cmd(java, main, *args), capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"{main} {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def _wait_ready(self, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        clients = self._clients()
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"Kafka exited with code {proc.returncode}; last log lines:\n{self._log_tail()}")
            try:
                clients.metadata(timeout_s=2.0)
                return
            except BrokerUnreachable:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Kafka did not answer on {self.bootstrap} within {self.settings.start_timeout_s:.0f} s; "
                        f"last log lines:\n{self._log_tail()}"
                    ) from None

    def _log_tail(self, lines: int = 20) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def _pid(self) -> int | None:
        """The broker's pid, if the process recorded in the pid file still runs: the start
        time must match too, or a reused pid (after a reboot) would be taken for the broker."""
        try:
            pid_text, started_text = self.pid_file.read_text().split()
            pid, started = int(pid_text), float(started_text)
        except (FileNotFoundError, ValueError):
            return None
        if not _alive(pid):
            return None
        try:
            return pid if abs(psutil.Process(pid).create_time() - started) < 1.0 else None
        except psutil.NoSuchProcess:
            return None


def _require(tool: str, message: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingTool(message)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child still answers kill(0): reap it
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def _kraft_cluster_id() -> str:
    """KRaft wants a 22-character base64url UUID, what ``StorageTool random-uuid`` prints."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
