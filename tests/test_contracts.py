import json

import pytest
from factories import sample_report
from pydantic import ValidationError

from lastream_stream.wire import schemas
from lastream_stream.wire.contracts import WIRE_MODELS, CommandAck, DecisionRecord, ScalingCommand
from lastream_stream.wire.deadletter import BadMessage, dead_letter, parse
from lastream_stream.wire.signing import Signer

MESSAGES = [
    sample_report(),
    sample_report(ready=False),
    ScalingCommand(
        app="wordcount", generation=3, target={"splitter": 3, "counter": 2}, changed=["splitter"], reason="ds2"
    ),
    CommandAck(app="wordcount", decision_id="d1", generation=3, status="partial", applied={"splitter": 3}, error="x"),
    Signer({"k1": b"secret"}, "k1").sign(ScalingCommand(app="wordcount", generation=4, target={"splitter": 2})),
    Signer({"k1": b"secret"}, "k1").sign(CommandAck(app="wordcount", decision_id="d2", generation=4, status="stale")),
    DecisionRecord(app="wordcount", decision_id="d1", kind="hold", policy="lastream", chosen={"splitter": 3}),
    dead_letter("t", 0, 7, b"k", b"{", "not JSON", "agent"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_through_the_broker(message, clients, make_topic, reader):
    topic = make_topic()
    with clients.producer() as producer:
        producer.produce(topic, key=b"k", value=message.to_bytes())
    (received,) = reader(topic, 1)
    assert parse(type(message), received.value()) == message


def test_schema_files_match_the_models():
    for filename, text in schemas.render().items():
        path = schemas.SCHEMA_DIR / filename
        assert path.exists(), f"{filename} missing: run `lastream schemas`"
        assert json.loads(path.read_text()) == json.loads(text), f"{filename} drifted: run `lastream schemas`"


SCHEMA_FILES = {model.__name__: f"{name}.schema.json" for name, model in WIRE_MODELS.items()}


def test_every_published_schema_has_a_sample():
    assert {type(m).__name__ for m in MESSAGES} == set(SCHEMA_FILES)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_message_valid_against_its_published_schema_is_decoded(message):
    """The schema makes ``schema_version`` optional (default: the current version): a
    producer written from the schema alone may leave it out, and the decoder must agree."""
    import jsonschema

    schema = json.loads((schemas.SCHEMA_DIR / SCHEMA_FILES[type(message).__name__]).read_text())
    data = json.loads(message.to_bytes())
    del data["schema_version"]
    jsonschema.validate(data, schema)
    assert parse(type(message), json.dumps(data).encode()) == message


def test_a_missing_field_is_named_and_an_unknown_version_refused():
    with pytest.raises(BadMessage, match=r"invalid ScalingCommand: app: Field required; generation: Field required"):
        parse(ScalingCommand, b'{"hello": "world"}')
    with pytest.raises(BadMessage, match="unknown schema_version 2 of DecisionRecord"):
        parse(DecisionRecord, b'{"schema_version": 2}')
    with pytest.raises(BadMessage, match=r"unknown schema_version 3 of ScalingCommand \(this consumer reads 1, 2\)"):
        parse(ScalingCommand, b'{"schema_version": 3}')


def test_a_version_1_command_is_read_as_changing_every_operator_it_names():
    """Version 1 named only the operators that change; such commands stay on compacted topics."""
    old = b'{"schema_version": 1, "app": "wc", "generation": 4, "target": {"splitter": 3, "counter": 1}}'
    command = parse(ScalingCommand, old)
    assert command.schema_version == 1 and command.changed == ["counter", "splitter"]
    assert ScalingCommand(app="wc", generation=1, target={"a": 1}).schema_version == 2
    # Without `changed`, a command may change every operator it names, whatever its version.
    assert parse(ScalingCommand, b'{"app": "wc", "generation": 1, "target": {"a": 1}}').changed == ["a"]


def test_a_command_cannot_change_an_operator_it_gives_no_target():
    with pytest.raises(BadMessage, match="changed names operator.s. without a target: sink"):
        parse(ScalingCommand, b'{"app": "wc", "generation": 4, "target": {"splitter": 3}, "changed": ["sink"]}')


def test_exported_schema_validates_a_real_report():
    import jsonschema

    schema = json.loads((schemas.SCHEMA_DIR / "metrics_report.schema.json").read_text())
    jsonschema.validate(json.loads(sample_report().to_bytes()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**json.loads(sample_report().to_bytes()), "records_in": -1}, schema)


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"records_in": -5}, "records_in"),
        ({"records_in": 10**12}, "records_in"),
        ({"useful_time_s": 30.0}, "useful_time_s exceeds"),
        ({"parallelism": 0}, "parallelism"),
        ({"upstreams": ["splitter"]}, "own upstream"),
    ],
)
def test_absurd_reports_are_rejected(overrides, reason):
    with pytest.raises(ValidationError, match=reason):
        sample_report(**overrides)


def test_command_needs_positive_targets():
    with pytest.raises(ValidationError, match="out of range"):
        ScalingCommand(app="a", generation=1, target={"x": 0})


@pytest.mark.parametrize(
    "payload, reason",
    [
        ({"applied": {"splitter": -1}}, "applied"),
        ({"applied": {"bad name!": 1}}, "applied"),
        ({"clamped": {"splitter": 0}}, "clamped"),
        ({"clamped": {"splitter": 10**9}}, "clamped"),
        ({"applied": {f"op{i}": 1 for i in range(1001)}}, "applied"),
        ({"error": "x" * 2001}, "error"),
    ],
)
def test_absurd_acks_are_refused(payload, reason):
    ack = {"app": "wc", "decision_id": "d1", "generation": 3, "status": "applied"} | payload
    with pytest.raises(BadMessage, match=reason):
        parse(CommandAck, json.dumps(ack).encode())


def test_an_ack_of_a_stopped_operator_is_read():
    ack = CommandAck(app="wc", decision_id="d1", generation=3, status="partial", applied={"splitter": 0})
    assert parse(CommandAck, ack.to_bytes()) == ack


@pytest.mark.parametrize(
    "payload, reason",
    [
        ({"target": {"bad name!": 1}}, "target"),
        ({"target": {"x" * 201: 1}}, "target"),
        ({"target": {f"op{i}": 1 for i in range(1001)}}, "target"),
        ({"reason": "x" * 2001}, "reason"),
        ({"issued_at": -1.0}, "issued_at"),
        ({"issued_at": float("inf")}, "issued_at"),
    ],
)
def test_absurd_commands_are_refused(payload, reason):
    command = {"app": "wc", "generation": 3, "target": {"splitter": 2}} | payload
    with pytest.raises(BadMessage, match=reason):
        parse(ScalingCommand, json.dumps(command).encode())


def test_a_ready_report_is_what_consumers_from_before_read():
    assert "ready" not in json.loads(sample_report().to_bytes())
    assert json.loads(sample_report(ready=False).to_bytes())["ready"] is False
