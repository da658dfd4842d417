"""Two executors, one Lease: the one holding it is killed in the middle of a scale, the other
takes the Lease over, finishes the scale and acknowledges it, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from control_log import command, publish, read_all, wait_for
from kube_env import deployment

from lastream_stream.kube.localcluster import FAKE_NODE
from lastream_stream.wire.contracts import CommandAck


def lease_holder(ns) -> str | None:
    out = ns.cluster.kubectl("get", "lease", "lastream-executor", "-n", ns.name, "-o", "json", check=False)
    return json.loads(out)["spec"].get("holderIdentity") if out else None


def test_the_standby_executor_finishes_a_scale_the_killed_leader_began_and_acks_it_once(
    kube_namespace, settings, clients, tmp_path
):
    ns = kube_namespace()
    app = f"app-{uuid.uuid4().hex[:8]}"
    # Its new pods stay Pending until the node gets this label: a scale that cannot finish yet.
    gate = {f"lastream-test/{uuid.uuid4().hex[:8]}": "yes"}
    ns.apply(deployment("parse", app, "parse", node_labels=gate))
    env = os.environ | {
        "LASTREAM_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
        "LASTREAM_TOPIC_CONTROL": settings.topics.control,
        "LASTREAM_TOPIC_ACKS": settings.topics.acks,
        "LASTREAM_TOPIC_DEADLETTER": settings.topics.deadletter,
        "LASTREAM_KUBE_LEASE_DURATION_S": "3",
        "LASTREAM_KUBE_RENEW_S": "0.5",
        "LASTREAM_KUBE_POLL_S": "0.2",
        "LASTREAM_KUBE_METRICS_ENABLED": "false",
    }
    argv = [sys.executable, "-m", "lastream_stream.kube"]
    argv += ["--namespace", ns.name, "--kubeconfig", str(ns.kubeconfig)]
    executors = {}
    for name in ("first", "second"):
        log_file = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        executors[name] = (
            subprocess.Popen(argv, env=env | {"LASTREAM_KUBE_IDENTITY": name}, stdout=log_file, stderr=log_file),
            log_file,
        )
        if name == "first":
            wait_for(lambda: lease_holder(ns) == "first", timeout_s=60, what="the first executor to hold the Lease")
    try:
        publish(clients, settings, command(1, app=app, parse=3))
        wait_for(lambda: ns.replicas("deployment", "parse")[0] == 3, timeout_s=60, what="the leader's patch")
        assert lease_holder(ns) == "first"
        executors["first"][0].kill()
        executors["first"][0].wait()
        ns.cluster.kubectl("label", "node", FAKE_NODE, *(f"{k}={v}" for k, v in gate.items()))

        wait_for(lambda: lease_holder(ns) == "second", timeout_s=30, what="the second executor to take the Lease")
        ours = lambda: [a for a in read_all(clients, settings.topics.acks, CommandAck) if a.app == app]  # noqa: E731
        acks = wait_for(ours, timeout_s=60, what="the ack of the scale")
        assert [(a.generation, a.status, a.applied) for a in acks] == [(1, "applied", {"parse": 3})]
        assert ns.replicas("deployment", "parse") == (3, 3)
        # Nothing else comes: the killed leader never acked, the new one acked once.
        publish(clients, settings, command(2, app=app, parse=2))
        wait_for(lambda: len(ours()) == 2, timeout_s=60, what="the ack of the next command")
        assert [(a.generation, a.status) for a in ours()] == [(1, "applied"), (2, "applied")]
    finally:
        for process, log_file in executors.values():
            process.terminate()
            process.wait(timeout=30)
            log_file.close()
        ns.cluster.kubectl("label", "node", FAKE_NODE, *(f"{k}-" for k in gate))
    logs = (tmp_path / "second.log").read_text()
    assert "taking over Lease" in logs, logs
