"""Fixtures for the Kubernetes tests: a real control plane per test module (etcd,
kube-apiserver, controller manager, scheduler, kwok as the node), fresh namespaces with the
shipped manifests applied, and executors that run with the shipped Role's token."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from control_log import wait_for
from kube_env import Namespace, overlay

from lastream_stream.kube.executor import Executor
from lastream_stream.kube.localcluster import LocalCluster, MissingBinaries, kubeconfig_yaml
from lastream_stream.kube.settings import KubeSettings
from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor import SupervisorSettings


# Per module (about 5 s to start): the control plane is gone before the rest of the suite runs.
@pytest.fixture(scope="module")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("kube"))
    try:
        cluster.start()
    except (MissingBinaries, RuntimeError, OSError) as exc:
        pytest.fail(f"cannot start the local Kubernetes control plane: {exc}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture
def kube_namespace(kube_cluster: LocalCluster, tmp_path: Path) -> Callable[..., Namespace]:
    """Factory of fresh namespaces; with ``lastream=True`` the shipped manifests are applied
    there (kustomize overlay) and the namespace's kubeconfig holds the executor's token."""

    def make(lastream: bool = True) -> Namespace:
        name = f"t-{uuid.uuid4().hex[:10]}"
        kube_cluster.kubectl("create", "namespace", name)
        kubeconfig = kube_cluster.kubeconfig
        if lastream:
            kube_cluster.kubectl("apply", "-k", str(overlay(tmp_path, name)))
            token = kube_cluster.kubectl("create", "token", "lastream-executor", "-n", name).strip()
            kubeconfig = tmp_path / f"executor-{name}.kubeconfig"
            kubeconfig.write_text(
                kubeconfig_yaml(kube_cluster.server, kube_cluster.ca, "lastream-executor", token, name)
            )
        return Namespace(name, kube_cluster, kubeconfig)

    return make


@pytest.fixture
def run_executor(settings: LastreamSettings) -> Iterator[Callable[..., Executor]]:
    """Run Kubernetes executors in threads until the test ends; returns each once it holds the
    Lease (``leading=True``) or has tried to (``leading=False``)."""
    running: list[tuple[Executor, threading.Event, threading.Thread]] = []

    def start(namespace: Namespace, namespaces: list[str] | None = None, leading: bool = True, **kube) -> Executor:
        kube_settings = KubeSettings(
            kubeconfig=namespace.kubeconfig,
            namespaces=namespaces or [namespace.name],
            lease_namespace=namespace.name,
            metrics_enabled=False,
            renew_s=0.3,
            lease_duration_s=3.0,
            poll_s=0.2,
            refresh_s=1.0,
            **kube,
        )
        executor = Executor(settings, kube_settings, SupervisorSettings(tick_s=0.05))
        stop = threading.Event()
        thread = threading.Thread(target=executor.run, args=(stop,), name="executor", daemon=True)
        thread.start()
        running.append((executor, stop, thread))
        if leading:
            wait_for(
                lambda: executor.leading and all(c.supervisor.status().ready for c in executor.cycles.values()),
                timeout_s=30,
                what="the executor to lead",
            )
        return executor

    yield start
    for _, stop, _ in running:
        stop.set()
    for _, _, thread in running:
        thread.join(timeout=30)
        assert not thread.is_alive(), "executor did not stop"
