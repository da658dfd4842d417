"""The supervisor in a thread against the real broker, starting and stopping real processes."""

import base64
import json
import logging
import os
import signal

from confluent_kafka import TopicPartition
from control_log import APP, command, publish, wait_for

from lastream_stream.kafka.clients import TopicSpec
from lastream_stream.supervisor.workers import RunDir
from lastream_stream.wire.contracts import DeadLetter
from lastream_stream.wire.deadletter import parse

RUN_STATE = {"source": 1, "splitter": 1, "counter": 1}


def slots(live, operator):
    return sorted(slot for op, slot in live if op == operator)


def test_scale_up_down_clamp_and_unknown_operators(settings, clients, workers, supervise, acks, sup_config):
    supervisor = supervise(workers.spec(partitions=4))
    assert supervisor.status().running == RUN_STATE
    assert sorted(workers.live()) == [("counter", 0), ("source", 0), ("splitter", 0)]

    publish(clients, settings, command(1, splitter=3))
    ack = acks.next()
    assert (ack.app, ack.generation, ack.status) == (APP, 1, "applied")
    assert ack.applied == {"source": 1, "splitter": 3, "counter": 1}
    assert ack.clamped == {} and ack.error is None
    live = workers.live()
    assert slots(live, "splitter") == [0, 1, 2] and len(live) == 5
    assert supervisor.status().workers["splitter"] == {s: live[("splitter", s)] for s in (0, 1, 2)}
    for slot in (1, 2):  # the new workers were handed the new parallelism
        started = wait_for(lambda slot=slot: workers.started("splitter", slot, live[("splitter", slot)]), what="marker")
        assert started["state"] == {"operator": "splitter", "parallelism": 3, "desired": 3, "generation": 1}

    publish(clients, settings, command(2, splitter=1, counter=9))
    ack = acks.next()
    assert (ack.generation, ack.status) == (2, "applied")
    assert ack.applied == {"source": 1, "splitter": 1, "counter": 4}
    assert ack.clamped == {"counter": 9}
    assert "counter: 9 clamped to 4" in ack.error
    after = workers.live()
    assert after[("splitter", 0)] == live[("splitter", 0)]  # the lowest slot survives
    assert slots(after, "splitter") == [0] and slots(after, "counter") == [0, 1, 2, 3]
    assert all(workers.stopped_gracefully("splitter", s, live[("splitter", s)]) for s in (1, 2))
    state_file = sup_config.run_dir(APP) / "splitter.state.json"
    assert state_file.read_text() == '{"operator": "splitter", "parallelism": 1, "desired": 1, "generation": 2}'

    publish(clients, settings, command(3, source=3))
    ack = acks.next()
    assert (ack.generation, ack.status, ack.clamped) == (3, "applied", {"source": 3})
    assert ack.applied["source"] == 1 and "not scalable" in ack.error

    publish(clients, settings, command(4, splitter=2, nosuch=2))
    ack = acks.next()
    assert (ack.generation, ack.status) == (4, "partial")
    assert ack.applied == {"source": 1, "splitter": 2, "counter": 4}
    assert "unknown operator(s): nosuch" in ack.error

    publish(clients, settings, command(5, nosuch=2))
    ack = acks.next()
    assert (ack.generation, ack.status) == (5, "rejected")
    assert ack.applied == {"source": 1, "splitter": 2, "counter": 4}
    assert supervisor.status().generation == 4
    assert len(workers.live()) == 7


def test_stale_foreign_and_malformed_commands_change_nothing(settings, clients, workers, supervise, acks):
    supervisor = supervise(workers.spec())
    publish(clients, settings, command(5, splitter=2))
    assert acks.next().status == "applied"
    before = workers.live()

    garbage = b"\x00\xffnot a command"
    wrong_schema = b'{"schema_version": 1, "app": "demo", "generation": "six", "target": {}}'
    publish(
        clients,
        settings,
        command(9, app="other", splitter=4),  # another app's command, keyed by that app
        command(5, splitter=4),  # same generation: stale
        command(3, splitter=4),  # lower generation: stale
        garbage,
        wrong_schema,
        command(6, counter=2),
    )
    # A command naming another app under this app's key is not this app's either.
    publish(clients, settings, command(10, app="other", counter=4), key=APP)
    last = acks.until(6)
    assert [(a.generation, a.status) for a in acks.seen] == [(5, "applied"), (5, "stale"), (3, "stale"), (6, "applied")]
    assert acks.seen[1].applied == {"source": 1, "splitter": 2, "counter": 1}
    assert last.applied == {"source": 1, "splitter": 2, "counter": 2}
    after = workers.live()
    assert {k: v for k, v in after.items() if k[0] != "counter"} == {
        k: v for k, v in before.items() if k[0] != "counter"
    }
    assert supervisor.status().generation == 6

    letters = [parse(DeadLetter, m.value()) for m in consume_all(clients, settings.topics.deadletter, 2)]
    assert [base64.b64decode(letter.payload_b64) for letter in letters] == [garbage, wrong_schema]
    assert all(
        letter.source_topic == settings.topics.control and letter.consumer == f"supervisor-{APP}" for letter in letters
    )
    assert "not JSON" in letters[0].error and "generation" in letters[1].error

    # The supervisor keeps working after the dead letters, and the foreign command (generation 10) never applied.
    publish(clients, settings, command(7, splitter=1))
    assert (acks.next().generation, acks.seen[-1].status) == (7, "applied")
    assert all(a.app == APP and a.generation not in (9, 10) for a in acks.seen)


def consume_all(clients, topic, expected):
    """Exactly the messages on a one-partition topic, checking that there are ``expected``."""
    with clients.consumer("unused", **{"enable.auto.commit": False}) as consumer:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        assert high - low == expected, f"{high - low} message(s) on {topic}, expected {expected}"
        consumer.assign([TopicPartition(topic, 0, low)])
        messages = []
        while len(messages) < expected:
            msg = consumer.poll(10)
            assert msg is not None, "message missing"
            if msg.error() is None:
                messages.append(msg)
        return messages


def test_a_killed_worker_is_restarted_with_backoff(settings, clients, workers, supervise, acks, caplog):
    caplog.set_level(logging.INFO, logger="lastream_stream.supervisor")
    supervisor = supervise(workers.spec())
    publish(clients, settings, command(1, counter=2))
    assert acks.next().status == "applied"
    victim = supervisor.status().workers["counter"][1]

    os.kill(victim, signal.SIGKILL)
    status = wait_for(
        lambda: (
            (s := supervisor.status()).restarts["counter"] == 1
            and s.workers["counter"].get(1) not in (None, victim)
            and s
        ),
        what="counter-1 to be restarted",
    )
    replacement = status.workers["counter"][1]
    assert status.restarts == {"source": 0, "splitter": 0, "counter": 1}
    assert workers.live()[("counter", 1)] == replacement
    assert slots(workers.live(), "counter") == [0, 1]
    assert "restarted counter-1 after exit code -9 (restart #1)" in caplog.messages
    assert any(
        m.startswith(f"counter-1 (pid {victim}) exited with exit code -9") and m.endswith("restarting in 0.2 s")
        for m in caplog.messages
    )

    # A second crash soon after doubles the wait.
    wait_for(lambda: workers.started("counter", 1, replacement), what="the replacement to start")
    os.kill(replacement, signal.SIGKILL)
    wait_for(lambda: supervisor.status().restarts["counter"] == 2, what="the second restart")
    assert any(
        m.startswith(f"counter-1 (pid {replacement}) exited") and m.endswith("restarting in 0.4 s")
        for m in caplog.messages
    )
    assert "restarted counter-1 after exit code -9 (restart #2)" in caplog.messages
    assert len(workers.live()) == 4


def test_workers_dying_at_start_make_the_ack_partial(settings, clients, workers, supervise, acks, sup_config):
    spec = workers.spec(env={"splitter": {"TEST_WORKER_FAIL_FROM_SLOT": "1"}})
    supervisor = supervise(spec, sup_config.model_copy(update={"settle_s": 1.0}))
    first = supervisor.status().workers["splitter"][0]
    publish(clients, settings, command(1, splitter=3))
    ack = acks.next()
    assert (ack.generation, ack.status) == (1, "partial")
    assert ack.applied == {"source": 1, "splitter": 1, "counter": 1}
    assert "splitter-1 exited at start-up with exit code 3" in ack.error
    assert "splitter 1/3" in ack.error
    # They keep being retried, with backoff.
    wait_for(lambda: supervisor.status().restarts["splitter"] >= 2, what="restarts of the failing workers")
    assert workers.live()[("splitter", 0)] == first


def test_state_files_count_the_workers_running_not_the_desired_ones(
    settings, clients, workers, supervise, acks, sup_config
):
    """Workers report the parallelism in their state file: one that exits at once or cannot
    be executed at all must not be counted, while the desired state is still recorded."""
    spec = workers.spec(env={"splitter": {"TEST_WORKER_FAIL_FROM_SLOT": "1"}})
    spec.operators["counter"] = spec.operators["counter"].model_copy(update={"command": [str(workers.out / "missing")]})
    # No retry within the test: each file is read between start attempts.
    supervise(spec, sup_config.model_copy(update={"backoff_initial_s": 600.0, "backoff_max_s": 600.0}))
    publish(clients, settings, command(1, splitter=3))
    ack = acks.next()
    assert (ack.status, ack.applied) == ("partial", {"source": 1, "splitter": 1, "counter": 0})
    run_dir = RunDir(sup_config.run_dir(APP), {})
    states = {op: json.loads(run_dir.state_file(op).read_text()) for op in ("source", "splitter", "counter")}
    assert states == {
        "source": {"operator": "source", "parallelism": 1, "desired": 1, "generation": 1},
        "splitter": {"operator": "splitter", "parallelism": 1, "desired": 3, "generation": 1},
        "counter": {"operator": "counter", "parallelism": 0, "desired": 1, "generation": 1},
    }
    assert run_dir.read_states() == {"source": 1, "splitter": 3, "counter": 1}


def test_an_oversized_bad_command_and_a_refusing_dead_letter_topic_stop_nothing(
    settings, clients, workers, supervise, acks
):
    supervisor = supervise(workers.spec())
    publish(clients, settings, command(1, splitter=2))
    assert acks.next().status == "applied"
    before = workers.live()

    huge = json.dumps({"app": APP, "junk": "x" * 900_000}).encode()  # its whole dead letter would exceed 1 MB
    publish(clients, settings, huge, command(2, counter=2))
    assert (acks.next().generation, acks.seen[-1].status) == (2, "applied")
    (letter,) = [parse(DeadLetter, m.value()) for m in consume_all(clients, settings.topics.deadletter, 1)]
    assert letter.truncated and letter.payload_size == len(huge)

    # The dead-letter topic now refuses every dead letter: the command after the bad one is still applied.
    clients.ensure_topics([TopicSpec(settings.topics.deadletter, 1, config=(("max.message.bytes", "1000"),))])
    publish(clients, settings, b"{" + b"x" * 2000, command(3, splitter=1))
    assert (acks.next().generation, acks.seen[-1].status) == (3, "applied")
    assert supervisor.status().dead_letter_failures == {f"supervisor-{APP}": 1}
    assert {k: v for k, v in workers.live().items() if k[0] == "source"} == {
        k: v for k, v in before.items() if k[0] == "source"
    }
    # Not committed past the message on no dead-letter topic (offset 3): a restart tries it again.
    assert clients.committed_total(f"lastream-supervisor-{APP}", settings.topics.control) == 3
