import json

import pytest
from factories import sample_report
from pydantic import ValidationError

from lastream_stream.wire import schemas
from lastream_stream.wire.contracts import CommandAck, DecisionRecord, ScalingCommand
from lastream_stream.wire.deadletter import BadMessage, parse

MESSAGES = [
    sample_report(),
    ScalingCommand(app="wordcount", generation=3, target={"splitter": 3, "counter": 2}, reason="ds2"),
    CommandAck(app="wordcount", decision_id="d1", generation=3, status="partial", applied={"splitter": 3}, error="x"),
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


SCHEMA_FILES = {
    "MetricsReport": "metrics_report.schema.json",
    "ScalingCommand": "scaling_command.schema.json",
    "CommandAck": "command_ack.schema.json",
}


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_message_valid_against_its_published_schema_is_decoded(message):
    """The schema makes ``schema_version`` optional (default 1): a producer written from the
    schema alone may leave it out, and the decoder must take it as version 1."""
    import jsonschema

    schema = json.loads((schemas.SCHEMA_DIR / SCHEMA_FILES[type(message).__name__]).read_text())
    data = json.loads(message.to_bytes())
    del data["schema_version"]
    jsonschema.validate(data, schema)
    assert parse(type(message), json.dumps(data).encode()) == message


def test_a_missing_field_is_named_and_an_unknown_version_refused():
    with pytest.raises(BadMessage, match=r"invalid ScalingCommand: app: Field required; generation: Field required"):
        parse(ScalingCommand, b'{"hello": "world"}')
    with pytest.raises(BadMessage, match="unknown schema_version 2"):
        parse(DecisionRecord, b'{"schema_version": 2}')


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
