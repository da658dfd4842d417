"""An app's operators as Kubernetes sees them: the Deployments and StatefulSets labelled
``lastream.io/app`` and ``lastream.io/operator`` in the executor's namespaces, each with what
bounds its parallelism, read through the official client.

Only two things are ever written: ``spec.replicas`` through an object's ``scale``
subresource (``scale``), and the executor's Lease (``lease.py``). An object another
autoscaler already targets (a HorizontalPodAutoscaler, or a KEDA ScaledObject, which works
through one) is fixed: LaStream never fights another autoscaler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

APP_LABEL = "lastream.io/app"
OPERATOR_LABEL = "lastream.io/operator"
# The operator's input partitions, the most instances that can share its work.
PARTITIONS_ANNOTATION = "lastream.io/partitions"
REPLICAS_MAX = 2**31 - 1  # spec.replicas is an int32: the cap without the annotation
KINDS = ("Deployment", "StatefulSet")
TIMEOUT_S = 10.0  # per API call: an executor cut off from the API server must notice, not hang


@dataclass(frozen=True)
class Workload:
    """One operator's object: what the verdicts need (``OperatorBounds``) and its replicas."""

    namespace: str
    kind: str  # Deployment or StatefulSet
    name: str
    replicas: int  # spec: what is asked for
    ready: int  # status: ready pods of the current spec
    updated: bool  # the controller has seen the latest spec, and no surplus pod is left
    partitions: int = REPLICAS_MAX
    fixed_by: str | None = None  # another autoscaler, or a second object claiming the operator

    @property
    def scalable(self) -> bool:
        return self.fixed_by is None

    @property
    def fixed_because(self) -> str:
        return self.fixed_by or ""

    @property
    def managed(self) -> bool:
        return self.fixed_by is None  # another autoscaler's replicas are not LaStream's to reach

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name} in {self.namespace}"


@dataclass(frozen=True)
class KubeApp:
    """One app's operators on the cluster (``AppBounds``), and what could not be read."""

    app: str
    operators: dict[str, Workload] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # namespaces it may not read, objects it cannot use


class Cluster:
    """Reads and scales labelled workloads through one API client."""

    def __init__(self, api: client.ApiClient, namespaces: list[str]) -> None:
        self.namespaces = namespaces
        self.apps_v1 = client.AppsV1Api(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self.custom = client.CustomObjectsApi(api)

    def apps(self) -> set[str]:
        """Every app with a labelled workload in a namespace it may read."""
        found = set()
        for namespace in self.namespaces:
            for kind in KINDS:
                try:
                    items = self._list(kind, namespace, APP_LABEL)
                except ApiException:
                    continue  # said by ``read``, where it is also put in the ack
                found |= {item.metadata.labels[APP_LABEL] for item in items}
        return found

    def read(self, app: str) -> KubeApp:
        operators: dict[str, Workload] = {}
        problems: list[str] = []
        for namespace in self.namespaces:
            try:
                taken = self._autoscaled(namespace)
                for kind in KINDS:
                    for item in self._list(kind, namespace, f"{APP_LABEL}={app}"):
                        workload, problem = _workload(kind, item, taken)
                        if problem:
                            problems.append(problem)
                            continue
                        operator = item.metadata.labels[OPERATOR_LABEL]
                        if operator in operators:
                            first = operators[operator]
                            why = f"{first.ref} and {workload.ref} both claim operator {operator}"
                            operators[operator] = replace(first, fixed_by=why)
                            problems.append(why)
                            continue
                        operators[operator] = workload
            except ApiException as exc:
                problems.append(f"namespace {namespace}: {api_problem(exc)}")
        return KubeApp(app, operators, tuple(problems))

    def scale(self, workload: Workload, replicas: int) -> None:
        """Set ``spec.replicas`` through the scale subresource; nothing else of the object."""
        body = {"spec": {"replicas": replicas}}
        if workload.kind == "Deployment":
            self.apps_v1.patch_namespaced_deployment_scale(
                workload.name, workload.namespace, body, _request_timeout=TIMEOUT_S
            )
        else:
            self.apps_v1.patch_namespaced_stateful_set_scale(
                workload.name, workload.namespace, body, _request_timeout=TIMEOUT_S
            )

    def _list(self, kind: str, namespace: str, selector: str) -> list:
        if kind == "Deployment":
            return self.apps_v1.list_namespaced_deployment(
                namespace, label_selector=selector, _request_timeout=TIMEOUT_S
            ).items
        return self.apps_v1.list_namespaced_stateful_set(
            namespace, label_selector=selector, _request_timeout=TIMEOUT_S
        ).items

    def _autoscaled(self, namespace: str) -> dict[tuple[str, str], str]:
        """(kind, name) -> the autoscaler that targets it, for every HPA and ScaledObject here."""
        taken = {}
        for hpa in self.autoscaling.list_namespaced_horizontal_pod_autoscaler(
            namespace, _request_timeout=TIMEOUT_S
        ).items:
            target = hpa.spec.scale_target_ref
            taken[(target.kind, target.name)] = f"HorizontalPodAutoscaler {hpa.metadata.name}"
        try:
            scaled = self.custom.list_namespaced_custom_object(
                "keda.sh", "v1alpha1", namespace, "scaledobjects", _request_timeout=TIMEOUT_S
            )
        except ApiException as exc:
            if exc.status != 404:  # 404: KEDA is not installed
                raise
            scaled = {"items": []}
        for item in scaled["items"]:
            target = item.get("spec", {}).get("scaleTargetRef", {})
            kind = target.get("kind", "Deployment")
            taken.setdefault((kind, target.get("name")), f"KEDA ScaledObject {item['metadata']['name']}")
        return taken


def _workload(kind: str, item, taken: dict[tuple[str, str], str]) -> tuple[Workload | None, str | None]:
    meta, spec, status = item.metadata, item.spec, item.status
    ref = f"{kind}/{meta.name} in {meta.namespace}"
    if not meta.labels.get(OPERATOR_LABEL):
        return None, f"{ref} has {APP_LABEL} but no {OPERATOR_LABEL} label"
    partitions = REPLICAS_MAX
    raw = (meta.annotations or {}).get(PARTITIONS_ANNOTATION)
    if raw is not None:
        try:
            partitions = int(raw)
            if partitions < 1:
                raise ValueError
        except ValueError:
            return None, f"{ref}: annotation {PARTITIONS_ANNOTATION}={raw!r} is not a positive integer"
    replicas = spec.replicas if spec.replicas is not None else 1
    observed = (status.observed_generation or 0) >= (meta.generation or 0)
    # status.replicas counts the pods the controller keeps: a scale-out's new pods are counted
    # at once, a scale-in's surplus ones no longer once they are terminating.
    updated = observed and (status.replicas or 0) == replicas
    fixed_by = None
    if autoscaler := taken.get((kind, meta.name)):
        fixed_by = f"{autoscaler} scales it; LaStream does not fight another autoscaler"
    workload = Workload(
        meta.namespace, kind, meta.name, replicas, status.ready_replicas or 0, updated, partitions, fixed_by
    )
    return workload, None


def api_problem(exc: ApiException) -> str:
    if exc.status == 403:
        return f"forbidden ({exc.reason}): the executor's Role is not bound there or does not allow it"
    return f"{exc.status} {exc.reason}"
