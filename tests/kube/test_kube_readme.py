"""The README's "Run on Kubernetes" against the suite's API server: the files it names exist,
its labelled Deployment is accepted and found by the executor's reading of labels, and its
ScaledObject names what the KEDA scaler requires."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from lastream_stream.kube.workloads import APP_LABEL, OPERATOR_LABEL, PARTITIONS_ANNOTATION

REPO = Path(__file__).resolve().parents[2]


def section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Run on Kubernetes")
    return text[start : text.index("\n## ", start + 1)]


def yaml_blocks() -> list[dict]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section(), re.S)]


def test_every_file_the_section_names_exists():
    named = set(
        re.findall(r"(?<![\w/])((?:deploy|scripts|lastream_stream|tests)/[\w/.-]+\.(?:py|yaml|sh|proto))", section())
    )
    assert len(named) >= 5, named
    assert [path for path in named if not (REPO / path).exists()] == []


def test_the_labelled_deployment_applies_and_says_what_the_executor_reads(kube_cluster, kube_namespace):
    (deployment, scaled_object) = yaml_blocks()
    meta = deployment["metadata"]
    assert meta["labels"] == {APP_LABEL: "shop", OPERATOR_LABEL: "parser"}
    assert meta["annotations"] == {PARTITIONS_ANNOTATION: "8"}
    # Completed as a user would (selector, template), it is a valid Deployment.
    deployment["spec"] |= {
        "selector": {"matchLabels": {"pod": "shop-parser"}},
        "template": {
            "metadata": {"labels": {"pod": "shop-parser"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        },
    }
    ns = kube_namespace(lastream=False)
    out = kube_cluster.kubectl("apply", "-n", ns.name, "-f", "-", "--dry-run=server", input=yaml.safe_dump(deployment))
    assert "deployment.apps/shop-parser created (server dry run)" in out
    trigger = scaled_object["spec"]["triggers"][0]
    assert trigger["type"] == "external-push" and {"app", "operator", "scalerAddress"} <= set(trigger["metadata"])
