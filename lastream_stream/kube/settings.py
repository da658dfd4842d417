"""Kubernetes executor settings, from ``LASTREAM_KUBE_*`` environment variables."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lastream_stream.exposition import MetricsEndpoint


class KubeSettings(BaseSettings, MetricsEndpoint):
    """The Kubernetes executor (`lastream kube-executor`)."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_KUBE_", extra="ignore")

    metrics_port: int = Field(default=9466, ge=1, le=65535, description="Port of the executor's Prometheus metrics.")
    namespaces: list[str] = Field(
        default_factory=lambda: ["default"],
        min_length=1,
        description='Namespaces whose labelled Deployments and StatefulSets it scales, e.g. `["apps"]`.',
    )
    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig to use; unset: the pod's service account inside a cluster, else `~/.kube/config`.",
    )
    ready_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long a command waits for its new pods to be ready before the ack says `partial` with what is.",
    )
    poll_s: float = Field(default=0.5, gt=0, description="How often readiness is read while a scale is in progress.")
    refresh_s: float = Field(
        default=10.0, gt=0, description="How often workloads, HPAs and ScaledObjects are read again between commands."
    )
    lease_name: str = Field(default="lastream-executor", description="The Lease that elects the replica that applies.")
    lease_namespace: str | None = Field(
        default=None, description="Namespace of the Lease; unset: the first of the namespaces."
    )
    lease_duration_s: float = Field(
        default=15.0, gt=0, description="A Lease not renewed for this long is taken over by another replica."
    )
    renew_s: float = Field(default=5.0, gt=0, description="How often the leader renews its Lease.")
    identity: str | None = Field(
        default=None,
        description="This replica's name in the Lease; unset: its host name and pid (in a pod: the pod's name).",
    )

    @property
    def lease_home(self) -> str:
        return self.lease_namespace or self.namespaces[0]

    @property
    def holder(self) -> str:
        return self.identity or f"{socket.gethostname()}-{os.getpid()}"
