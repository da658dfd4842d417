"""Dependency floors that exclude versions with known holes the project would walk into."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirement(name: str) -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, dependencies) if r.name == name)


def test_torch_excludes_versions_whose_weights_only_load_can_be_bypassed():
    # CVE-2025-32434: torch.load(weights_only=True) runs code from a crafted file before 2.6.0;
    # the agent loads its checkpoint that way.
    torch = requirement("torch")
    assert not any(torch.specifier.contains(v) for v in ("2.2.0", "2.5.1"))
    assert torch.specifier.contains("2.6.0")
