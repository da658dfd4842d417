"""``lastream supervisor``'s options: a spec file names its app, so ``--spec`` alone is enough."""

import re
import signal
from pathlib import Path

import yaml
from click.testing import CliRunner
from control_log import APP, command, publish
from supervisor_env import start_supervisor, supervisor_env

from lastream_stream.supervisor.command import supervisor_command
from lastream_stream.supervisor.spec import AppSpec


def test_the_spec_file_alone_names_the_app(settings, clients, workers, acks, tmp_path, sup_config):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(workers.spec().model_dump()))
    log_path = tmp_path / "supervisor.log"
    with open(log_path, "ab") as log_file:
        supervisor = start_supervisor(["--spec", str(spec_file)], supervisor_env(settings, sup_config), log_file)
        try:
            publish(clients, settings, command(1, splitter=2))
            ack = acks.next(timeout_s=30)
            assert (ack.app, ack.generation, ack.status) == (APP, 1, "applied"), log_path.read_text()
            assert ack.applied == {"source": 1, "splitter": 2, "counter": 1}
            supervisor.send_signal(signal.SIGTERM)
            assert supervisor.wait(timeout=30) == 0, log_path.read_text()
            assert workers.live() == {}
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
                supervisor.wait()


def test_without_spec_or_app_the_command_says_what_to_give():
    result = CliRunner().invoke(supervisor_command, [])
    assert result.exit_code == 2
    assert "give --spec FILE or --app NAME (built-in specs: wordcount)" in result.output


def test_an_app_the_spec_does_not_describe_is_refused(workers, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(workers.spec().model_dump()))
    result = CliRunner().invoke(supervisor_command, ["--app", "other", "--spec", str(spec_file)])
    assert result.exit_code == 2
    assert f"the spec describes app '{APP}', not 'other'" in result.output


def test_a_malformed_spec_is_a_usage_error_naming_the_field(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    operators = {
        "splitter": {"command": ["true"], "partitions": 0},
        "counter": {"command": ["true"], "partitions": 1, "scaleable": False},
    }
    spec_file.write_text(yaml.safe_dump({"app": APP, "operators": operators}))
    result = CliRunner().invoke(supervisor_command, ["--spec", str(spec_file)])
    assert result.exit_code == 2
    assert "operators.splitter.partitions" in result.output
    assert "operators.counter.scaleable" in result.output  # a misspelt key is not silently ignored


def test_the_readme_spec_example_is_a_valid_spec():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = re.search(r"### The spec file\n\n```yaml\n(.*?)```", readme, re.DOTALL)
    assert example, "README.md has no spec example under '### The spec file'"
    spec = AppSpec.model_validate(yaml.safe_load(example.group(1)))
    assert spec.app == "orders" and not spec.operators["source"].scalable
