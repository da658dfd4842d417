import base64
import json
import time

from factories import sample_report

from lastream_stream.wire.contracts import DeadLetter, MetricsReport
from lastream_stream.wire.deadletter import DeadLetterDecoder, parse


def test_bad_messages_go_to_the_dead_letter_topic_and_consumption_goes_on(
    settings, clients, make_topic, group_id, consumer_factory, reader
):
    topic = make_topic(partitions=1)
    good_first, good_last = sample_report(instance_id="first"), sample_report(instance_id="last")
    wrong_version = json.loads(sample_report().to_bytes()) | {"schema_version": 99}
    invalid = json.loads(sample_report().to_bytes()) | {"records_in": -3}
    payloads = [
        good_first.to_bytes(),
        b"\x00\xffnot json at all",
        json.dumps(wrong_version).encode(),
        json.dumps(invalid).encode(),
        b"[1, 2, 3]",
        good_last.to_bytes(),
    ]
    with clients.producer() as producer:
        for payload in payloads:
            producer.produce(topic, key=b"wordcount", value=payload)

    decoded: list[MetricsReport] = []
    consumer = consumer_factory(group_id, [topic])
    with clients.producer() as dlq_producer:
        decoder = DeadLetterDecoder(dlq_producer, settings.topics.deadletter, consumer_name="test")
        deadline = time.monotonic() + 30
        seen = 0
        while seen < len(payloads) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            seen += 1
            report = decoder.decode(MetricsReport, msg)
            if report is not None:
                decoded.append(report)

    assert [r.instance_id for r in decoded] == ["first", "last"]
    assert decoder.dead_letters == 4
    letters = [parse(DeadLetter, m.value()) for m in reader(settings.topics.deadletter, 4)]
    assert [letter.offset for letter in letters] == [1, 2, 3, 4]
    assert all(letter.source_topic == topic and letter.partition == 0 for letter in letters)
    assert [base64.b64decode(letter.payload_b64) for letter in letters] == payloads[1:5]
    reasons = [letter.error for letter in letters]
    assert reasons[0].startswith("not JSON")
    assert "unknown schema_version 99" in reasons[1]
    assert "records_in" in reasons[2]
    assert "expected a JSON object" in reasons[3]
    assert all(base64.b64decode(letter.key_b64) == b"wordcount" for letter in letters)
