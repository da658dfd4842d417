"""Who issued a control message: HMAC-SHA256 signatures of scaling commands and acks.

The signed text is the message's canonical JSON: every field but ``signature`` (defaults
included, ``key_id`` too, so a signature cannot be moved to another key), keys sorted, no
whitespace, UTF-8. It is computed from the decoded message, not from the bytes on the
wire, so any producer that encodes the same fields signs the same text.

``control_problem`` is the one rule for whether a control message may be used: keyed by
its app, not dated beyond the skew the receiver allows, and signed with an accepted key
when keys are configured. The agent and every ``ControlClient`` (the supervisor) apply it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import TypeVar

from lastream_stream.wire.contracts import ScalingCommand, Signed

S = TypeVar("S", bound=Signed)


def canonical(message: Signed) -> bytes:
    fields = message.model_dump(mode="json", exclude={"signature"})
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def mac(secret: bytes, message: Signed) -> str:
    return hmac.new(secret, canonical(message), hashlib.sha256).hexdigest()


class Signer:
    """Signs with one key and accepts any of ``keys`` (key id -> secret): during a rotation
    both the old and the new key are accepted. Without keys, nothing is signed or checked."""

    def __init__(self, keys: Mapping[str, bytes], signing_key_id: str | None) -> None:
        if keys and signing_key_id not in keys:
            raise ValueError(f"the signing key {signing_key_id!r} is not one of the keys {sorted(keys)}")
        self.keys = dict(keys)
        self.signing_key_id = signing_key_id

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def sign(self, message: S) -> S:
        if not self.enabled:
            return message
        keyed = message.model_copy(update={"key_id": self.signing_key_id, "signature": None})
        return keyed.model_copy(update={"signature": mac(self.keys[self.signing_key_id], keyed)})

    def problem(self, message: Signed) -> str | None:
        """Why ``message`` must not be trusted, or None."""
        if not self.enabled:
            return None
        kind = type(message).__name__
        if message.signature is None or message.key_id is None:
            return (
                f"unsigned {kind}: the control plane accepts only messages signed with a key of LASTREAM_CONTROL_KEYS"
            )
        secret = self.keys.get(message.key_id)
        if secret is None:
            return f"{kind} signed with unknown key id {message.key_id!r} (accepted: {', '.join(sorted(self.keys))})"
        if not hmac.compare_digest(mac(secret, message), message.signature):
            return (
                f"{kind} signature does not match key {message.key_id!r}: forged, altered or signed with another secret"
            )
        return None


def control_problem(key: bytes | None, message: Signed, signer: Signer, now: float, max_skew_s: float) -> str | None:
    """Why a command or ack read from Kafka must not be used, or None.

    Only a command's future is bounded: compaction keeps an app's latest command for good,
    so an old date is normal, and an old command replayed is refused by its generation.
    A date ahead would hold the agent's cooldown and outlive its timers."""
    if key != message.app.encode():
        shown = key.decode(errors="replace") if key is not None else None
        return f"keyed {shown!r} but for app {message.app!r}: a control message is keyed by its app"
    if isinstance(message, ScalingCommand) and message.issued_at > now + max_skew_s:
        ahead = message.issued_at - now
        return f"issued_at is {ahead:.3g} s in the future (more than the {max_skew_s:g} s of clock skew allowed)"
    return signer.problem(message)
