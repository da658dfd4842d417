"""How every LaStream process logs: rich on a terminal, one plain line per record otherwise."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)


def setup_logging(level: str) -> None:
    """Rich on a terminal; plain one-line records when the output goes to a file or a pipe."""
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, handlers=[handler])
    logging.getLogger("lastream.librdkafka").setLevel(max(logging.WARNING, logging.getLogger().level))
