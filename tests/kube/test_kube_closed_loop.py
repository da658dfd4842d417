"""The whole loop with Kubernetes in the middle: metrics -> agent -> command -> Kubernetes
executor -> Deployment scale -> pods (kwok) -> worker processes -> metrics; and beside it the
KEDA external scaler, answering with the live agent's recommendation.

kwok's pods run nothing, so a small stand-in for the kubelet's container runtime
(``PodWorkers``) starts a real worker process of the plain example app for every Running and
Ready pod, and stops it when the pod goes. It also keeps each operator's state file
(``LASTREAM_WORKER_STATE``) at the number of its running workers, as the local supervisor does.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from control_log import wait_for
from kube_env import deployment
from kubernetes import client, config
from scrape import free_port

from lastream_stream.agent.controller import ControllerSettings
from lastream_stream.agent.service import AgentService
from lastream_stream.agent.settings import AgentServiceSettings
from lastream_stream.keda import externalscaler_pb2 as pb
from lastream_stream.keda import externalscaler_pb2_grpc as pb_grpc
from lastream_stream.keda.service import serve
from lastream_stream.keda.settings import KedaSettings
from lastream_stream.kube.workloads import PARTITIONS_ANNOTATION
from lastream_stream.wire.contracts import CommandAck, DecisionRecord, MetricsReport

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "examples" / "plain_kafka" / "shop.py"
log = logging.getLogger(__name__)


class PodWorkers:
    """A worker process per Running and Ready pod of the namespace, operator = its Deployment."""

    def __init__(self, kubeconfig: Path, namespace: str, env: dict[str, str], workdir: Path) -> None:
        self.core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        self.namespace, self.env, self.workdir = namespace, env, workdir
        self.workers: dict[str, tuple[str, subprocess.Popen]] = {}  # pod name -> (operator, process)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-workers", daemon=True)

    def __enter__(self) -> PodWorkers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._stop_workers(list(self.workers))

    def running(self, operator: str) -> int:
        return sum(1 for op, proc in list(self.workers.values()) if op == operator and proc.poll() is None)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            try:
                pods = [
                    p for p in self.core.list_namespaced_pod(self.namespace).items if "pod" in (p.metadata.labels or {})
                ]
            except Exception:  # the next round asks again; a dead thread would fail the test obscurely
                log.exception("cannot list the pods of %s", self.namespace)
                continue
            # As a kubelet does: a container runs from its pod's start until the pod is deleted,
            # whether or not the pod counts as ready meanwhile.
            alive = {p.metadata.name for p in pods if p.metadata.deletion_timestamp is None}
            started = {
                p.metadata.name: p.metadata.labels["pod"]
                for p in pods
                if p.metadata.name in alive
                and p.status.phase == "Running"
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            }
            self._stop_workers([name for name in self.workers if name not in alive])
            for name, operator in started.items():
                if name not in self.workers:
                    self._write_state(operator, self.running(operator) + 1)
                    self.workers[name] = (operator, self._start(operator, name))
            for operator in {op for op, _ in self.workers.values()}:
                self._write_state(operator, self.running(operator))

    def _start(self, operator: str, pod: str) -> subprocess.Popen:
        env = os.environ | self.env | {"LASTREAM_WORKER_STATE": str(self._state_file(operator))}
        log.info("pod %s is running: starting a %s worker", pod, operator)
        with open(self.workdir / f"{pod}.log", "wb") as out:
            return subprocess.Popen([sys.executable, str(SHOP), operator], env=env, stdout=out, stderr=out, cwd=REPO)

    def _stop_workers(self, pods: list[str]) -> None:
        stopping = [self.workers.pop(name) for name in pods]
        if pods:
            log.info("pod(s) %s gone: stopping their workers", ", ".join(pods))
        for _, proc in stopping:
            proc.send_signal(signal.SIGTERM)
        for _, proc in stopping:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _state_file(self, operator: str) -> Path:
        return self.workdir / f"{operator}.state.json"

    def _write_state(self, operator: str, parallelism: int) -> None:
        tmp = self._state_file(operator).with_suffix(".tmp")
        tmp.write_text(json.dumps({"operator": operator, "parallelism": parallelism}))
        tmp.replace(self._state_file(operator))


@pytest.mark.timeout(600)
def test_through_kubernetes_the_example_scales_out_to_keep_up_then_back_in(
    kube_namespace, run_executor, settings, follow, tmp_path
):
    """30 orders/s at 100 ms each needs 3 parsers or more; after the drop to 3/s, one suffices."""
    ns = kube_namespace()
    for operator, partitions in (("orders", 1), ("parser", 8), ("tally", 8)):
        ns.apply(deployment(operator, "shop", operator, annotations={PARTITIONS_ANNOTATION: str(partitions)}))
    env = settings.process_env() | {
        "SHOP_PREFIX": f"shop-{uuid.uuid4().hex[:8]}",
        "SHOP_REPORT_S": "1",
        "SHOP_RATE": "0:30,60:3",
        "SHOP_PARSER_MS": "100",
    }
    acks = follow(settings.topics.acks, CommandAck)
    reports = follow(settings.topics.metrics, MetricsReport)
    decisions = follow(settings.topics.decisions, DecisionRecord)
    controller = ControllerSettings(window_s=8.0, warmup_s=5.0, outcome_s=16.0, stabilisation_s=30.0)
    service = AgentServiceSettings(
        checkpoint=tmp_path / "agent.pt", llm=False, controller=controller, metrics_port=free_port()
    )
    agent = AgentService(settings, service)
    stop = threading.Event()
    agent_thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)

    def explained(what: str) -> str:
        seen = [f"{d.kind} {d.chosen} held_by={d.held_by} notes={d.notes}" for d in decisions.items]
        return f"{what} (decisions: {seen[-6:]})"

    keda_stop, bound = threading.Event(), []
    keda = threading.Thread(target=serve, args=(settings, KedaSettings(port=0), keda_stop, bound), daemon=True)
    keda.start()
    wait_for(lambda: bound, 30, "the KEDA scaler to listen")
    channel = grpc.insecure_channel(f"127.0.0.1:{bound[0]}")
    scaler = pb_grpc.ExternalScalerStub(channel)

    def keda_metric(operator: str) -> float | None:
        ref = pb.ScaledObjectRef(name=operator, namespace=ns.name, scalerMetadata={"app": "shop", "operator": operator})
        try:
            response = scaler.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref), timeout=5)
        except grpc.RpcError:
            return None
        return response.metricValues[0].metricValueFloat

    started = time.monotonic()
    with PodWorkers(ns.cluster.kubeconfig, ns.name, env, tmp_path) as workers:
        run_executor(ns, ready_timeout_s=60)
        agent_thread.start()
        try:
            out = acks.wait(
                lambda a: a.status == "applied" and a.applied.get("parser", 1) >= 3, 150, explained("a scale-out")
            )[0]
            assert ns.replicas("deployment", "parser") == (out.applied["parser"],) * 2
            out_s = time.monotonic() - started

            # Keeping up: every parser's lag is back under a second of input.
            def caught_up() -> bool:
                latest = {
                    r.instance_id: r
                    for r in list(reports.items)
                    if r.operator == "parser" and r.interval_start >= out.acked_at
                }
                return len(latest) == out.applied["parser"] and all(
                    r.lag is not None and r.lag < 30 for r in latest.values()
                )

            wait_for(caught_up, 120, "every parser catching up")
            keep_up_s = time.monotonic() - started
            assert workers.running("parser") == out.applied["parser"]
            # KEDA, asked now, would follow the agent's live recommendation too.
            wait_for(lambda: keda_metric("parser") == out.applied["parser"], 30, "the KEDA scaler's metric")
            back = acks.wait(
                lambda a: a.generation > out.generation and a.status == "applied" and a.applied.get("parser", 9) < 3,
                300,
                explained("a scale-in after the rate drop"),
            )[0]
            in_s = time.monotonic() - started
            assert ns.replicas("deployment", "parser") == (back.applied["parser"],) * 2
            wait_for(lambda: keda_metric("parser") == back.applied["parser"], 30, "the KEDA scaler's metric")
            commands = [a for a in acks.items if a.status != "stale"]
            log.warning(
                "closed loop through Kubernetes: scale-out acked at %.0f s (parser %d), every parser's lag under 30 "
                "at %.0f s, scale-in acked at %.0f s (parser %d; DS2's optimum at 3/s is 1), %d command(s) acked",
                out_s,
                out.applied["parser"],
                keep_up_s,
                in_s,
                back.applied["parser"],
                len(commands),
            )
        finally:
            stop.set()
            keda_stop.set()
            agent_thread.join(30)
            keda.join(30)
            channel.close()
