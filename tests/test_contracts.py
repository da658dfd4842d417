import json

import pytest
from factories import sample_report
from pydantic import ValidationError

from lastream_stream.wire import schemas
from lastream_stream.wire.contracts import CommandAck, ScalingCommand
from lastream_stream.wire.deadletter import parse

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
