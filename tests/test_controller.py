"""The decision cycle, driven directly: reports, acks and the clock in; actions out."""

import json
import logging
import math

import pytest
from factories import sample_report

from lastream_stream.agent.controller import AppController, ControllerSettings, Phase, StabilityState, guard, rate_shift
from lastream_stream.policy.base import Decision
from lastream_stream.policy.ds2 import optimal_parallelism
from lastream_stream.policy.graph import build_graph
from lastream_stream.wire.contracts import CommandAck, DecisionRecord, ScalingCommand

T0 = 1_000_000.0


class FixedPolicy:
    """A real (if simple) policy: always proposes the same scheme, and learns nothing."""

    name = "fixed"

    def __init__(self, scheme):
        self.scheme = scheme

    def decide(self, graph, context=None):
        return Decision.single(self.name, graph, {**graph.parallelism, **self.scheme})


def feed(controller, start, seconds, parallelism, lag=0, latency=20.0, source_rate=100, sinks=0, recovering=()):
    """One report per instance per second over [start, start + seconds). A splitter instance
    takes 200 records/s when busy; the source emits ``source_rate``; ``sinks`` instances of
    a sink follow the splitter when given; the instances named in ``recovering`` say they are
    not ready."""
    operators = [("source", 1, [], source_rate), ("splitter", parallelism, ["source"], 100)]
    if sinks:
        operators.append(("sink", sinks, ["splitter"], 100))
    for t in range(int(seconds)):
        end = start + t + 1
        for op, p, ups, out in operators:
            for i in range(p):
                controller.on_report(
                    sample_report(
                        operator=op,
                        instance_id=f"{op}-{i}",
                        interval_end=end,
                        interval_s=1.0,
                        records_in=out,
                        records_out=out,
                        useful_time_s=0.5,
                        lag=lag,
                        latency_p50_ms=latency,
                        parallelism=p,
                        upstreams=ups,
                        input_partitions=8 if ups else None,
                        ready=f"{op}-{i}" not in recovering,
                    )
                )


def make(scheme, **settings):
    settings = {"window_s": 5, "warmup_s": 2, "outcome_s": 5} | settings
    return AppController("wordcount", FixedPolicy(scheme), ControllerSettings(**settings), since=T0)


def test_a_scheme_the_guard_rails_changed_is_recorded_as_guarded():
    c = make({"splitter": 12}, max_step=2)
    feed(c, T0, 5, parallelism=1)
    command, record = (a.message for a in c.tick(T0 + 5))
    assert command.target == {"splitter": 3}
    assert record.chosen_source == "guarded" and record.predicted_reward is None
    assert command.reason == "guarded scheme"


def test_a_command_carries_the_whole_desired_state_and_names_what_changes():
    """The compacted control topic keeps one command per app: it must hold every operator's
    target. Sources stay out unless changed (the app may run them outside its supervisor)."""
    c = make({"splitter": 3})
    feed(c, T0, 5, parallelism=1, sinks=2)
    command, record = (a.message for a in c.tick(T0 + 5))
    assert command.target == {"splitter": 3, "sink": 2} and command.changed == ["splitter"]
    assert record.chosen == {"source": 1, "splitter": 3, "sink": 2}


def test_no_decision_until_every_instance_covered_a_full_window():
    c = make({"splitter": 3})
    feed(c, T0, 5, parallelism=2)
    c.reports = [r for r in c.reports if r.instance_id != "splitter-1"]  # one instance still rebalancing
    assert c.tick(T0 + 5) == []
    feed(c, T0, 5, parallelism=2)
    assert c.tick(T0 + 4) == []  # window not full yet
    actions = c.tick(T0 + 5)
    assert [type(a.message) for a in actions] == [ScalingCommand, DecisionRecord]


def test_command_ack_outcome_cycle():
    """The command's outcome is measured over ``outcome_s`` of windows after its warm-up; the
    hold decided on the first of them starts an outcome of its own."""
    c = make({"splitter": 3}, outcome_s=10)
    feed(c, T0, 5, parallelism=1)
    command, record = (a.message for a in c.tick(T0 + 5))
    assert (command.generation, command.target) == (1, {"splitter": 3})
    assert record.kind == "command" and record.chosen == {"source": 1, "splitter": 3}
    assert record.chosen_source == "analytic"  # Decision.single's provenance
    assert c.phase is Phase.AWAITING_ACK
    feed(c, T0 + 5, 5, parallelism=1)
    assert c.tick(T0 + 10) == []  # awaiting the ack: never a second command

    c.on_ack(
        CommandAck(
            app="wordcount", decision_id=command.decision_id, generation=1, status="applied", applied={"splitter": 3}
        ),
        now=T0 + 10,
    )
    feed(c, T0 + 10, 2, parallelism=3)  # warm-up reports: ignored
    assert c.tick(T0 + 14) == []
    feed(c, T0 + 12, 5, parallelism=3, lag=500, latency=50.0)
    (hold,) = (a.message for a in c.tick(T0 + 17))  # one window of the command's two
    assert hold.kind == "hold" and hold.chosen == {"source": 1, "splitter": 3}
    feed(c, T0 + 17, 5, parallelism=3, lag=100, latency=30.0)
    outcome, hold = (a.message for a in c.tick(T0 + 22))
    assert outcome.kind == "outcome" and hold.kind == "hold"
    assert outcome.chosen_source is None
    # Lag of 4 instances, the latest report of each: the source's and three splitters', each
    # fed 100 records/s, so 5 s + 15 s of backlog on the path at lag 500. The splitters take
    # 200/s each, so one sustains the rate: 4 instances of 2 needed. The 7 s from the command
    # to the end of the warm-up count as the first window does; a policy that does not learn
    # has no horizon beyond that, so the outcome is the mean over 7 + 5 + 5 s.
    first, second = (
        math.exp(-(latency / 1000 + backlog_s / 10 + 0.5 * 4 / 2) / 3)
        for latency, backlog_s in ((50.0, 20.0), (30.0, 4.0))
    )
    assert outcome.measured_reward == pytest.approx((12 * first + 5 * second) / 17)
    assert list(c.rewards) == [pytest.approx((12 * first + 5 * second) / 17)]
    assert list(c.window_rewards)[-2:] == [pytest.approx(first), pytest.approx(second)]


def test_partial_ack_is_not_an_outcome():
    c = make({"splitter": 3})
    feed(c, T0, 5, parallelism=1)
    command, _ = (a.message for a in c.tick(T0 + 5))
    c.on_ack(
        CommandAck(
            app="wordcount",
            decision_id=command.decision_id,
            generation=1,
            status="partial",
            applied={"splitter": 2},
            error="one worker failed",
        ),
        now=T0 + 5,
    )
    feed(c, T0 + 7, 5, parallelism=2)
    kinds = [a.message.kind for a in c.tick(T0 + 12) if isinstance(a.message, DecisionRecord)]
    assert "outcome" not in kinds and not c.rewards


def test_restart_awaits_an_unacknowledged_command_instead_of_reissuing():
    c = make({"splitter": 3})
    earlier = ScalingCommand(app="wordcount", generation=7, target={"splitter": 3}, issued_at=T0)
    c.on_command(earlier, now=T0, signed=True)
    feed(c, T0, 6, parallelism=1)
    assert c.tick(T0 + 6) == [] and c.generation == 7
    c.on_ack(CommandAck(app="wordcount", decision_id=earlier.decision_id, generation=7, status="applied"), now=T0 + 6)
    feed(c, T0 + 8, 5, parallelism=1)
    command = c.tick(T0 + 13)[0].message
    assert command.generation == 8


def test_dry_run_only_recommends():
    c = make({"splitter": 4}, dry_run=True)
    feed(c, T0, 5, parallelism=1)
    (action,) = c.tick(T0 + 5)
    assert action.message.kind == "recommendation" and c.generation == 0 and c.phase is Phase.OBSERVING


def test_guard_rails_bound_the_step_the_range_and_the_partitions():
    graph = build_graph(
        [
            sample_report(operator="source", instance_id="s", upstreams=[], input_partitions=None, parallelism=1),
            sample_report(operator="splitter", instance_id="a", parallelism=2, input_partitions=8),
        ]
    )
    settings = ControllerSettings(max_step=3, min_parallelism={"splitter": 2}, max_parallelism={"source": 1})
    assert guard({"source": 1, "splitter": 2}, {"source": 5, "splitter": 12}, graph, settings) == {
        "source": 1,
        "splitter": 5,
    }
    assert guard({"source": 1, "splitter": 7}, {"source": 1, "splitter": 1}, graph, settings) == {
        "source": 1,
        "splitter": 4,
    }
    wide = ControllerSettings(max_step=100)
    assert guard({"source": 1, "splitter": 2}, {"source": 1, "splitter": 40}, graph, wide)["splitter"] == 8


def test_a_change_the_bounds_undo_is_a_hold_by_the_bounds():
    c = make({"splitter": 3}, max_parallelism={"splitter": 1})
    commands, record = decide(c, T0, parallelism=1, source_rate=500)  # DS2 needs 3; the bound says 1
    assert commands == [] and record.kind == "hold" and record.held_by == ["bounds"]
    assert record.notes == ["held splitter at 1 (proposed 3): outside its bounds or partitions"]
    assert record.state["splitter"].ds2_parallelism == 3


def test_replayed_ack_before_its_command_is_not_awaited_again():
    c = make({"splitter": 3})
    earlier = ScalingCommand(app="wordcount", generation=4, target={"splitter": 1}, issued_at=T0)
    c.on_ack(CommandAck(app="wordcount", decision_id=earlier.decision_id, generation=4, status="applied"), now=T0)
    c.on_command(earlier, now=T0, signed=True)
    assert (c.phase, c.pending, c.generation) == (Phase.OBSERVING, None, 4)


class ToldPolicy(FixedPolicy):
    """FixedPolicy that keeps the context of every decision it was asked for."""

    def __init__(self, scheme):
        super().__init__(scheme)
        self.told = []

    def decide(self, graph, context=None):
        self.told.append(context)
        return super().decide(graph, context)


def splitter_report(instance, end, parallelism, records_in=100):
    return sample_report(
        operator="splitter",
        instance_id=instance,
        interval_end=end,
        interval_s=1.0,
        records_in=records_in,
        records_out=records_in,
        useful_time_s=0.5,
        parallelism=parallelism,
        input_partitions=8,
    )


def test_the_restart_time_is_measured_and_told_to_the_policy():
    policy = ToldPolicy({"splitter": 3})
    c = AppController("wordcount", policy, ControllerSettings(window_s=5, warmup_s=2, outcome_s=5), since=T0)
    feed(c, T0, 5, parallelism=1)
    command, _ = (a.message for a in c.tick(T0 + 5))
    assert command.issued_at == T0 + 5 and policy.told[0].restart_s is None
    c.on_report(splitter_report("splitter-0", T0 + 5.5, parallelism=3))  # began before the command
    c.on_report(splitter_report("splitter-0", T0 + 7, parallelism=1))  # the old configuration
    for instance in ("splitter-0", "splitter-1"):  # new instances at work before the ack arrives
        c.on_report(splitter_report(instance, T0 + 8, parallelism=3))
    c.on_ack(
        CommandAck(
            app="wordcount", decision_id=command.decision_id, generation=1, status="applied", applied={"splitter": 3}
        ),
        now=T0 + 8.5,
    )
    c.on_report(splitter_report("splitter-2", T0 + 9, parallelism=3, records_in=0))  # up, not processing yet
    assert c.restart_s is None
    c.on_report(splitter_report("splitter-2", T0 + 10, parallelism=3))
    assert c.restart_s == 5.0  # the last new instance's first interval with input ended 5 s after the command

    feed(c, T0 + 10.5, 5, parallelism=3)
    outcome, hold = (a.message for a in c.tick(T0 + 15.5))
    assert (outcome.kind, hold.kind) == ("outcome", "hold")
    assert outcome.restart_s == hold.restart_s == 5.0
    told = policy.told[-1]
    assert told.restart_s == 5.0
    assert [(p.scheme, p.reward) for p in told.history] == [({"source": 1, "splitter": 3}, c.rewards[0])]


def scaled_out(c, ack_at, applied=None, **ack):
    """The first window at splitter 1 brings a command to 3 at T0 + 5, acknowledged at ``ack_at``."""
    feed(c, T0, 5, parallelism=1)
    command, _ = (a.message for a in c.tick(T0 + 5))
    c.on_ack(
        CommandAck(
            app="wordcount",
            decision_id=command.decision_id,
            generation=1,
            status="applied",
            applied=applied or {"splitter": 3},
            **ack,
        ),
        now=ack_at,
    )
    return command


def test_a_change_the_supervisor_clamped_away_measures_no_restart():
    c = make({"splitter": 3})
    scaled_out(c, ack_at=T0 + 6, applied={"splitter": 1}, clamped={"splitter": 3})
    c.on_report(splitter_report("splitter-0", T0 + 8, parallelism=1))
    assert c.pause is None and c.restart_s is None


def test_someone_elses_command_is_not_learnt_as_ours():
    """Ours is pending when an operator's own command (a higher generation) overtakes it:
    what then runs is theirs, so no outcome of our decision and no restart of ours."""
    c = make({"splitter": 3})
    feed(c, T0, 5, parallelism=1)
    ours, _ = (a.message for a in c.tick(T0 + 5))
    theirs = ScalingCommand(app="wordcount", generation=ours.generation + 1, target={"splitter": 3}, issued_at=T0 + 5.5)
    c.on_command(theirs, now=T0 + 6)
    c.on_ack(
        CommandAck(
            app="wordcount",
            decision_id=theirs.decision_id,
            generation=theirs.generation,
            status="applied",
            applied={"splitter": 3},
        ),
        now=T0 + 6,
    )
    assert c.outcomes.open == [] and c.pause is None
    feed(c, T0 + 8, 15, parallelism=3)
    kinds = [a.message.kind for t in (13, 18, 23) for a in c.tick(T0 + t) if isinstance(a.message, DecisionRecord)]
    # The first window after theirs closes nothing: the outcomes are of our holds, one window each.
    assert kinds == ["hold", "outcome", "hold", "outcome", "hold"]


def test_a_failed_decision_does_not_count_its_window_twice():
    class FailingOnce(FixedPolicy):
        failed = False

        def decide(self, graph, context=None):
            if not self.failed:
                self.failed = True
                raise RuntimeError("model not loaded")
            return super().decide(graph, context)

    c = AppController(
        "wordcount", FailingOnce({"splitter": 1}), ControllerSettings(window_s=5, warmup_s=2, outcome_s=5), since=T0
    )
    feed(c, T0, 5, parallelism=1)
    with pytest.raises(RuntimeError):
        c.tick(T0 + 5)
    assert c.tick(T0 + 5) == [] and len(c.window_rewards) == 1


def feed_idle_instance(c, start, seconds, idle="splitter-2"):
    """Splitter at 3: every instance reports each second, ``idle`` without input (still
    waiting for its partitions)."""
    for t in range(int(seconds)):
        end = start + t + 1
        c.on_report(
            sample_report(
                operator="source",
                instance_id="source-0",
                interval_end=end,
                interval_s=1.0,
                records_in=100,
                records_out=100,
                useful_time_s=0.5,
                parallelism=1,
                upstreams=[],
                input_partitions=None,
            )
        )
        for i in range(3):
            c.on_report(
                splitter_report(f"splitter-{i}", end, parallelism=3, records_in=0 if f"splitter-{i}" == idle else 100)
            )


def test_no_decision_while_a_new_instance_waits_for_its_partitions():
    """Reporting is not processing: the window that counts starts once every new instance
    processed input, or after restart_timeout_s without that."""
    c = make({"splitter": 3}, restart_timeout_s=30)
    scaled_out(c, ack_at=T0 + 6)
    feed_idle_instance(c, T0 + 6, 14)
    assert c.tick(T0 + 20) == []  # every instance covered the window, one of them idle
    feed_idle_instance(c, T0 + 20, 1, idle=None)
    assert c.restart_s == 16.0 and c.since == T0 + 21
    feed_idle_instance(c, T0 + 21, 5, idle=None)
    assert c.tick(T0 + 25) == []
    assert [a.message.kind for a in c.tick(T0 + 26)] == ["outcome", "hold"]


def test_an_instance_that_never_gets_input_delays_the_next_decision_only_so_long():
    c = make({"splitter": 3}, restart_timeout_s=30)
    scaled_out(c, ack_at=T0 + 6)
    feed_idle_instance(c, T0 + 6, 30)
    assert c.tick(T0 + 34) == []
    assert [a.message.kind for a in c.tick(T0 + 36)] == ["outcome", "hold"]
    assert c.pause is None and c.restart_s is None


def applied(c, at, command, splitter):
    c.on_ack(
        CommandAck(
            app="wordcount",
            decision_id=command.decision_id,
            generation=command.generation,
            status="applied",
            applied={"source": 1, "splitter": splitter},
        ),
        now=at,
    )


def decide(c, start, parallelism, **feeding):
    """Reports for 6 s from ``start`` (a restart ends with the first, a full window follows),
    then the tick that decides on them."""
    feed(c, start, 6, parallelism, **feeding)
    records = [a.message for a in c.tick(start + 6)]
    return [m for m in records if isinstance(m, ScalingCommand)], [m for m in records if isinstance(m, DecisionRecord)][
        -1
    ]


def test_a_reversal_within_stabilisation_is_held_unless_the_operator_falls_behind():
    c = make({"splitter": 3}, stabilisation_s=60)
    (out,), _ = decide(c, T0, parallelism=1, source_rate=500)  # 500/s needs 3 splitters
    applied(c, T0 + 7, out, 3)
    c.policy.scheme = {"splitter": 1}
    commands, record = decide(c, T0 + 10, parallelism=3)  # the rate fell back to 100/s
    assert commands == [] and record.kind == "hold" and record.chosen["splitter"] == 3
    assert any("held splitter at 3: reversal" in note for note in record.notes)
    assert record.held_by == ["stabilisation"]

    (back_in,), _ = decide(c, T0 + 70, parallelism=3)  # stabilisation over
    assert back_in.target == {"splitter": 1}
    applied(c, T0 + 77, back_in, 1)
    c.policy.scheme = {"splitter": 3}
    commands, record = decide(c, T0 + 80, parallelism=1)  # keeps up at 1: no reason to go back out
    assert commands == [] and "reversal" in record.notes[0]
    (out_again,), record = decide(c, T0 + 90, parallelism=1, source_rate=500)  # falls behind: reversal allowed
    assert out_again.target == {"splitter": 3} and record.notes == [] and record.held_by == []


def test_no_scale_in_while_a_backlog_drains():
    c = make({"splitter": 1})
    commands, record = decide(c, T0, parallelism=3, lag=400)  # 4 x 400 records at 100/s: 16 s of input
    assert commands == [] and record.chosen["splitter"] == 3
    assert "no scale-in while a backlog of 16.0 s of input drains" in record.notes[0]
    assert record.held_by == ["draining"]
    (command,), _ = decide(c, T0 + 6, parallelism=3, lag=10)  # 0.4 s: drained
    assert command.target == {"splitter": 1}


def test_the_last_changes_survive_a_restart_of_the_agent():
    c = make({"splitter": 3}, stabilisation_s=60)
    (out,), _ = decide(c, T0, parallelism=1, source_rate=500)
    applied(c, T0 + 7, out, 3)
    restarted = make({"splitter": 1}, stabilisation_s=60)
    restarted.stability = StabilityState.from_json(json.loads(json.dumps(c.stability.to_json())))
    assert restarted.stability == c.stability
    commands, record = decide(restarted, T0 + 10, parallelism=3)
    assert commands == [] and "reversal" in record.notes[0]


def test_a_replaced_decision_is_judged_on_the_windows_it_ran_for():
    c = make({"splitter": 3}, outcome_s=30)
    (out,), _ = decide(c, T0, parallelism=1, source_rate=500)  # command at T0 + 6
    applied(c, T0 + 7, out, 3)  # warm-up until T0 + 9: 3 s after the command go unmeasured
    _, hold = decide(c, T0 + 10, parallelism=3, lag=100)  # window 1: the hold's outcome starts after it
    c.policy.scheme = {"splitter": 5}
    (further,), _ = decide(c, T0 + 16, parallelism=3)  # window 2, then a change: both are replaced
    applied(c, T0 + 23, further, 5)
    outcomes = [a.message for a in c.tick(T0 + 24)]
    # Per window: latency 20 ms of 1 000; 4 instances of the 2 that sustain 100/s (A = 2);
    # window 1 has 100 records of lag at the source and at each of 3 splitters, 4 s of input.
    first, second = (-(0.02 + backlog_s / 10 + 0.5 * 2) / 3 for backlog_s in (4.0, 0.0))
    # Judged on the 13 s it ran: the 3 s unmeasured count as the first 5 s window, then the second.
    command = math.log((1.6 * math.exp(first) + 1.0 * math.exp(second)) / 2.6)
    assert [(o.kind, o.chosen["splitter"]) for o in outcomes] == [("outcome", 3), ("outcome", 3)]
    assert outcomes[0].measured_reward == pytest.approx(math.exp(command))
    assert outcomes[1].measured_reward == pytest.approx(math.exp(second))
    assert hold.kind == "hold"


def test_no_scale_in_below_the_peak_need_of_the_stabilisation_interval():
    c = make({"splitter": 3}, stabilisation_s=60)
    decide(c, T0, parallelism=3, source_rate=500)  # 500/s: it needs 3 (held: nothing to change)
    c.policy.scheme = {"splitter": 1}
    commands, record = decide(c, T0 + 6, parallelism=3)  # the rate dipped to 100/s
    assert commands == [] and "held splitter at 3 (proposed 1): it needed 3 instances 6 s ago" in record.notes
    assert record.held_by == ["peak_need"]
    (command,), _ = decide(c, T0 + 66, parallelism=3)  # the peak is older than the interval
    assert command.target == {"splitter": 1}


def test_scale_ins_wait_for_each_other():
    """Two operators over-provisioned, one of them just scaled out: the other does not scale
    in alone, so the two scale-ins cost one restart, not two."""
    c = AppController(
        "wordcount",
        FixedPolicy({"a": 1, "b": 1}),
        ControllerSettings(window_s=5, warmup_s=0, stabilisation_s=60),
        since=T0,
    )
    c.stability.last_change["a"] = (1, T0)
    for t in range(6):
        for op, ups in (("source", []), ("a", ["source"]), ("b", ["a"])):
            for i in range(1 if op == "source" else 3):
                c.on_report(
                    sample_report(
                        operator=op,
                        instance_id=f"{op}-{i}",
                        interval_end=T0 + t + 1,
                        interval_s=1.0,
                        records_in=10,
                        records_out=10,
                        useful_time_s=0.1,
                        lag=0,
                        parallelism=1 if op == "source" else 3,
                        upstreams=ups,
                        input_partitions=8 if ups else None,
                    )
                )
    (record,) = (a.message for a in c.tick(T0 + 6))
    assert record.kind == "hold" and record.chosen == {"source": 1, "a": 3, "b": 3}
    assert "held b at 3 (proposed 1): scales in with the others" in record.notes
    assert record.held_by == ["stabilisation", "scale_in_together"]


def test_a_window_whose_source_rate_moved_is_not_decided_on():
    c = make({"splitter": 3})
    feed(c, T0, 3, parallelism=1, source_rate=100)
    feed(c, T0 + 3, 3, parallelism=1, source_rate=300)  # a step mid-window
    assert c.tick(T0 + 6) == [] and c.decisions == 0
    (command,), _ = decide(c, T0 + 6, parallelism=1, source_rate=300)
    assert command.target == {"splitter": 3}


def test_counting_noise_is_not_a_rate_shift():
    # 2 then 4 records: a 50% move, well within what counting so few records gives.
    reports = [
        sample_report(
            operator="source",
            upstreams=[],
            input_partitions=None,
            interval_end=T0 + t,
            interval_s=1.0,
            records_in=n,
            records_out=n,
            useful_time_s=0.01,
        )
        for t, n in ((1, 1), (2, 1), (3, 2), (4, 2))
    ]
    assert rate_shift(reports, T0 + 2) is None
    scaled = [
        r.model_copy(update={"records_in": r.records_in * 1000, "records_out": r.records_out * 1000}) for r in reports
    ]
    assert rate_shift(scaled, T0 + 2) == pytest.approx(0.5)


class DS2Policy:
    name = "ds2"

    def decide(self, graph, context=None):
        return Decision.single(self.name, graph, optimal_parallelism(graph))


def plain_app(c, start, seconds, parsers, reported, source=True, per_parser=49, lag_growth=0, lag=0):
    """The new user's plain confluent-kafka app, one report per instance per second: a source
    emitting 120/s (unless it does not report), parsers that each take ``per_parser``/s and
    take 1 s per 49 records, whose reported parallelism is ``reported``, and a sink."""
    for t in range(int(seconds)):
        end = start + t + 1
        lag_now = lag + lag_growth * (end - T0)
        rows = [
            ("parser", f"parser-{i}", ["source"], per_parser, per_parser / 49, lag_now, None) for i in range(parsers)
        ]
        rows.append(("sink", "sink-0", ["parser"], per_parser * parsers, 0.1, 0, 40.0))
        if source:
            rows.append(("source", "source-0", [], 0, 0.1, None, None))
        for op, instance, ups, records_in, busy, op_lag, latency in rows:
            c.on_report(
                sample_report(
                    app="plain",
                    operator=op,
                    instance_id=instance,
                    interval_end=end,
                    interval_s=1.0,
                    records_in=records_in,
                    records_out=120 if op == "source" else records_in,
                    useful_time_s=busy,
                    lag=op_lag,
                    latency_p50_ms=latency,
                    parallelism=reported if op == "parser" else 1,
                    upstreams=ups,
                    input_partitions=8 if ups else None,
                )
            )


def plain_controller(**settings):
    settings = {"window_s": 5, "warmup_s": 2, "outcome_s": 5} | settings
    return AppController("plain", DS2Policy(), ControllerSettings(**settings), since=T0)


def test_a_saturated_first_operator_is_scaled_out_when_the_source_does_not_report(caplog):
    """The parser takes 49/s at 100% busy while 120/s arrive (its lag grows 71/s): the
    missing source is taken as emitting 120/s, so DS2 sizes the parser at 3, and says so."""
    c = plain_controller()
    plain_app(c, T0, 5, parsers=1, reported=1, source=False, lag_growth=71)
    with caplog.at_level(logging.WARNING, logger="lastream_stream.agent.controller"):
        command, record = (a.message for a in c.tick(T0 + 5))
    assert command.target["parser"] == 3 and "source" not in command.target
    assert record.chosen == {"source": 1, "parser": 3, "sink": 1}
    (warning,) = record.warnings
    assert warning.startswith("'source' (upstream of parser) never reports; taken as an external source of 120")
    assert [r.getMessage() for r in caplog.records] == [f"plain: {warning}"]


def test_a_source_that_reported_before_is_waited_for_not_taken_as_external(caplog):
    """A source that is late (restarting) is not a missing one: the window waits for it up to
    the restart timeout, and no warning is logged meanwhile."""
    c = plain_controller(restart_timeout_s=20)
    plain_app(c, T0, 5, parsers=1, reported=1)
    c.tick(T0 + 5)
    c.on_ack(CommandAck(app="plain", decision_id=c.pending.decision_id, generation=1, status="applied"), now=T0 + 5)
    since = c.since
    with caplog.at_level(logging.WARNING, logger="lastream_stream.agent.controller"):
        plain_app(c, since, 6, parsers=3, reported=3, source=False)
        assert c.tick(since + 6) == []
        # Warnings only: a test before this one may have set the root logger to INFO (the CLI's setup).
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        plain_app(c, since + 6, 15, parsers=3, reported=3, source=False)
        record = next(a.message for a in c.tick(since + 21) if isinstance(a.message, DecisionRecord))
    assert "'source' (upstream of parser) never reports" in record.warnings[0]


def test_workers_that_misstate_their_parallelism_are_scaled_measured_and_then_held(caplog):
    """Every parser says parallelism 1 (a reporter without ``parallelism=`` outside the
    supervisor): the scale-out is still measured once the new instances process, the next
    window is decided on the 3 that report (no command again), and it is said once."""
    c = plain_controller()
    plain_app(c, T0, 5, parsers=1, reported=1, per_parser=49, lag_growth=71)
    command, _ = (a.message for a in c.tick(T0 + 5))
    assert command.target["parser"] == 3 and "source" not in command.target
    c.on_ack(
        CommandAck(app="plain", decision_id=command.decision_id, generation=1, status="applied", applied={"parser": 3}),
        now=T0 + 6,
    )
    with caplog.at_level(logging.WARNING, logger="lastream_stream.agent.controller"):
        plain_app(c, T0 + 6, 7, parsers=3, reported=1, per_parser=40, lag=355)
        assert c.restart_s == 2.0
        records = [a.message for a in c.tick(T0 + 13)]
        plain_app(c, T0 + 13, 5, parsers=3, reported=1, per_parser=40, lag=355)
        records += [a.message for a in c.tick(T0 + 18)]
    assert not any(isinstance(m, ScalingCommand) for m in records)
    assert [m.kind for m in records] == ["outcome", "hold", "outcome", "hold"]
    assert records[1].chosen["parser"] == 3 and records[1].state["parser"].parallelism == 3
    assert any("3 instances report through the window but say parallelism 1" in w for w in records[1].warnings)
    assert len([r for r in caplog.records if "parser: 3 instances" in r.getMessage()]) == 1


def test_an_app_whose_expected_instances_never_all_report_is_decided_on_after_the_restart_timeout():
    c = plain_controller(restart_timeout_s=20)
    plain_app(c, T0, 15, parsers=1, reported=2)
    assert c.tick(T0 + 15) == []  # one of two parsers reports: it could be rebalancing
    plain_app(c, T0 + 15, 5, parsers=1, reported=2)
    command, record = (a.message for a in c.tick(T0 + 20))
    assert command.target["parser"] == 3 and record.state["parser"].parallelism == 2
    assert record.warnings == [
        "parser: reports say parallelism 2 but only 1 instance(s) report; decided on 2 as reported. "
        "Every instance must run a MetricsReporter, and its parallelism must be the running count"
    ]


def test_the_ack_timeout_runs_on_the_agents_clock_whatever_the_command_says():
    """A replayed signed command dated ahead of the agent (a clock in the future, within the
    skew the receiver allows) is awaited, but for ack_timeout_s of the agent's own time."""
    c = make({"splitter": 3}, ack_timeout_s=30, cooldown_s=20)
    ahead = ScalingCommand(app="wordcount", generation=7, target={"splitter": 3}, issued_at=T0 + 200)
    c.on_command(ahead, now=T0, signed=True)
    assert c.phase is Phase.AWAITING_ACK
    assert c.tick(T0 + 29) == [] and c.phase is Phase.AWAITING_ACK
    c.tick(T0 + 31)
    assert c.phase is Phase.OBSERVING and c.pending is None
    feed(c, T0 + 31, 5, parallelism=1)
    command = c.tick(T0 + 36)[0].message
    assert command.generation == 8  # and the cooldown is not held by a date ahead of now


def test_a_command_nobody_can_vouch_for_is_not_awaited():
    """Without a signature a command may come from anyone: its generation is continued (the
    supervisor accepts it), but the agent does not stop deciding to wait for its ack."""
    c = make({"splitter": 3})
    foreign = ScalingCommand(app="wordcount", generation=100, target={"splitter": 1}, issued_at=T0)
    c.on_command(foreign, now=T0)
    assert (c.phase, c.pending, c.generation) == (Phase.OBSERVING, None, 100)
    feed(c, T0 + 2, 5, parallelism=1)  # the warm-up of whatever it changed first
    command = c.tick(T0 + 7)[0].message
    assert command.generation == 101


def test_no_decision_and_no_outcome_on_a_window_with_an_instance_recovering():
    """A restarted worker replaying its changelog processes nothing and reports no lag it
    cannot read yet: its window looks calm. The agent holds, says why, and learns nothing
    from it; once the worker is ready, the cycle goes on."""
    c = make({})
    feed(c, T0, 5, parallelism=1)
    (hold,) = (a.message for a in c.tick(T0 + 5))
    assert hold.kind == "hold" and len(c.outcomes.open) == 1  # a hold's outcome is open
    c.policy = FixedPolicy({"splitter": 3})
    feed(c, T0 + 5, 5, parallelism=1, recovering={"splitter-0"})
    (record,) = (a.message for a in c.tick(T0 + 10))
    assert record.kind == "hold" and record.held_by == ["recovering"]
    assert record.chosen == {"source": 1, "splitter": 1}
    assert any("splitter-0" in note for note in record.notes)
    assert c.outcomes.open[0].log_rewards == [] and len(c.window_rewards) == 1  # not learnt from
    assert len(c.outcomes.open) == 1  # and no outcome of its own
    feed(c, T0 + 10, 5, parallelism=1)
    outcome, command, _ = (a.message for a in c.tick(T0 + 15))
    assert outcome.kind == "outcome" and outcome.chosen == hold.chosen  # on its ready window only
    assert outcome.measured_reward == pytest.approx(c.window_rewards[0])
    assert command.target == {"splitter": 3}


def test_an_ack_after_the_timeout_is_still_applied_with_its_warm_up():
    """The supervisor may answer after the ack timeout (both restarted): what it applied
    is a change all the same. The next decision waits for its warm-up, and stabilisation
    counts from it; no outcome is recorded for a command whose windows nobody watched."""
    c = make({"splitter": 3}, ack_timeout_s=30, warmup_s=4)
    feed(c, T0, 5, parallelism=1)
    command, _ = (a.message for a in c.tick(T0 + 5))
    c.tick(T0 + 36)
    assert c.phase is Phase.OBSERVING
    feed(c, T0 + 36, 4, parallelism=1)
    c.on_ack(
        CommandAck(
            app="wordcount", decision_id=command.decision_id, generation=1, status="applied", applied={"splitter": 3}
        ),
        now=T0 + 40,
    )
    assert c.running == {"splitter": 3}
    assert c.stability.last_change["splitter"] == (1, T0 + 40)
    feed(c, T0 + 40, 5, parallelism=3)  # the rebalance: within the warm-up
    assert c.tick(T0 + 45) == []  # a window that includes the rebalance is not decided on
    feed(c, T0 + 45, 4, parallelism=3)
    (hold,) = (a.message for a in c.tick(T0 + 49))
    assert hold.kind == "hold" and hold.chosen == {"source": 1, "splitter": 3}
    assert not c.rewards and all(o.decision is not None and o.decision.chosen == hold.chosen for o in c.outcomes.open)


def test_a_command_that_was_never_published_is_not_awaited():
    """The broker refused the command: no ack will come, so the controller observes again at
    once, and a later decision gets a new generation (the lost one may have reached nobody)."""
    c = make({"splitter": 3}, cooldown_s=0)
    feed(c, T0, 5, parallelism=1)
    command, _ = (a.message for a in c.tick(T0 + 5))
    c.on_publish_failed("another-decision", T0 + 5)
    assert c.phase is Phase.AWAITING_ACK  # not this decision's failure
    c.on_publish_failed(command.decision_id, T0 + 5)
    assert (c.phase, c.pending, c.pause) == (Phase.OBSERVING, None, None)
    feed(c, T0 + 5, 5, parallelism=1)
    again = c.tick(T0 + 10)[0].message
    assert isinstance(again, ScalingCommand) and again.generation == 2
