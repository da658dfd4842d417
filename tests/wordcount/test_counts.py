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
