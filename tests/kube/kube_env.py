"""What the Kubernetes tests share besides fixtures: a namespace's handle, labelled workloads,
and the overlay that puts the shipped manifests in a namespace (a module of its own, so that
test modules import it by a name no other directory's module has)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from lastream_stream.kube.localcluster import LocalCluster
from lastream_stream.kube.workloads import APP_LABEL, OPERATOR_LABEL

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


@dataclass
class Namespace:
    name: str
    cluster: LocalCluster
    kubeconfig: Path  # the executor's: the shipped ServiceAccount's token, not the admin's

    def apply(self, manifest: str) -> None:
        self.cluster.kubectl("apply", "-n", self.name, "-f", "-", input=manifest)

    def replicas(self, kind: str, name: str) -> tuple[int, int]:
        """(spec.replicas, status.readyReplicas) as the admin reads them."""
        out = self.cluster.kubectl(
            "get", kind, name, "-n", self.name, "-o", "jsonpath={.spec.replicas} {.status.readyReplicas}"
        )
        spec, _, ready = out.partition(" ")
        return int(spec), int(ready or 0)


def deployment(
    name: str,
    app: str,
    operator: str,
    replicas: int = 1,
    node_labels: dict | None = None,
    annotations: dict | None = None,
    kind: str = "Deployment",
) -> str:
    """A labelled Deployment (or StatefulSet) whose pods kwok runs (on a node carrying ``node_labels`` too)."""
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {
                "name": name,
                "labels": {APP_LABEL: app, OPERATOR_LABEL: operator},
                "annotations": annotations or {},
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"pod": name}},
                "template": {
                    "metadata": {"labels": {"pod": name}},
                    "spec": {
                        "nodeSelector": {"type": "kwok", **(node_labels or {})},
                        "containers": [{"name": "worker", "image": "example/worker:1"}],
                    },
                },
            },
        }
    )


def overlay(parent: Path, namespace: str) -> Path:
    """A kustomize overlay that puts the shipped manifests in ``namespace``, as the README says."""
    path = parent / f"overlay-{namespace}"
    path.mkdir()
    base = os.path.relpath(MANIFESTS, path)  # kustomize takes no absolute base
    (path / "kustomization.yaml").write_text(f"namespace: {namespace}\nresources:\n  - {base}\n")
    return path
