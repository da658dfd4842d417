"""``python -m lastream_stream.supervisor (--spec FILE | --app NAME)``: same as ``lastream supervisor``."""

import logging
import sys

from lastream_stream.kafka.clients import BrokerUnreachable
from lastream_stream.logs import setup_logging
from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor.command import supervisor_command
from lastream_stream.supervisor.workers import RunDirLocked

settings = LastreamSettings()
setup_logging(settings.log_level, settings.log_file, settings.log_max_bytes, settings.log_backups)
try:
    supervisor_command(prog_name="python -m lastream_stream.supervisor")
except (BrokerUnreachable, RunDirLocked) as exc:
    logging.getLogger("lastream_stream.supervisor").error("%s", exc)
    sys.exit(2)
