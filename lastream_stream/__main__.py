"""``python -m lastream_stream ...`` is the ``lastream`` command."""

from lastream_stream.tools.cli import main

main(prog_name="lastream")
