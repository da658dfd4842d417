"""What a worker's environment holds: what a process needs to run, the cluster and topics,
the spec's own variables, and never the supervisor's other secrets."""

import json
import sys
import textwrap
from pathlib import Path

from control_log import APP, wait_for

from lastream_stream.settings import KafkaSettings, LastreamSettings
from lastream_stream.supervisor import AppSpec, WorkerSpec
from lastream_stream.supervisor.workers import worker_env

# Dumps its environment (written aside and renamed: the test never reads half of it), then waits.
DUMP_ENV = textwrap.dedent(
    """
    import json, os, sys, time
    out = sys.argv[1]
    with open(out + ".tmp", "w") as f:
        json.dump(dict(os.environ), f)
    os.replace(out + ".tmp", out)
    time.sleep(3600)
    """
)


def dumped_env(tmp_path: Path, **spec: object) -> tuple[AppSpec, Path]:
    out = tmp_path / "env.json"
    worker = WorkerSpec(command=[sys.executable, "-c", DUMP_ENV, str(out)], partitions=1, **spec)
    return AppSpec(app=APP, operators={"dumper": worker}), out


def read_env(out: Path) -> dict[str, str]:
    wait_for(out.exists, what="the worker to dump its environment")
    return json.loads(out.read_text())


def test_a_worker_gets_neither_the_supervisors_secrets_nor_its_other_variables(
    tmp_path, monkeypatch, settings, supervise
):
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-supervisor-only")
    monkeypatch.setenv("LASTREAM_LLM_API_KEY", "sk-llm")
    monkeypatch.setenv("LASTREAM_CONTROL_KEYS", "signing-key")
    monkeypatch.setenv("UNRELATED_TOKEN", "t0k3n")
    spec, out = dumped_env(tmp_path, env={"WORKER_SETTING": "42"})
    supervise(spec)

    env = read_env(out)
    leaked = {"DEEPSEEK_API_KEY", "LASTREAM_LLM_API_KEY", "LASTREAM_CONTROL_KEYS", "UNRELATED_TOKEN"} & set(env)
    assert not leaked
    assert env["WORKER_SETTING"] == "42"
    assert env["PATH"] and env["LASTREAM_WORKER_OPERATOR"] == "dumper"
    # The supervisor's cluster and topics, even when it was configured in code, not by environment.
    assert env["LASTREAM_KAFKA_BOOTSTRAP"] == settings.kafka.bootstrap
    assert env["LASTREAM_TOPIC_METRICS"] == settings.topics.metrics


def test_a_spec_names_the_supervisor_variables_its_workers_receive(tmp_path, monkeypatch, supervise):
    monkeypatch.setenv("ORDERS_DB_PASSWORD", "for-the-workers")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-supervisor-only")
    spec, out = dumped_env(tmp_path, pass_env=["ORDERS_DB_PASSWORD", "NOT_SET_ANYWHERE"])
    supervise(spec)

    env = read_env(out)
    assert env["ORDERS_DB_PASSWORD"] == "for-the-workers"
    assert "NOT_SET_ANYWHERE" not in env and "DEEPSEEK_API_KEY" not in env


def test_workers_receive_the_kafka_credentials_they_need_to_reach_the_cluster(monkeypatch):
    kafka = KafkaSettings(
        bootstrap="broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="worker",
        sasl_password="s3cret",
        extra={"ssl.ca.location": "/ca.pem", "ssl.key.password": "k3y"},
    )
    env = worker_env(
        {"PATH": "/bin"}, LastreamSettings(kafka=kafka).process_env(), WorkerSpec(command=["x"], partitions=1)
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    received = KafkaSettings()
    assert received.sasl_password.get_secret_value() == "s3cret"
    assert received.extra_options() == {"ssl.ca.location": "/ca.pem", "ssl.key.password": "k3y"}
    assert (received.bootstrap, received.security_protocol, received.sasl_username) == (
        "broker:9093",
        "SASL_SSL",
        "worker",
    )
