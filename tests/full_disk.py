"""A real full filesystem for fault tests: a small tmpfs (the tests run as root), filled up."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "64k") mounted at ``mount`` for the ``with`` block; fails clearly if it cannot be."""
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    assert mounted.returncode == 0, f"cannot mount a tmpfs for a full-disk test: {mounted.stderr.decode().strip()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(mount: Path) -> None:
    """Write to ``mount`` until no space is left."""
    with contextlib.suppress(OSError), open(mount / "filler", "wb", buffering=0) as filler:
        while True:
            filler.write(b"\0" * 4096)
