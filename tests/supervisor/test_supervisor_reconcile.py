"""The supervisor's pure verdicts: no processes, no Kafka."""

import pytest

from lastream_stream.supervisor import AppSpec, WorkerSpec
from lastream_stream.supervisor.reconcile import (
    DesiredState,
    ack_for,
    backoff_delay,
    fold,
    initial_state,
    judge,
    plan_slots,
)
from lastream_stream.wire.contracts import ScalingCommand

SPEC = AppSpec(
    app="demo",
    operators={
        "source": WorkerSpec(command=["x"], partitions=4, scalable=False),
        "splitter": WorkerSpec(command=["x"], partitions=4),
        "counter": WorkerSpec(command=["x"], partitions=8),
    },
)


def cmd(generation: int, **target: int) -> ScalingCommand:
    return ScalingCommand(app="demo", generation=generation, target=target, decision_id=f"d{generation}")


def test_initial_state_defaults_to_one_and_respects_partitions():
    assert initial_state(SPEC).parallelism == {"source": 1, "splitter": 1, "counter": 1}
    assert initial_state(SPEC, {"counter": 20, "splitter": 0}).parallelism == {"source": 1, "splitter": 1, "counter": 8}
    with pytest.raises(ValueError, match="nope"):
        initial_state(SPEC, {"nope": 2})


def test_a_command_sets_only_the_operators_it_names_and_clamps_to_partitions():
    d = judge(SPEC, initial_state(SPEC), cmd(1, splitter=9, counter=3))
    assert d.status == "applied"
    assert d.state == DesiredState({"source": 1, "splitter": 4, "counter": 3}, 1, "d1")
    assert d.changes == {"splitter": (1, 4), "counter": (1, 3)}
    assert d.clamped == {"splitter": 9}
    assert d.notes == ["splitter: 9 clamped to 4 (4 input partitions)"]


def test_only_what_a_command_changes_is_applied():
    """The rest of a version-2 target is what the agent saw running: a splitter seen at 2
    while its third worker waits out a crash backoff must not be cut to 2."""
    state = DesiredState({"source": 1, "splitter": 3, "counter": 1}, 1, "d1")
    command = ScalingCommand(
        app="demo", generation=2, target={"splitter": 2, "counter": 4}, changed=["counter"], decision_id="d2"
    )
    d = judge(SPEC, state, command)
    assert d.status == "applied" and d.state.parallelism == {"source": 1, "splitter": 3, "counter": 4}
    nothing = ScalingCommand(app="demo", generation=3, target={"counter": 4}, changed=[], decision_id="d3")
    assert judge(SPEC, d.state, nothing).status == "applied"  # a no-op, acknowledged


def test_non_scalable_operator_stays_where_it_is():
    d = judge(SPEC, initial_state(SPEC, {"source": 2}), cmd(1, source=3))
    assert d.state.parallelism["source"] == 2
    assert d.clamped == {"source": 3}
    assert d.changes == {}
    assert "not scalable" in d.notes[0]


def test_stale_unknown_and_mixed_commands():
    state = judge(SPEC, initial_state(SPEC), cmd(5, splitter=2)).state
    stale = judge(SPEC, state, cmd(5, splitter=3))
    assert stale.status == "stale" and stale.state is state
    rejected = judge(SPEC, state, cmd(6, nope=2))
    assert rejected.status == "rejected" and rejected.state is state
    assert rejected.notes == ["unknown operator(s): nope"]
    mixed = judge(SPEC, state, cmd(7, nope=2, counter=2))
    assert mixed.status == "partial"
    assert mixed.state.parallelism == {"source": 1, "splitter": 2, "counter": 2}
    assert mixed.state.generation == 7
    with pytest.raises(ValueError):
        judge(SPEC, state, ScalingCommand(app="other", generation=9, target={"splitter": 1}))


def test_fold_replays_in_order_and_skips_stale_commands():
    base = initial_state(SPEC, {"counter": 3})
    state, verdicts = fold(SPEC, base, [cmd(2, splitter=3), cmd(1, splitter=1), cmd(4, counter=2), cmd(3, splitter=2)])
    assert [d.status for d in verdicts] == ["applied", "stale", "applied", "stale"]
    assert state.parallelism == {"source": 1, "splitter": 3, "counter": 2}
    assert state.generation == 4


def test_plan_slots_keeps_the_lowest_slots_and_stops_the_highest_first():
    start, stop = plan_slots({"a": 2, "b": 1}, [("a", 0), ("a", 3), ("a", 2), ("b", 1), ("gone", 0)])
    assert start == [("a", 1), ("b", 0)]
    assert stop == [("a", 3), ("a", 2), ("b", 1), ("gone", 0)]
    assert plan_slots({"a": 2}, [("a", 0), ("a", 1)]) == ([], [])


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_delay(n, 0.5, 30) for n in (1, 2, 3, 4, 7, 8, 20)] == [0.5, 1, 2, 4, 30, 30, 30]


def test_ack_is_partial_when_the_workers_fall_short():
    d = judge(SPEC, initial_state(SPEC), cmd(1, splitter=9))
    ok = ack_for("demo", d, {"source": 1, "splitter": 4, "counter": 1})
    assert (ok.status, ok.applied, ok.clamped, ok.generation, ok.decision_id) == (
        "applied",
        {"source": 1, "splitter": 4, "counter": 1},
        {"splitter": 9},
        1,
        "d1",
    )
    assert ok.error == "splitter: 9 clamped to 4 (4 input partitions)"
    short = ack_for(
        "demo", d, {"source": 1, "splitter": 3, "counter": 1}, ["splitter-3 exited at start-up with exit code 3"]
    )
    assert short.status == "partial"
    assert "splitter-3 exited at start-up" in short.error and "splitter 3/4" in short.error
    stale = ack_for("demo", judge(SPEC, d.state, cmd(1, splitter=1)), {"splitter": 3})
    assert stale.status == "stale"


def test_an_operator_another_autoscaler_scales_does_not_make_the_ack_partial():
    d = judge(SPEC, initial_state(SPEC), cmd(1, splitter=2))
    running = {"source": 1, "splitter": 2, "counter": 5}  # counter moved by, say, an HPA
    assert ack_for("demo", d, running).status == "partial"
    ack = ack_for("demo", d, running, unmanaged=["counter"])
    assert (ack.status, ack.applied["counter"]) == ("applied", 5)
