"""The checkpoint file: a header line with the SHA-256 of the payload (the bytes
``torch.save`` wrote), then the payload. The hash is checked before anything is unpickled,
so a damaged or cut-short file is refused instead of loading wrong weights (a zip archive
with a flipped byte in a tensor still loads). It guards against damage, not against someone
who can write the file: they can write a matching hash too.

Each save keeps the checkpoint it replaces as ``<name>.prev<suffix>`` to fall back to.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"LASTREAM-CHECKPOINT 1 sha256="
_DIGEST_LEN = 64  # hex characters
_ZIP = b"PK\x03\x04"  # what torch.save writes: a checkpoint from before the header


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be used: missing, unreadable, damaged, or not fitting its model."""


def previous(path: Path) -> Path:
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: a name no other writer
    uses, be it another host on a shared volume, another process, or another agent thread."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{threading.get_native_id()}.partial")


def write(path: Path, payload: bytes) -> None:
    """Write aside, fsync, keep the current file as the previous one, then rename into place:
    a crash at any point leaves a whole checkpoint (the previous one at worst)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        with open(partial, "wb") as out:
            out.write(MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.replace(path, previous(path))
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the renames themselves survive a power cut
    finally:
        os.close(directory)


def read(path: Path) -> bytes:
    """The payload of a checkpoint whose hash matches; raises CorruptCheckpoint otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptCheckpoint(f"{path} is unreadable ({exc.strerror})") from exc
    if data.startswith(_ZIP):
        log.warning("%s carries no content hash (written by an older LaStream); the next save adds one", path)
        return data
    if not data.startswith(MAGIC):
        raise CorruptCheckpoint(f"{path} is not a LaStream checkpoint")
    start = len(MAGIC) + _DIGEST_LEN + 1
    digest, payload = data[len(MAGIC) : start - 1].decode(errors="replace"), data[start:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CorruptCheckpoint(f"{path} does not match its SHA-256 (damaged or cut short)")
    return payload
