"""``lastream kube-executor`` and ``python -m lastream_stream.kube``: one click command."""

from __future__ import annotations

from pathlib import Path

import click

from lastream_stream.kube.settings import KubeSettings
from lastream_stream.settings import LastreamSettings


@click.command("kube-executor")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="A namespace whose labelled Deployments and StatefulSets to scale (repeatable; default "
    "LASTREAM_KUBE_NAMESPACES, else default).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The kubeconfig (default LASTREAM_KUBE_KUBECONFIG, else the pod's service account, else ~/.kube/config).",
)
@click.pass_context
def kube_executor_command(ctx: click.Context, namespaces: tuple[str, ...], kubeconfig: str | None) -> None:
    """Apply the scaling commands on the control topic to every app on Kubernetes: each operator is
    a Deployment or StatefulSet labelled lastream.io/app and lastream.io/operator, scaled through
    its scale subresource (README, 'Run on Kubernetes'). Run two: a Lease elects the one that applies."""
    from lastream_stream.kube import executor  # the Kubernetes client loads only for this command

    settings = ctx.obj if isinstance(ctx.obj, LastreamSettings) else LastreamSettings()
    update: dict[str, object] = {"namespaces": list(namespaces)} if namespaces else {}
    if kubeconfig:
        update["kubeconfig"] = Path(kubeconfig)
    executor.run(settings, KubeSettings().model_copy(update=update))
