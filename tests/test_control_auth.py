"""Signed commands and acks: forgeries are dead-lettered with their reason and change
nothing; signed messages work end to end; keys rotate without a gap."""

from __future__ import annotations

import logging
import time

import pytest
from factories import applied_ack
from test_agent_service import honest_reports, report_until_a_command, running_agent, short_windows
from test_control_client import Follower, publish

from lastream_stream.agent.controller import Phase
from lastream_stream.kafka import control
from lastream_stream.settings import ControlAuthSettings
from lastream_stream.wire.contracts import CommandAck, DeadLetter, ScalingCommand
from lastream_stream.wire.deadletter import parse
from lastream_stream.wire.signing import Signer, canonical

OLD, NEW = Signer({"old": b"old secret"}, "old"), Signer({"new": b"new secret"}, "new")
ROTATING = Signer({"old": b"old secret", "new": b"new secret"}, "new")


def keyed(settings, signer: Signer):
    """The test's settings with ``signer``'s keys, as LASTREAM_CONTROL_* would give them."""
    auth = ControlAuthSettings(
        keys={key_id: secret.decode() for key_id, secret in signer.keys.items()},
        signing_key_id=signer.signing_key_id,
    )
    return settings.model_copy(update={"control_auth": auth})


def shop(generation: int, **fields) -> ScalingCommand:
    return ScalingCommand(**({"app": "shop", "generation": generation, "target": {"api": 2}} | fields))


def test_a_signature_covers_every_field_and_names_its_key():
    signed = NEW.sign(shop(3))
    assert signed.key_id == "new" and NEW.problem(signed) is None and ROTATING.problem(signed) is None
    assert parse(ScalingCommand, signed.to_bytes()) == signed
    altered = signed.model_copy(update={"target": {"api": 9}})
    assert "does not match key 'new'" in NEW.problem(altered)
    moved = signed.model_copy(update={"key_id": "old"})  # same MAC under another key id
    assert "does not match key 'old'" in ROTATING.problem(moved)
    assert "unknown key id 'old' (accepted: new)" in NEW.problem(OLD.sign(shop(3)))
    assert "unsigned ScalingCommand" in NEW.problem(shop(3))
    assert b'"signature"' not in canonical(signed) and b'"key_id":"new"' in canonical(signed)


def test_unsigned_messages_stay_what_older_consumers_read():
    command = shop(3)
    assert b"key_id" not in command.to_bytes() and b"signature" not in command.to_bytes()
    assert Signer({}, None).sign(command) is command and Signer({}, None).problem(command) is None


def test_an_unauthenticated_control_plane_is_said_once(caplog):
    control._unauthenticated.cache_clear()
    with caplog.at_level(logging.WARNING, logger=control.__name__):
        for _ in range(3):
            assert not control.control_signer(ControlAuthSettings()).enabled
    assert [r.getMessage()[:41] for r in caplog.records] == ["the control plane is unauthenticated: any"]


def test_a_signing_key_must_be_one_of_the_keys():
    with pytest.raises(ValueError, match="signing key 'k2' is not one of the keys"):
        control.control_signer(ControlAuthSettings(keys={"k1": "s"}, signing_key_id="k2"))


def test_a_control_client_follows_only_commands_signed_with_an_accepted_key(settings, clients, reader):
    """Mid-rotation: the old and the new key are accepted, acks are signed with the new."""
    settings = keyed(settings, ROTATING)
    forged = [
        shop(1, target={"api": 7}),  # unsigned
        Signer({"k9": b"x"}, "k9").sign(shop(2, target={"api": 7})),
        Signer({"new": b"a guess"}, "new").sign(shop(3, target={"api": 7})),
        NEW.sign(shop(4)).model_copy(update={"target": {"api": 7}}),  # altered after signing
        NEW.sign(shop(5, app="other")),  # keyed by shop, for another app
        NEW.sign(shop(6, issued_at=time.time() + 3600)),
    ]
    publish(clients, settings, *(("shop", c.to_bytes()) for c in forged), ("shop", OLD.sign(shop(7)).to_bytes()))
    follower = Follower(settings)
    try:
        assert [c.generation for c in follower.wait(1)] == [7]  # signed with the old key: still accepted
        publish(clients, settings, ("shop", NEW.sign(shop(8, target={"api": 3})).to_bytes()))
        assert [c.generation for c in follower.wait(2)] == [7, 8]
    finally:
        follower.close()
    acks = [parse(CommandAck, m.value()) for m in reader(settings.topics.acks, 2)]
    assert [(a.generation, a.key_id) for a in acks] == [(7, "new"), (8, "new")]
    assert all(ROTATING.problem(a) is None for a in acks)
    letters = [parse(DeadLetter, m.value()) for m in reader(settings.topics.deadletter, len(forged))]
    reasons = [letter.error for letter in letters]
    assert reasons[0].startswith("unsigned ScalingCommand")
    assert "unknown key id 'k9'" in reasons[1]
    assert "does not match key 'new'" in reasons[2] and "does not match key 'new'" in reasons[3]
    assert reasons[4].startswith("keyed 'shop' but for app 'other'")
    assert "in the future" in reasons[5]


def test_the_agent_signs_its_commands_and_learns_only_from_signed_acks(settings, clients, reader, tmp_path):
    settings = keyed(settings, NEW)
    with running_agent(settings, short_windows(tmp_path)) as (service, published, _):
        report_until_a_command(clients, settings, published, honest_reports)
        command = next((m for m in published if isinstance(m, ScalingCommand)), None)
        assert command is not None, "the agent made no decision"
        controller = service.controllers["flooded"]
        ack = applied_ack(command, {"source": 1, "work": 4})
        forged = [ack, OLD.sign(ack), Signer({"new": b"a guess"}, "new").sign(ack)]
        with clients.producer() as producer:
            for message in forged:
                producer.produce(settings.topics.acks, key=b"flooded", value=message.to_bytes())
            producer.flush(10)
        letters = [parse(DeadLetter, m.value()) for m in reader(settings.topics.deadletter, len(forged))]
        assert controller.phase is Phase.AWAITING_ACK and command.decision_id not in controller.acked
        with clients.producer() as producer:
            producer.produce(settings.topics.acks, key=b"flooded", value=NEW.sign(ack).to_bytes())
            producer.flush(10)
        deadline = time.monotonic() + 15
        while controller.phase is Phase.AWAITING_ACK and time.monotonic() < deadline:
            time.sleep(0.05)
        assert controller.phase is Phase.OBSERVING and command.decision_id in controller.acked
    (on_topic,) = [parse(ScalingCommand, m.value()) for m in reader(settings.topics.control, 1)]
    assert on_topic.decision_id == command.decision_id and on_topic.key_id == "new"
    assert NEW.problem(on_topic) is None
    reasons = [letter.error for letter in letters]
    assert reasons[0].startswith("unsigned CommandAck") and "unknown key id 'old'" in reasons[1]
    assert "does not match key 'new'" in reasons[2]


def test_a_restarted_agent_awaits_its_signed_command_and_nothing_forged(settings, clients, reader, tmp_path):
    settings = keyed(settings, NEW)
    with running_agent(settings, short_windows(tmp_path)) as (_, published, _):
        report_until_a_command(clients, settings, published, honest_reports)
    command = next((m for m in published if isinstance(m, ScalingCommand)), None)
    assert command is not None, "the agent made no decision"
    forged = ScalingCommand(app="flooded", generation=command.generation + 100, target={"work": 1})
    with clients.producer() as producer:
        producer.produce(settings.topics.control, key=b"flooded", value=forged.to_bytes())
        producer.flush(10)
    with running_agent(settings, short_windows(tmp_path)) as (service, _, _):
        # The app's controller is made, from the replayed history, when its first report arrives.
        with clients.producer() as producer:
            for payload in honest_reports(time.time()):
                producer.produce(settings.topics.metrics, key=b"flooded", value=payload)
            producer.flush(10)
        deadline = time.monotonic() + 15
        while "flooded" not in service.controllers and time.monotonic() < deadline:
            time.sleep(0.05)
        controller = service.controllers["flooded"]
        assert controller.phase is Phase.AWAITING_ACK and controller.pending.decision_id == command.decision_id
        assert controller.generation == command.generation  # the forged one counts for nothing
    # Dead-lettered by the app's follower, not by the agent at each start (wire/deadletter.py).
    with control.ControlClient("flooded", settings, name="flooded-deploy") as client:
        client.replay()
    (letter,) = [parse(DeadLetter, m.value()) for m in reader(settings.topics.deadletter, 1)]
    assert letter.consumer == "flooded-deploy" and letter.error.startswith("unsigned ScalingCommand")


def test_lastream_up_continues_from_the_real_generation_not_a_forged_one(settings, clients):
    """`lastream up` starts from one past the app's current command (``latest_commands``):
    a forged command with a far higher generation must not move it, whether keyed by another
    name, dated far ahead, or, with keys configured, unsigned."""
    forged = {"app": "shop", "generation": 1_000_000_044, "target": {"api": 1}}
    signed = keyed(settings, NEW)
    publish(
        clients,
        settings,
        ("shop", NEW.sign(shop(7)).to_bytes()),
        ("junk", ScalingCommand(**forged).to_bytes()),
        ("shop", ScalingCommand(**forged | {"issued_at": time.time() + 3600}).to_bytes()),
        ("shop", ScalingCommand(**forged).to_bytes()),
    )
    assert control.latest_commands(clients, signed)["shop"].generation == 7
    # Without keys anyone may write the topic: only the key and the date are checked.
    assert control.latest_commands(clients, settings)["shop"].generation == 1_000_000_044
