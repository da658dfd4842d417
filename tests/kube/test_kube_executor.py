"""The Kubernetes executor against a real API server: labelled Deployments scaled through
their scale subresource, acks that wait for ready pods, refusals with their reason (a
namespace the Role is not bound in, an HPA on the same object), and the manifests applied."""

from __future__ import annotations

import uuid

from control_log import AckStream, command, publish
from kube_env import MANIFESTS, deployment, overlay

HPA = """apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: {name}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {target}}}
  minReplicas: 1
  maxReplicas: 5
  metrics:
    - type: Resource
      resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 80}}}}
"""


def fresh_app() -> str:
    return f"app-{uuid.uuid4().hex[:8]}"


def test_a_command_scales_the_labelled_workloads_and_the_ack_waits_for_ready_pods(
    kube_namespace, run_executor, clients, settings, acks: AckStream
):
    ns = kube_namespace()
    app = fresh_app()
    ns.apply(deployment("parse", app, "parse") + "---\n" + deployment("count", app, "count", 2, kind="StatefulSet"))
    run_executor(ns)

    publish(clients, settings, command(1, app=app, parse=3, count=4))
    ack = acks.until(1, timeout_s=60)
    assert ack.status == "applied" and ack.applied == {"parse": 3, "count": 4}, ack
    # The ack came once the pods were ready, not at the patch.
    assert ns.replicas("deployment", "parse") == (3, 3)
    assert ns.replicas("statefulset", "count") == (4, 4)

    publish(clients, settings, command(2, app=app, parse=1, count=2))
    ack = acks.until(2, timeout_s=60)
    assert ack.status == "applied" and ack.applied == {"parse": 1, "count": 2}, ack
    assert ns.replicas("deployment", "parse") == (1, 1)
    assert ns.replicas("statefulset", "count") == (2, 2)


def test_a_namespace_the_role_is_not_bound_in_is_refused_with_its_reason_and_nothing_else_changes(
    kube_namespace, run_executor, clients, settings, acks: AckStream
):
    ns = kube_namespace()
    foreign = kube_namespace(lastream=False)  # no RoleBinding of the executor there
    app = fresh_app()
    ns.apply(deployment("parse", app, "parse"))
    foreign.apply(deployment("store", app, "store"))
    run_executor(ns, namespaces=[ns.name, foreign.name])

    publish(clients, settings, command(1, app=app, parse=2, store=3))
    ack = acks.until(1, timeout_s=60)
    assert ack.status == "partial", ack
    assert ack.applied == {"parse": 2}, ack
    assert "unknown operator(s): store" in ack.error and f"namespace {foreign.name}: forbidden" in ack.error, ack.error
    assert foreign.replicas("deployment", "store") == (1, 1)  # untouched

    # The README's remedy: the executor's Role in the app's namespace, bound to its account.
    rbac = (MANIFESTS / "app-namespace-rbac.yaml").read_text().replace("namespace: lastream", f"namespace: {ns.name}")
    foreign.apply(rbac)
    publish(clients, settings, command(2, app=app, parse=2, store=3))
    ack = acks.until(2, timeout_s=60)
    assert (ack.status, ack.applied) == ("applied", {"parse": 2, "store": 3}), ack
    assert foreign.replicas("deployment", "store") == (3, 3)


def test_a_deployment_another_autoscaler_targets_is_refused_not_fought(
    kube_namespace, run_executor, clients, settings, acks: AckStream
):
    ns = kube_namespace()
    app = fresh_app()
    ns.apply(deployment("parse", app, "parse") + "---\n" + deployment("count", app, "count"))
    ns.apply(HPA.format(name="parse-cpu", target="parse"))
    run_executor(ns)

    publish(clients, settings, command(1, app=app, parse=4, count=2))
    ack = acks.until(1, timeout_s=60)
    assert (ack.status, ack.applied) == ("applied", {"parse": 1, "count": 2}), ack
    assert ack.clamped == {"parse": 4}, ack
    assert "HorizontalPodAutoscaler parse-cpu scales it" in ack.error, ack.error
    assert ns.replicas("deployment", "parse")[0] == 1
    # The HPA moves it: its replicas are the HPA's business, and no ack holds them against LaStream.
    ns.cluster.kubectl("scale", "deployment", "parse", "--replicas=3", "-n", ns.name)
    publish(clients, settings, command(2, app=app, parse=1, count=1))
    ack = acks.until(2, timeout_s=60)
    assert ack.status == "applied" and ack.applied["count"] == 1, ack


def test_the_shipped_manifests_apply_cleanly(kube_cluster, kube_namespace, tmp_path):
    ns = kube_namespace(lastream=False)
    shipped = str(overlay(tmp_path, ns.name))
    out = kube_cluster.kubectl("apply", "-k", shipped, "--dry-run=server")
    for kind in ("serviceaccount", "role.rbac", "rolebinding.rbac", "configmap", "secret", "deployment.apps"):
        assert f"{kind}" in out and "(server dry run)" in out, out
    keda = kube_cluster.kubectl("apply", "-n", ns.name, "-f", str(MANIFESTS / "keda-scaler.yaml"), "--dry-run=server")
    assert "deployment.apps/lastream-keda-scaler created (server dry run)" in keda, keda
    # The executor's Role: it may patch a Deployment's scale, and nothing else of it.
    sa = f"--as=system:serviceaccount:{ns.name}:lastream-executor"
    kube_cluster.kubectl("apply", "-k", shipped)
    assert (
        kube_cluster.kubectl("auth", "can-i", "patch", "deployments", "--subresource=scale", "-n", ns.name, sa).strip()
        == "yes"
    )
    for verb, resource in (
        ("patch", "deployments"),
        ("delete", "deployments"),
        ("create", "pods"),
        ("list", "secrets"),
    ):
        result = kube_cluster.kubectl("auth", "can-i", verb, resource, "-n", ns.name, sa, check=False)
        assert result.strip() == "no", (verb, resource, result)
