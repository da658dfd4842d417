"""Prometheus metrics over HTTP: where a service serves them, and the server's life.

Each service (the agent, a supervisor) keeps its metrics on a registry of its own and
serves it at ``http://<host>:<port>/metrics`` while it runs. Its settings class mixes in
``MetricsEndpoint``, so the variables carry the service's prefix:
``LASTREAM_AGENT_METRICS_PORT``, ``LASTREAM_SUPERVISOR_METRICS_ENABLED``, ...
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

# Written by the agent and by every supervisor: one name, one meaning.
DEAD_LETTERS = "lastream_dead_letters"
DEAD_LETTERS_HELP = "Messages a consumer could not decode and wrote to the dead-letter topic"
DEAD_LETTER_FAILURES = "lastream_dead_letter_failures"
DEAD_LETTER_FAILURES_HELP = "Messages a consumer could not decode nor write to the dead-letter topic (offset held)"


class MetricsEndpoint(BaseModel):
    """Where a service serves its Prometheus metrics: mixed into its settings class, which
    gives the variables their prefix and may set its own default port."""

    metrics_enabled: bool = Field(default=True, description="Serve Prometheus metrics; `false` turns the server off.")
    metrics_host: str = Field(
        default="127.0.0.1", description="Address the Prometheus metrics are served on; `0.0.0.0` for every interface."
    )
    metrics_port: int = Field(default=9464, ge=1, le=65535, description="Port of the Prometheus metrics.")

    def setting(self, field: str) -> str:
        """The environment variable of ``field``, for messages that tell the user what to change."""
        return f"{self.model_config.get('env_prefix', '')}{field}".upper()

    @property
    def metrics_url(self) -> str | None:
        if not self.metrics_enabled:
            return None
        host = f"[{self.metrics_host}]" if ":" in self.metrics_host else self.metrics_host
        return f"http://{host}:{self.metrics_port}/metrics"


class MetricsPortInUse(RuntimeError):
    """The metrics port is taken: the message names the settings that fix it."""


@contextmanager
def serve_metrics(registry: CollectorRegistry, endpoint: MetricsEndpoint, service: str) -> Iterator[str | None]:
    """Serve ``registry`` for the duration of the block; yields the URL, or None when turned off."""
    if not endpoint.metrics_enabled:
        log.info("%s: Prometheus metrics off (%s=false)", service, endpoint.setting("metrics_enabled"))
        yield None
        return
    try:
        server, thread = start_http_server(endpoint.metrics_port, endpoint.metrics_host, registry=registry)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise MetricsPortInUse(
            f"{service}: cannot serve Prometheus metrics on {endpoint.metrics_host}:{endpoint.metrics_port}, "
            f"the port is in use (another {service}?): set {endpoint.setting('metrics_port')} to a free port, "
            f"or {endpoint.setting('metrics_enabled')}=false"
        ) from None
    log.info("%s: Prometheus metrics on %s", service, endpoint.metrics_url)
    try:
        yield endpoint.metrics_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
