"""How the supervisor starts WordCount workers: one process per operator instance.

The source is not in the spec: its rate is the app's input, not a capacity to scale, and
``lastream wordcount up`` runs it beside the supervisor.
"""

from __future__ import annotations

import sys

from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor.spec import AppSpec, WorkerSpec
from wordcount_app.settings import WordCountSettings


def worker_env(settings: LastreamSettings, wc: WordCountSettings) -> dict[str, str]:
    """Settings a worker needs, passed explicitly so workers follow a supervisor that was
    configured in code (tests) rather than by environment."""
    wc_env = {f"LASTREAM_WC_{name.upper()}": str(value) for name, value in wc.model_dump(exclude_none=True).items()}
    return settings.process_env() | wc_env


def app_spec(settings: LastreamSettings | None = None, wc: WordCountSettings | None = None) -> AppSpec:
    settings = settings or LastreamSettings()
    wc = wc or WordCountSettings()
    spec = WorkerSpec(
        command=[sys.executable, "-m", "wordcount_app.worker"], partitions=wc.partitions, env=worker_env(settings, wc)
    )
    return AppSpec(app=wc.app, operators={op: spec for op in ("splitter", "counter", "sink")})
