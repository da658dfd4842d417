"""Each app's stabilisation state on disk, one file per app, written off the decision path.

What stabilisation counts from (``StabilityState``: each operator's last change and recent
needs) must survive an agent restart and move with an app to its next owner. Writing the
whole state of every app after each decision cost the agent most of its time at a few
thousand reports a second, so:

* each app has a file of its own (``<directory>/<sha256 of the app>.json``), written only
  by the agent that owns the app, and read by the next owner when the app moves;
* ``save`` takes a snapshot at once (the caller goes on changing the state) and a writer
  thread writes the latest snapshot of each app: a burst of decisions costs one write per app;
* every write goes to a file aside, is fsynced, then renamed over the old one, so a crash
  leaves the old state or the new one, never a torn file;
* ``flush`` waits until everything saved so far is on disk: at a handover and at the stop.

A write that fails (a full disk) is logged and tried again at the app's next save:
scaling goes on without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from lastream_stream.agent.controller import StabilityState
from lastream_stream.policy.checkpoint import partial_path

log = logging.getLogger(__name__)


class StabilityStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pending: dict[str, dict] = {}  # app: its latest snapshot not written yet
        self._writing = 0  # snapshots taken off _pending and not yet written
        self._changed = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="stability-writer", daemon=True)
        self._writer.start()

    def path(self, app: str) -> Path:
        # Hashed: an app's name is any string its reports carry, never a path.
        return self.directory / f"{hashlib.sha256(app.encode()).hexdigest()[:32]}.json"

    def load(self, app: str) -> StabilityState:
        """The app's saved state; a fresh one when none was saved or the file is unusable (logged)."""
        path = self.path(app)
        try:
            saved = json.loads(path.read_text())
            if saved.get("app") != app:
                raise ValueError(f"the file is {saved.get('app')!r}'s")
            return StabilityState.from_json(saved["state"])
        except FileNotFoundError:
            return StabilityState()
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("%s: unusable stabilisation state in %s (%s): starting afresh", app, path, exc)
            return StabilityState()

    def save(self, app: str, state: StabilityState) -> None:
        snapshot = {"app": app, "state": state.to_json()}
        with self._changed:
            if self._closed:
                log.warning("%s: stabilisation state saved after the store closed: not written", app)
                return
            self._pending[app] = snapshot
            self._changed.notify()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every state saved so far is written; False if that took over ``timeout_s``."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._writing, timeout_s)

    def close(self) -> None:
        """Write what is pending, then stop the writer."""
        self.flush()
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._writer.join(30)

    def _write_loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._closed)
                if self._closed and not self._pending:
                    return
                batch, self._pending = self._pending, {}
                self._writing = len(batch)
            for app, snapshot in batch.items():
                try:
                    self._write(self.path(app), snapshot)
                except Exception:  # a bug must not stop every later save, nor hang the flushes
                    log.exception("%s: cannot save its stabilisation state", app)
            with self._changed:
                self._writing = 0
                self._changed.notify_all()

    def _write(self, path: Path, snapshot: dict) -> None:
        partial = partial_path(path)  # two agents may briefly both hold an app while it moves
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "w") as f:
                f.write(json.dumps(snapshot))  # one write: json.dump writes each token on its own
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except OSError as exc:
            log.warning("%s: cannot save its stabilisation state to %s (%s)", snapshot["app"], path, exc)
            with contextlib.suppress(OSError):
                partial.unlink()
