"""The package's layers, read from the import statements (docs/architecture.md draws them).

Each subpackage may import only the layers below it, never one above or beside it: the
policy knows nothing of Kafka, the wire knows nothing of the policy, and the library never
imports an app (WordCount plugs itself in through entry points).
"""

from __future__ import annotations

import ast
from pathlib import Path

import lastream_stream

PACKAGE = Path(lastream_stream.__file__).parent
# Layer -> the layers of the package it may import; top-level modules are layers of their own.
ALLOWED = {
    "settings": set(),
    "logs": set(),
    "exposition": set(),
    "wire": set(),
    "policy": {"wire"},
    "kafka": {"wire", "settings"},
    "sim": {"policy", "wire"},
    "agent": {"policy", "kafka", "wire", "settings", "exposition"},
    "supervisor": {"kafka", "wire", "settings", "logs", "exposition"},
    "kube": {"supervisor", "kafka", "wire", "settings", "logs", "exposition"},
    "keda": {"supervisor", "kafka", "wire", "settings"},
    "bench": {"agent", "policy", "sim", "wire"},
    "tools": {
        *("agent", "bench", "exposition", "kafka", "keda", "kube", "logs", "policy", "settings", "sim", "supervisor"),
        "wire",
    },
    "__main__": {"tools"},
    "__init__": set(),
}
# Third-party libraries a layer must not need: the pure core stays pure.
FORBIDDEN_LIBRARIES = {
    "policy": {"confluent_kafka", "faust", "prometheus_client"},
    "sim": {"confluent_kafka", "faust", "torch"},
    "wire": {"torch", "torch_geometric", "openai", "faust", "prometheus_client"},
}


def imports(path: Path, package: str = "lastream_stream") -> set[str]:
    """Every module ``path`` imports, absolute: ``from lastream_stream import x`` counts as
    ``lastream_stream.x``, and a relative import is resolved against ``package``, the
    dotted package ``path`` lives in."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            # ``from pkg import name``: name may be a submodule; a plain attribute stays within pkg anyway.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def package_of(path: Path) -> str:
    return ".".join(("lastream_stream", *path.relative_to(PACKAGE).parent.parts))


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def test_every_module_belongs_to_a_known_layer():
    assert {layer_of(p) for p in PACKAGE.rglob("*.py")} <= set(ALLOWED)


def test_imports_run_downward_only():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        for name in imports(path, package_of(path)):
            top = name.split(".")[0]
            if top == "wordcount_app":
                wrong.append(f"{path.relative_to(PACKAGE)} imports the example app ({name})")
            elif top == "lastream_stream" and name != "lastream_stream":
                other = name.split(".")[1]
                if other != layer and other not in ALLOWED[layer]:
                    wrong.append(f"{path.relative_to(PACKAGE)} ({layer}) imports {name} ({other})")
            elif top in FORBIDDEN_LIBRARIES.get(layer, ()):
                wrong.append(f"{path.relative_to(PACKAGE)} ({layer}) needs {top}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path):
    """The AST reading is what the test relies on: a planted upward import is found."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from lastream_stream.agent.service import AgentService\nimport wordcount_app.worker\n"
        "from lastream_stream import tools\nfrom ..agent import controller\n"
    )
    assert imports(planted, "lastream_stream.policy") == {
        "lastream_stream.agent.service.AgentService",
        "wordcount_app.worker",
        "lastream_stream.tools",
        "lastream_stream.agent.controller",
    }


def test_wordcount_plugs_in_through_its_entry_points():
    """The library names no app; WordCount's commands and supervisor spec arrive as plugins."""
    from importlib.metadata import entry_points

    from click.testing import CliRunner

    from lastream_stream.settings import LastreamSettings
    from lastream_stream.tools.cli import main

    assert {"up", "wordcount"} <= set(main.commands)
    (spec,) = [e for e in entry_points(group="lastream.app_specs") if e.name == "wordcount"]
    assert spec.load()(LastreamSettings()).app == "wordcount"
    result = CliRunner().invoke(main, ["supervisor", "--app", "no-such-app"])
    assert result.exit_code == 2 and "built-in specs: wordcount" in result.output
