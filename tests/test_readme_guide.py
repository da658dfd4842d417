"""The README's "Bring your own Kafka app" guide against the repository: what it names exists
and its code is valid Python, so the guide and the shipped example cannot drift apart silently.
(The example itself runs in tests/examples.)"""

import re
from pathlib import Path

from lastream_stream.kafka.control import ControlClient
from lastream_stream.supervisor.spec import AppSpec

REPO = Path(__file__).resolve().parents[1]


def guide() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Bring your own Kafka app")
    return text[start : text.index("\n## ", start + 1)]


def test_every_file_the_guide_names_exists():
    named = set(re.findall(r"(?<![\w/])((?:tests/)?examples/[\w/.-]+\.(?:py|yaml))", guide()))
    assert named, "the guide names no example file"
    assert [path for path in named if not (REPO / path).exists()] == []


def test_the_guides_python_is_valid_and_uses_the_real_api():
    blocks = re.findall(r"```python\n(.*?)```", guide(), re.S)
    assert blocks, "the guide shows no code"
    for block in blocks:
        compile(block, "README guide", "exec")
    assert "follow" in dir(ControlClient) and "ack" in dir(ControlClient)


def test_the_guides_spec_runs_every_operator_from_the_repository():
    spec = AppSpec.from_yaml(REPO / "examples" / "plain_kafka" / "shop.yaml")
    for worker in spec.operators.values():
        script = next(arg for arg in worker.command if arg.endswith(".py"))
        assert (REPO / script).exists(), f"{script} is not in the repository"
    assert not spec.operators["orders"].scalable  # the source is not the agent's to scale
