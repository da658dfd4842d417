"""Leader election on a ``coordination.k8s.io`` Lease, so that of two executors only one applies.

As client-go does it: a Lease held by another replica is taken over only once it has not
changed for its whole duration as seen on this replica's own clock (never by comparing the
holder's timestamps with ours, which may be skewed), and every write carries the
resourceVersion it read, so of two replicas racing for it exactly one wins.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0  # per API call: a hung call must not outlast the Lease it renews


class LeaderElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str, duration_s: float) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration_s = duration_s
        self._observed: tuple | None = None  # (holder, renew time) as last read
        self._observed_at = 0.0  # time.monotonic() when it last changed

    def try_acquire_or_renew(self) -> bool:
        """True while this replica holds the Lease (acquired or renewed now)."""
        now = datetime.now(UTC)
        # A MicroTime must carry its fraction: isoformat() leaves it out at microsecond 0.
        now = now.replace(microsecond=now.microsecond or 1)
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace, _request_timeout=TIMEOUT_S)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._create(now)
        spec = lease.spec
        observed = (spec.holder_identity, spec.renew_time)
        if observed != self._observed:
            self._observed, self._observed_at = observed, time.monotonic()
        holder = spec.holder_identity
        if holder and holder != self.identity and time.monotonic() - self._observed_at < self.duration_s:
            return False
        if holder != self.identity:
            log.info("taking over Lease %s/%s from %s", self.namespace, self.name, holder or "nobody")
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = math.ceil(self.duration_s)
        try:
            self.coordination.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=TIMEOUT_S)
        except ApiException as exc:
            if exc.status == 409:  # another replica wrote it since we read it
                return False
            raise
        return True

    def release(self) -> None:
        """Hand the Lease over at once on a clean stop, rather than after its duration."""
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace, _request_timeout=TIMEOUT_S)
            if lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            self.coordination.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=TIMEOUT_S)
        except ApiException as exc:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc.reason)

    def _create(self, now: datetime) -> bool:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=math.ceil(self.duration_s),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self.coordination.create_namespaced_lease(self.namespace, body, _request_timeout=TIMEOUT_S)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        log.info("acquired Lease %s/%s", self.namespace, self.name)
        return True
