from wordcount_app import source

from .conftest import expected_counts, final_counts, wait_group


def test_counts_are_exact_at_parallelism_one(settings, clients, wc, spawn_worker):
    for operator in ("splitter", "counter", "sink"):
        spawn_worker(operator)
    for operator in ("splitter", "counter", "sink"):
        wait_group(clients, wc.faust_id(operator), 1)

    sent = source.run(settings, wc)

    expected = expected_counts()
    assert sent == len(source.corpus())
    assert final_counts(clients, wc.counts_topic, sum(expected.values())) == expected


def test_malformed_records_are_dead_lettered_and_counting_goes_on(settings, clients, wc, spawn_worker, reader):
    from lastream_stream.wire.contracts import DeadLetter
    from lastream_stream.wire.deadletter import parse

    for operator in ("splitter", "counter"):
        spawn_worker(operator)
    for operator in ("splitter", "counter"):
        wait_group(clients, wc.faust_id(operator), 1)
    with clients.producer() as producer:
        producer.produce(wc.sentences_topic, key=b"x", value=b"\xffnot json")
        producer.produce(wc.sentences_topic, key=b"y", value=b'{"no_text": 1}')
        producer.produce(wc.words_topic, key=None, value=b'{"p": 0, "o": 1, "i": 0}')
    sent = source.run(settings, wc)

    letters = [parse(DeadLetter, m.value()) for m in reader(settings.topics.deadletter, 3, 60)]
    assert sorted(letter.source_topic for letter in letters) == sorted([wc.sentences_topic] * 2 + [wc.words_topic])
    assert any("KeyError" in letter.error for letter in letters)
    expected = expected_counts()
    assert sent == len(source.corpus())
    assert final_counts(clients, wc.counts_topic, sum(expected.values())) == expected
