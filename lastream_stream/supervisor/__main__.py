"""``python -m lastream_stream.supervisor --app NAME [--spec FILE]``: same as ``lastream supervisor``."""

import sys

from lastream_stream.cli import main

main(["supervisor", *sys.argv[1:]], prog_name="lastream")
