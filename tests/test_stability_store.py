"""Each app's stabilisation state in a file of its own, written off the decision path."""

from __future__ import annotations

import logging

from lastream_stream.agent.controller import StabilityState
from lastream_stream.agent.state import StabilityStore


def test_the_latest_state_of_each_app_is_written_and_read_back(tmp_path):
    store = StabilityStore(tmp_path / "stability")
    state = StabilityState()
    for at in range(100):  # a burst of decisions: the file ends with the latest
        state.needed({"work": at % 7}, at, keep_s=1000)
        store.save("a/../b", state)
    state.applied({"work": 2}, {"work": 3}, 99.0)
    store.save("a/../b", state)
    store.save("other", StabilityState({"x": (-1, 5.0)}))
    assert store.flush(10)
    # The name is hashed, never a path.
    assert sorted(p.parent for p in (tmp_path / "stability").iterdir()) == [tmp_path / "stability"] * 2
    reopened = StabilityStore(tmp_path / "stability")
    assert reopened.load("a/../b") == state
    assert reopened.load("other").last_change == {"x": (-1, 5.0)}
    assert reopened.load("never saved") == StabilityState()
    store.close()
    reopened.close()


def test_an_unusable_file_starts_afresh_and_says_so(tmp_path, caplog):
    store = StabilityStore(tmp_path)
    store.path("torn").write_text('{"app": "torn", "state": {"last_change": {"w": [1')
    store.path("moved").write_text('{"app": "someone else", "state": {}}')
    with caplog.at_level(logging.WARNING):
        assert store.load("torn") == StabilityState()
        assert store.load("moved") == StabilityState()
    assert len(caplog.records) == 2 and "someone else" in caplog.records[1].getMessage()
    store.close()


def test_a_failed_write_is_logged_and_the_next_save_writes(tmp_path, caplog):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the directory should be")
    store = StabilityStore(blocked)
    with caplog.at_level(logging.WARNING):
        store.save("a", StabilityState({"w": (1, 1.0)}))
        assert store.flush(10)
    assert "cannot save its stabilisation state" in caplog.text
    blocked.unlink()
    store.save("a", StabilityState({"w": (1, 2.0)}))
    store.close()
    assert StabilityStore(blocked).load("a").last_change == {"w": (1, 2.0)}
